"""`edgeprune deploy` and `edgeprune board`: artifacts to boards over SSH, RPC servers on boards."""

from __future__ import annotations

import typer

from edgeprune.cli.common import not_built

app = typer.Typer()
board_app = typer.Typer(help="Start, stop and inspect the TVM RPC server on a board over SSH.")

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("deploy", context_settings=_EXTRA)
def deploy_cmd(ctx: typer.Context) -> None:
    """Upload an artifact folder to the board over SSH (verified, atomic) and run a smoke inference there."""
    not_built("deploy", "issue #6: deploy over SSH")


@board_app.command("bootstrap", context_settings=_EXTRA)
def bootstrap_cmd(ctx: typer.Context) -> None:
    """Start the TVM RPC server on the board, registered with the device's tracker."""
    not_built("board bootstrap", "issue #6: deploy over SSH")


@board_app.command("stop", context_settings=_EXTRA)
def stop_cmd(ctx: typer.Context) -> None:
    """Stop the RPC server that `board bootstrap` started."""
    not_built("board stop", "issue #6: deploy over SSH")


@board_app.command("status", context_settings=_EXTRA)
def status_cmd(ctx: typer.Context) -> None:
    """Show whether the board's RPC server runs and is registered at the tracker."""
    not_built("board status", "issue #6: deploy over SSH")
