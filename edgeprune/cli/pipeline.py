"""`edgeprune run` and `edgeprune demo`: the whole pipeline over a resumable run folder."""

from __future__ import annotations

import typer

from edgeprune.cli.common import not_built

app = typer.Typer()

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("run", context_settings=_EXTRA)
def run_cmd(ctx: typer.Context) -> None:
    """Profile -> train -> prune -> compile -> verify -> deploy, to a millisecond target on a device."""
    not_built("run", "issue #7: the main job end to end")


@app.command("demo", context_settings=_EXTRA)
def demo_cmd(ctx: typer.Context) -> None:
    """The whole pipeline on the built-in local device with a small zoo model trained on digits."""
    not_built("demo", "issue #7: the main job end to end")
