"""The run folder's config: bad settings are refused before any work, and a run that failed on its input does not
lock its folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.pipeline import CONFIG, RunConfig, _open_folder
from tests.loopback_board import edgeprune_main


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "legrr"}, "unknown method 'legrr'"),
        ({"trials": 0}, "--trials"),
        ({"slack": 1.0}, r"--slack must be in \[0, 1\)"),
        ({"slack": -0.1}, "--slack"),
        ({"prune_steps": 0}, "--steps must be >= 1"),
        ({"method": "iap", "prune_steps": 2}, "--steps applies to the methods that prune a trained network"),
        ({"target": "1.5x"}, "below 1x"),
        ({"target": "fast"}, "positive number"),
        ({"target": "nan"}, "positive number"),
        ({"target": "nanx"}, "positive number"),
        ({"target": "inf"}, "positive number"),
        ({"target": "1e999"}, "positive number"),
        ({"target": "-1.0"}, "--target-ms -1.0: a target must be a positive number of milliseconds"),
        ({"target": "-0.5x"}, "--target -0.5x: a relative target must be a positive number below 1"),
    ],
)
def test_bad_settings_are_refused_up_front(change: dict, message: str) -> None:
    config = RunConfig(**{"model": "resnet20", "device": "local", "target": "0.5x", **change})
    with pytest.raises(EdgepruneError, match=message):
        config.check()


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`edgeprune run ...` in this process (no 4-6 s of imports), from `folder`; torch's threads, which `run` sets,
    are put back."""
    threads, cwd = torch.get_num_threads(), Path.cwd()
    os.chdir(folder)
    try:
        return edgeprune_main("run", *args)
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


def test_run_refuses_a_negative_target_as_a_budget_not_as_a_non_number(tmp_path: Path) -> None:
    result = run_in(tmp_path, "lenet5", "--device", "local", "--target-ms", "-1")
    assert result.returncode == 2 and "a target must be a positive number of milliseconds" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_folder_where_nothing_finished_takes_new_settings(tmp_path: Path) -> None:
    first = RunConfig(model="resnet20", device="local", target="0.5x")
    _open_folder(first, tmp_path)  # e.g. then failed: no --data for a zoo model
    second = RunConfig(model="resnet20", device="local", target="0.5x", data="digits")
    _open_folder(second, tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text())["data"] == "digits"


def test_folder_with_finished_work_refuses_other_settings(tmp_path: Path) -> None:
    _open_folder(RunConfig(model="resnet20", device="local", target="0.5x", data="digits"), tmp_path)
    (tmp_path / "baseline").mkdir()
    with pytest.raises(EdgepruneError, match=r"other settings \(target\)"):
        _open_folder(RunConfig(model="resnet20", device="local", target="0.4x", data="digits"), tmp_path)
    _open_folder(RunConfig(model="resnet20", device="local", target="0.5x", data="digits"), tmp_path)  # resumes


def test_threads_max_rounds_and_slack_may_change_when_resuming(tmp_path: Path) -> None:
    """--max-rounds more or another --slack lets a run go on (they add rounds); --threads changes no result."""
    _open_folder(RunConfig(model="resnet20", device="local", target="0.5x", data="digits"), tmp_path)
    (tmp_path / "round-1").mkdir()
    more = RunConfig(
        model="resnet20", device="local", target="0.5x", data="digits", max_rounds=5, threads=2, slack=0.99
    )
    _open_folder(more, tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text())["max_rounds"] == 5
    with pytest.raises(EdgepruneError) as error:
        _open_folder(RunConfig(model="resnet20", device="local", target="0.5x", data="digits", seed=1), tmp_path)
    assert error.value.message.endswith("other settings (seed)")  # names only what blocks it


def test_default_run_folder_is_named_after_a_device_file_not_its_path(tmp_path: Path) -> None:
    board = tmp_path / "boards" / "my-board.toml"
    board.parent.mkdir()
    board.write_text('name = "my-board"\n[target]\nkind = "llvm"\n[tracker]\nhost = "127.0.0.1"\nport = 9\nkey = "b"\n')
    # fails on its input (a zoo model needs --data), after opening the run folder
    result = run_in(tmp_path, "resnet20", "--device", str(board), "--target", "0.5x")
    assert result.returncode == 2, result.stderr
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["resnet20-my-board"]
