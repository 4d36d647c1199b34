"""Three `edgeprune profile` commands on one device at once, through the real local farm: each waits its turn
(saying for whom), all finish, and the device's table holds every entry each of them needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgeprune.devices.base import Device

# three widths of one small network: shared layer families, different channel counts (the default grid: at
# most 4 points per channel dimension, so a few dozen entries each)
WIDTHS = ("0.25", "0.5", "0.75")
FAST = ["--input-shape", "1x8x8", "--trials", "1", "--repeat", "2", "--number", "2"]


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
    # the union: profiling each width again measures nothing, every entry it needs is in the table
    for width in WIDTHS:
        again = subprocess.run([*profile(width), "--json"], capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        report = json.loads(again.stdout)
        assert report["entries_measured"] == 0 and report["entries_reused"] == report["entries_total"] > 0, width
    table = json.loads(Path(reports[0]["lut"]).read_text())
    assert len(table["entries"]) > max(r["entries_total"] for r in reports)  # more than any one of them needs
