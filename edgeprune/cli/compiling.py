"""`edgeprune compile` and `edgeprune verify`: TVM build with on-device autotuning, and the budget check."""

from __future__ import annotations

import typer

from edgeprune.cli.common import not_built

app = typer.Typer()

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command("compile", context_settings=_EXTRA)
def compile_cmd(ctx: typer.Context) -> None:
    """Export to ONNX, import into TVM Relax, tune with MetaSchedule on the device, write an artifact folder."""
    not_built("compile", "issue #5: compile and verify")


@app.command("verify", context_settings=_EXTRA)
def verify_cmd(ctx: typer.Context) -> None:
    """Measure a compiled artifact on the device against the budget, a baseline and PyTorch's outputs."""
    not_built("verify", "issue #5: compile and verify")
