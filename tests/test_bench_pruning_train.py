"""The benchmark's baseline training for real (a subprocess training resnet20 for a few epochs, ~40 s): out of the
fast tier, which test_bench_pruning's logic tests stay in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_bench_pruning import TOOL, _tool


def test_train_only_caches_the_baselines_resumes_and_times_nothing(tmp_path: Path) -> None:
    """Stopped after its second epoch (SIGTERM, as a session's end stops it), the training resumes at the third
    from the checkpoint in the cache, and its log's seconds count on from the first session's."""
    cache, out = tmp_path / "cache", tmp_path / "pruning.json"
    command = [sys.executable, str(TOOL), "--quick", "--train-only", "--cache", str(cache), "--out", str(out)]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    while "epoch 2/" not in (line := first.stderr.readline()):
        assert line or first.poll() is None, "ended before its second epoch"
    first.terminate()
    assert first.wait(timeout=60) != 0
    bench = _tool()
    tag = bench.QUICK.baseline_tag("resnet20")
    log_path = cache / "baselines" / f"{tag}.log"
    assert (cache / "baselines" / f"{tag}.checkpoint.pt").is_file() and not (cache / "baselines" / f"{tag}.pt").exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming after its last epoch" in done.stderr and "baseline test accuracy" in done.stderr
    assert sorted(p.name for p in (cache / "baselines").iterdir()) == [f"{tag}.log", f"{tag}.pt"]
    log = log_path.read_text().splitlines()
    epochs = [int(line.split()[1].split("/")[0]) for line in log]
    assert epochs[:2] == [1, 2] and epochs[-1] == bench.QUICK.train_epochs  # 1, 2 (3 if stopped after it), 3, ...
    assert epochs[2:] == list(range(epochs[2], bench.QUICK.train_epochs + 1)) and epochs[2] in (3, 4)
    seconds = [float(line.split(" s ")[0].split()[-1]) for line in log]
    assert seconds == sorted(seconds)  # the second session counts on
    report = bench.baselines_path(out).read_text()
    assert "## resnet20: " in report and f"    {log[-1]}" in report and "adam, 15 epochs" in report
    assert not out.exists() and not (cache / "farm").exists()  # no rows, no farm: nothing was measured
