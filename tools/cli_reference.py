"""Regenerate the CLI reference in README.md from the command tree itself, so the README cannot drift.

python tools/cli_reference.py          # rewrite the section between the markers
python tools/cli_reference.py --check  # exit 1 when the README is out of date (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from edgeprune.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def _commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = f"{prefix} {name}"
        if hasattr(command, "commands"):  # a group (typer vendors click; duck-type it)
            if command.invoke_without_command:
                found.append((path, command))
            found.extend(_commands(command, path))
        else:
            found.append((path, command))
    return found


def _option(param: Any) -> str:
    if param.param_type_name == "argument":
        help_text = " ".join((param.help or "").split())
        return f"`{param.name.upper()}`: {help_text}".rstrip(": ")
    names = "/".join(f"`{n}`" for n in (*param.opts, *param.secondary_opts))
    help_text = " ".join((getattr(param, "help", "") or "").split())
    default = param.default
    if param.required:
        shown = " (required)"
    elif param.secondary_opts:  # an on/off pair: say which is the default
        shown = f" (default {param.opts[0] if default else param.secondary_opts[0]})"
    elif default is None or default is False or default == () or getattr(param, "is_flag", False):
        shown = ""
    else:
        shown = f" (default {default})"
    return f"{names}: {help_text}{shown}".rstrip(": ")


def render() -> str:
    root = typer.main.get_command(app)
    lines = [START, ""]
    for path, command in _commands(root, "edgeprune"):
        summary = " ".join((command.help or "").split("\n\n")[0].split())
        lines.append(f"#### `{path}`")
        lines.append(summary)
        lines.append("")
        params = [p for p in command.params if p.name != "help"]
        for param in params:
            lines.append(f"- {_option(param)}")
        if params:
            lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    text = README.read_text()
    if START not in text or END not in text:
        print(f"{README} lacks the markers {START} ... {END}", file=sys.stderr)
        return 2
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    updated = before + render() + after
    if "--check" in sys.argv:
        if updated != text:
            print("README.md's CLI reference is out of date: run python tools/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
