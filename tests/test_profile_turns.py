"""Three `edgeprune profile` commands on one device at once, through the real local farm: each waits its turn
(saying for whom), all finish, and the device's table holds every entry each of them needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import edgeprune as ep
from edgeprune.devices.base import Device
from tests.test_profiling_rpc import allow_second_tuning

# three widths of one small network: shared layer families, different channel counts; a 32-channel grid step
# (5, 10 and 13 entries, 24 in all; the default grid's 16 on this host needs 21, 21 and 25, 57 in all): the turns
# and the union are what is tested here, not how many points a grid has
WIDTHS = ("0.25", "0.5", "0.75")
FAST = ["--input-shape", "1x8x8", "--trials", "1", "--repeat", "2", "--number", "2", "--grid", "32"]


def profile(width: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune", "profile", "lenet5", "--device", "local", "--width", width, *FAST]


def test_three_concurrent_profiles_take_turns_and_keep_every_entry(local_farm: Device) -> None:
    runs = [subprocess.Popen([*profile(w), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for w in WIDTHS]  # fmt: skip
    outputs = [run.communicate(timeout=1200) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    assert sum(r["entries_measured"] for r in reports) > 0
    waited = [err for _, err in outputs if "waiting for pid" in err]
    assert waited, "no profile found the table busy"  # the first holds it for its tuning and measurements
    assert all("profile lenet5 --device local" in err and "since" in err for err in waited)  # for whom, since when
    # the union: profiling each width again measures nothing, every entry it needs is in the table (through the
    # API `profile` runs, in this process: three more interpreters importing torch and TVM only to read the table
    # cost more than the checks)
    allow_second_tuning()  # should an entry be missing, the failure is the assertion's, not MetaSchedule's logging
    for width in WIDTHS:
        report = ep.profile(
            "lenet5",
            device=local_farm,
            input_shape=(1, 8, 8),
            width=float(width),
            trials=1,
            repeat=2,
            number=2,
            grid=32,
        )
        assert report.entries_measured == 0 and report.entries_reused == report.entries_total > 0, width
        assert report.lut == Path(reports[0]["lut"])
    table = json.loads(Path(reports[0]["lut"]).read_text())
    assert len(table["entries"]) > max(r["entries_total"] for r in reports)  # more than any one of them needs
