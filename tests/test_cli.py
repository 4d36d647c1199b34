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
