"""The latency table's lock and merge, with real processes and the real file lock (no TVM, no farm): a second
writer waits its turn and says for whom, `--no-wait` fails at once, and nothing another writer saved is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.devices.profile import load_device
from edgeprune.profiling import lut

ROOT = Path(__file__).resolve().parents[1]
BOARD = "raspberry-pi-4"  # a shipped board: its target is in its profile (the local CPU's would import TVM)

# One writer: under the table's lock, read the table, add an entry, hold the lock a while (as a profile
# measuring would), save. Argument: the entry's channel count.
WRITER = """
import sys, time
from edgeprune.devices.profile import load_device
from edgeprune.profiling import lut
device = load_device(sys.argv[2])
with lut.exclusive(device):
    table = lut.LatencyTable.open(device)
    table.entries[f"conv|{sys.argv[1]}x{sys.argv[1]}"] = {"median_ms": 0.1 * int(sys.argv[1]), "spread_ms": 0.0}
    time.sleep(1.0)
    table.save()
"""


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPRUNE_PROFILES_DIR", str(tmp_path / "profiles"))
    monkeypatch.setenv("EDGEPRUNE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return tmp_path / "profiles"


def test_three_writers_wait_their_turn_and_the_table_holds_all_their_entries(profiles: Path) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(channels), BOARD], stderr=subprocess.PIPE, text=True, cwd=profiles.parent
        )
        for channels in (4, 8, 12)
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    table = lut.LatencyTable.load(load_device(BOARD))
    assert table is not None and set(table.entries) == {"conv|4x4", "conv|8x8", "conv|12x12"}
    waited = [e for e in errors if "waiting for pid" in e]
    assert waited, errors  # at least one found the table busy (each holds it a second)
    assert all(f"which is writing {lut.lut_path(load_device(BOARD))}" in e for e in waited)
    assert all("since" in e and "`" in e for e in waited)  # for whom: pid, command, since when


def test_no_wait_fails_at_once_naming_the_writer(profiles: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeprune.cli import main

    device = load_device(BOARD)
    with lut.exclusive(device):
        assert f"pid {os.getpid()}" in (lut.writer(device) or "")
        start = time.monotonic()
        with pytest.raises(SystemExit) as exit_info:
            main(["profile", "lenet5", "--device", BOARD, "--input-shape", "1x8x8", "--no-wait"])
        _, err = capsys.readouterr()
    assert exit_info.value.code == 2 and time.monotonic() - start < 30
    assert "another `edgeprune profile` is writing" in " ".join(err.split()) and f"pid {os.getpid()}" in err
    assert lut.writer(device) is None  # released with the block


def test_a_save_keeps_what_another_writer_saved(profiles: Path) -> None:
    """A table read before another process saved (or written without the lock) adds to the file, never drops."""
    device = load_device(BOARD)
    first, second = lut.LatencyTable.new(device), lut.LatencyTable.new(device)
    first.entries["conv|4x4"] = {"median_ms": 0.4, "spread_ms": 0.0}
    first.save()
    second.entries["conv|8x8"] = {"median_ms": 0.8, "spread_ms": 0.0}
    second.save()
    saved = json.loads(lut.lut_path(device).read_text())
    assert set(saved["entries"]) == {"conv|4x4", "conv|8x8"}
    assert set(lut.LatencyTable.load(device).entries) == {"conv|4x4", "conv|8x8"}  # type: ignore[union-attr]
