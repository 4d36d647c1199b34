"""The command line: every stage has a --help that explains it; errors exit non-zero without a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STAGES = [
    "devices",
    "farm",
    "profile",
    "estimate",
    "train",
    "prune",
    "compile",
    "verify",
    "deploy",
    "board",
    "run",
    "demo",
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_stage() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for stage in STAGES:
        assert stage in result.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage: str) -> None:
    result = cli(stage, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and len(result.stdout) > 200


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("edgeprune ")


def test_user_error_exits_2_with_hint_and_no_traceback() -> None:
    result = cli("devices", "check", "no-such-board")
    assert result.returncode == 2
    assert "unknown device 'no-such-board'" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr


def test_readme_cli_reference_is_current() -> None:
    tool = Path(__file__).resolve().parents[1] / "tools" / "cli_reference.py"
    result = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_help_paragraphs_are_not_broken_at_source_lines() -> None:
    """Rich re-wraps every line typer gives it: a docstring's line breaks would show as ragged half-lines."""
    import typer

    from edgeprune.cli import app

    def helps(group: Any) -> Iterator[str]:
        for command in group.commands.values():
            yield command.help or ""
            if hasattr(command, "commands"):
                yield from helps(command)

    texts = list(helps(typer.main.get_command(app)))
    assert len(texts) > 10 and any("\n\n" in text for text in texts)
    assert [text for text in texts if "\n" in text.replace("\n\n", "")] == []


def test_unexpected_error_exits_3_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A bug must not look like "budget missed" (exit 1) or dump a traceback on the user."""
    from edgeprune.cli import main
    from edgeprune.devices import farm

    def broken(_port: int) -> dict:
        raise ValueError("boom")

    monkeypatch.setattr(farm, "status", broken)  # stands in for any bug; the test is about the CLI's handling
    monkeypatch.delenv("EDGEPRUNE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["farm", "status", "--port", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 3
    assert "internal error: ValueError: boom" in err and "EDGEPRUNE_DEBUG" in err
    assert "Traceback" not in err


class _Recorder:
    """Stands in for an `ep.*` function: records how the CLI called it and returns a canned result."""

    def __init__(self, result: Any) -> None:
        self.result, self.calls = result, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.result


def _json_result(data: dict) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(to_json=lambda: data, passed=True, estimate=lambda **_: data, summary=data)


SUMMARY = {"notes": [], "within_budget": True, "meets_target": True, "points": [{"meets_target": True}]}
ROUTES = [  # argv, the ep function, keywords it must get, what it returns
    (
        ["profile", "resnet20", "-d", "fake", "--input-shape", "1x8x8", "--trials", "3", "--repeat", "2"],
        "profile",
        {"model": "resnet20", "input_shape": "1x8x8", "trials": 3, "tuning_minutes": None, "repeat": 2},
        _json_result({"lut": "lut.json"}),
    ),
    (
        ["estimate", "vgg11", "-d", "fake", "--width", "0.5"],
        "latency_model",
        {"model": "vgg11", "width": 0.5, "profile_missing": False},
        _json_result({"predicted_ms": 1.0}),
    ),
    (
        ["compile", "m.pt", "-d", "fake", "-o", "out", "--trials", "0", "--tuning-db", "db"],
        "compile",
        {"model": "m.pt", "out": Path("out"), "trials": 0, "tuning_db": Path("db")},
        _json_result({"artifacts": "out"}),
    ),
    (
        ["verify", "out", "-d", "fake", "--target-ms", "2.5"],
        "verify",
        {"target_ms": 2.5, "baseline": None, "repeat": None},
        _json_result({"passed": True}),
    ),
    (
        ["verify", "out", "-d", "fake", "--target", "0.5x", "--baseline", "base"],
        "verify",
        {"target_ms": None, "target": "0.5x", "baseline": Path("base")},
        _json_result({"passed": True}),
    ),
    (
        ["deploy", "out", "-d", "fake", "--no-smoke", "--name", "x"],
        "deploy",
        {"smoke": False, "name": "x", "ignore_device_mismatch": False, "trust_new_host": False},
        {"files": {}},
    ),
    (
        ["train", "resnet20", "-o", "m.pt", "--data", "digits", "--epochs", "2", "--classes", "3"],
        "train",
        {"data": "digits", "epochs": 2, "classes": 3, "input_shape": None},
        {"accuracy": 0.5, "seconds": 1.0},
    ),
    (
        ["prune", "m.pt", "-o", "p.pt", "--target-flops", "50%", "--data", "digits", "--population", "4"],
        "prune",
        {"target_flops": "50%", "data": "digits", "output": Path("p.pt"), "population": 4, "device": None},
        (None, _json_result(SUMMARY)),
    ),
    (
        ["run", "resnet20", "-d", "local", "--target", "0.5x", "--data", "digits", "--max-rounds", "2"],
        "run",
        {"model": "resnet20", "device": "local", "target": "0.5x", "data": "digits", "max_rounds": 2, "folder": None},
        SUMMARY,
    ),
    (
        ["demo", "--run-dir", "d"],
        "run",
        {"model": "resnet20", "device": "local", "target": "0.5x", "data": "digits", "folder": Path("d")},
        SUMMARY,
    ),
    (
        ["sweep", "resnet20", "-d", "local", "--targets", "0.5x,2.5", "--slack", "0"],
        "sweep",
        {"model": "resnet20", "targets": ("0.5x", "2.5"), "slack": 0.0, "folder": None},
        SUMMARY,
    ),
]


@pytest.mark.parametrize(("argv", "function", "expected", "result"), ROUTES, ids=[r[0][0] for r in ROUTES])
def test_each_stage_command_is_a_shell_over_the_api(
    argv: list[str],
    function: str,
    expected: dict,
    result: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """One code path: the command parses its flags into the `ep.*` function's keywords and prints its result."""
    import json
    from types import SimpleNamespace

    import edgeprune as ep
    from edgeprune.cli import main

    device = SimpleNamespace(
        name="fake", timings_are_real=True, tuning=SimpleNamespace(trials=2), timing=SimpleNamespace(min_repeat_ms=1),
        lut_dir=Path("profiles/fake"),  # where `profile` would put TVM's log: nothing is written by a stand-in
    )  # fmt: skip
    monkeypatch.setattr(ep, "device", lambda _name: device)
    monkeypatch.setattr("edgeprune.cli.pruning.set_threads", lambda _threads: None)  # no torch for a parse check
    monkeypatch.setattr("edgeprune.cli.pipeline.set_threads", lambda _threads: None)
    stand_in = _Recorder(result)
    monkeypatch.setattr(ep, function, stand_in)
    with pytest.raises(SystemExit) as done:
        main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert done.value.code in (0, None), err
    ((_, called),) = stand_in.calls
    assert {key: called.get(key) for key in expected} == expected
    assert json.loads(out)  # what the function returned, as JSON
