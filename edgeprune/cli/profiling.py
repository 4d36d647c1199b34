"""`edgeprune profile` and `edgeprune estimate`: the device's latency lookup table and the latency model."""

from __future__ import annotations

import typer

from edgeprune.cli.common import not_built

app = typer.Typer()

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("profile", context_settings=_EXTRA)
def profile_cmd(ctx: typer.Context) -> None:
    """Measure per-layer latency on a device through TVM RPC into its lookup table (LUT)."""
    not_built("profile", "issue #3: latency lookup tables")


@app.command("estimate", context_settings=_EXTRA)
def estimate_cmd(ctx: typer.Context) -> None:
    """Predict a model's latency on a device from its LUT, per layer; optionally measure it."""
    not_built("estimate", "issue #3: latency lookup tables")
