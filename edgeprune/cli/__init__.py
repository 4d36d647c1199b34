"""The command line: parse, call a stage, print a table (stderr) or JSON (stdout), exit with a code."""

from __future__ import annotations

import inspect
import os

import typer
from rich.markup import escape

from edgeprune import __version__
from edgeprune.cli import compiling, deploying, devices, emulating, pipeline, profiling, pruning, sweep
from edgeprune.cli.common import EXIT_INTERNAL, EXIT_INTERRUPTED, console, fail
from edgeprune.errors import EdgepruneError

app = typer.Typer(
    name="edgeprune",
    help=(
        "Profile a board once, prune a CNN to a millisecond target, compile it with TVM and deploy it.\n\n"
        "Pipeline: devices -> profile -> prune -> compile -> verify -> deploy; `run` does all of it, "
        "`demo` runs it on this machine's CPU (the built-in 'local' device)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(devices.devices_app, name="devices")
app.add_typer(devices.farm_app, name="farm")
for stage in (profiling, pruning, compiling, deploying, pipeline, sweep):
    app.registered_commands.extend(stage.app.registered_commands)
deploying.board_app.add_typer(emulating.emulate_app, name="emulate")
app.add_typer(deploying.board_app, name="board")


def _unwrap(text: str) -> str:
    """One line per paragraph: typer keeps the line breaks of a docstring's later paragraphs, and rich then wraps
    each source line again, so `--help` showed ragged half-lines."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in inspect.cleandoc(text).split("\n\n"))


for group in (app, devices.devices_app, devices.farm_app, deploying.board_app, emulating.emulate_app):
    for command in group.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = _unwrap(command.callback.__doc__)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeprune {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """edgeprune: latency-budgeted pruning and TVM compilation for edge boards."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point; user errors print a message and a hint and exit 2, never a traceback.

    Anything else is a bug: one line naming it, exit 3 (never 1, which means "ran, but the budget does not
    hold"), and the traceback only with EDGEPRUNE_DEBUG=1. Ctrl-C exits 130, as shells expect.
    """
    try:
        app(args=argv, prog_name="edgeprune")
    except SystemExit as done:
        if done.code == EXIT_INTERRUPTED:  # typer's answer to Ctrl-C, which it leaves unexplained
            console.print("[yellow]interrupted[/] (files are written whole or not at all; what finished is kept)")
        raise
    except EdgepruneError as error:
        fail(error)
    except Exception as error:
        if os.environ.get("EDGEPRUNE_DEBUG") == "1":
            raise
        problem = f"{type(error).__name__}: {escape(str(error))}"
        console.print(f"[bold red]internal error:[/] {problem}", highlight=False, soft_wrap=True)
        console.print("[yellow]hint:[/] set EDGEPRUNE_DEBUG=1 for the traceback, and report it", highlight=False)
        raise SystemExit(EXIT_INTERNAL) from None
