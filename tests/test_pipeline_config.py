"""The run folder's config: bad settings are refused before any work, and a run that failed on its input does not
lock its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.pipeline import CONFIG, RunConfig, _open_folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "legrr"}, "unknown method 'legrr'"),
        ({"trials": 0}, "--trials"),
        ({"target": "1.5x"}, "below 1x"),
        ({"target": "fast"}, "positive number"),
    ],
)
def test_bad_settings_are_refused_up_front(change: dict, message: str) -> None:
    config = RunConfig(**{"model": "resnet20", "device": "local", "target": "0.5x", **change})
    with pytest.raises(EdgepruneError, match=message):
        config.check()


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
