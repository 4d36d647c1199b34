"""`edgeprune train` and `edgeprune prune`: baselines on real data and pruning to a budget."""

from __future__ import annotations

import typer

from edgeprune.cli.common import not_built

app = typer.Typer()

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("train", context_settings=_EXTRA)
def train_cmd(ctx: typer.Context) -> None:
    """Train a baseline model on an offline data set (digits, fashion-mnist, cifar10:DIR, imagefolder:DIR)."""
    not_built("train", "issue #4: pruning engine")


@app.command("prune", context_settings=_EXTRA)
def prune_cmd(ctx: typer.Context) -> None:
    """Prune a model to a latency (ms), FLOPs or params budget with LeGR or another method; fine-tune it."""
    not_built("prune", "issue #4: pruning engine")
