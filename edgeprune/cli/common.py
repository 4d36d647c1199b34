"""What every command shares: the stderr console, JSON output, error exit codes, common options."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from edgeprune.errors import EdgepruneError

# Human output (tables, progress) goes to stderr so that `--json` on stdout stays machine-readable.
console = Console(stderr=True)

EXIT_ERROR = 2  # bad input or a failure; exit 1 is kept for "ran fine, but the budget does not hold"
EXIT_INTERNAL = 3  # a bug in edgeprune (an exception it did not expect)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), the shell convention

DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        "-d",
        help="Device: 'local', a profile name (`edgeprune devices` lists them), or a .toml profile path.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON object on stdout instead of tables.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-new-host",
        help="Accept an SSH host key seen for the first time and record it in the profile's known_hosts.",
    ),
]
# What names a model, for every command that takes one.
ShapeOpt = Annotated[str | None, typer.Option("--input-shape", help="Model input CxHxW (zoo / .py models).")]
ClassesOpt = Annotated[int | None, typer.Option("--classes", help="Number of classes (zoo / .py models).")]
WidthOpt = Annotated[float, typer.Option("--width", help="Width multiplier of a zoo model.")]
MinKeepOpt = Annotated[float, typer.Option("--min-keep", help="Each layer keeps at least this share.")]
ModelArg = Annotated[str, typer.Argument(help="Zoo name, path/to/file.py:factory, or a saved model file.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def check_output(path: Path) -> None:
    """Refuse an output file that cannot be written before the work that produces it, not after."""
    if path.is_dir():
        raise EdgepruneError(f"-o {path} is a folder", hint=f"name a file, e.g. -o {path / 'model.pt'}")
    folder = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise EdgepruneError(f"cannot write {path}: {folder} is not a writable folder")


def fail(error: EdgepruneError) -> NoReturn:
    # soft_wrap: a message is one line however narrow the terminal, so scripts can grep it
    console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False, soft_wrap=True)
    if error.hint:
        console.print(f"[yellow]hint:[/] {escape(error.hint)}", highlight=False, soft_wrap=True)
    raise SystemExit(EXIT_ERROR)


def set_threads(threads: int) -> None:
    """Torch's CPU threads for this process: set by the CLI only (library code leaves process state alone)."""
    import torch

    if threads < 1:
        raise EdgepruneError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
