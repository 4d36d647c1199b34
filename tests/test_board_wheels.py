"""Which wheels `board setup` fetches here for a board: chosen from what the board's own Python reports."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from edgeprune.devices.remote import wheels
from edgeprune.errors import EdgepruneError

PI = {"machine": "aarch64", "python": "3.11.2", "glibc": "2.36", "executable": "/usr/bin/python3"}


def test_every_manylinux_tag_the_boards_glibc_runs_is_offered_newest_first() -> None:
    """pip takes `--platform` literally: a Pi OS board (glibc 2.36) must also accept TVM's manylinux_2_28 wheel."""
    board = wheels.BoardPlatform.from_probe(PI)
    tags = board.pip_platforms
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_28_aarch64" in tags
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"] and len(tags) == 36 - 17 + 2
    assert (board.python_tag, board.name) == ("311", "manylinux_2_36_aarch64-cp311")


def test_the_board_gets_this_machines_tvm_release() -> None:
    assert wheels.runtime_requirements() == [
        f"apache-tvm[rpc]=={metadata.version('apache-tvm')}",
        f"apache-tvm-ffi=={metadata.version('apache-tvm-ffi')}",
    ]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [({"glibc": None}, "reports no glibc"), ({"glibc": "2.12"}, "older than any TVM wheel")],
)
def test_a_board_without_manylinux_wheels_is_refused_by_cause(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(EdgepruneError, match=problem):
        wheels.BoardPlatform.from_probe({**PI, **changes}).pip_platforms  # noqa: B018 - the property raises


def test_a_finished_download_is_reused_and_an_interrupted_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache folder counts as complete only once its requirements file is written, after pip succeeded."""
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    board = wheels.BoardPlatform.from_probe(PI)
    folder = wheels.wheel_folder(board)
    folder.mkdir(parents=True)
    (folder / "pip-1-py3-none-any.whl").write_bytes(b"")
    calls: list[list[str]] = []
    monkeypatch.setattr(wheels.subprocess, "run", lambda command, **_: calls.append(command) or _Done())
    assert wheels.fetch(board, []) == [folder / "pip-1-py3-none-any.whl"]  # interrupted before: pip runs
    assert len(calls) == 1 and calls[0][calls[0].index("--python-version") + 1] == "311" and calls[0][-1] == "pip"
    wheels.fetch(board, [])
    assert len(calls) == 1  # complete: nothing to download
    wheels.fetch(board, ["numpy"])
    assert len(calls) == 2  # other requirements: fetched again


class _Done:
    returncode = 0
    stderr = ""
