"""`edgeprune sweep`: one LeGR search, many targets, each compiled and measured; a table and a Pareto plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune.cli.common import JsonOpt, emit, options
from edgeprune.cli.emulating import timing_label
from edgeprune.cli.pipeline import closed_loop, loop_settings

app = typer.Typer()


def _lines(summary: dict[str, Any]) -> list[Any]:
    """The sweep's table (the unpruned model, then one row per target) and where its report is."""
    from rich.table import Table

    original = summary["original"]
    table = Table(title=f"{summary['model']} on {summary['device']}: one search, {len(summary['points'])} targets")
    for column in ("target", "measured", "meets", "speedup", "accuracy", "MACs", "params"):
        table.add_column(column, justify="right")

    def fmt(value: Any, pattern: str) -> str:
        return "-" if value is None else pattern.format(value)

    table.add_row(
        "unpruned",
        fmt(original["measured_ms"], "{:.3f} ms"),
        "",
        "1.00x",
        fmt(original["accuracy"], "{:.2%}"),
        fmt(original["flops"], "{:,}"),
        fmt(original["params"], "{:,}"),
    )
    for point in summary["points"]:
        if "unreachable" in point:
            table.add_row(point["target"], "-", "[red]unreachable[/]", "", "", "", "")
            continue
        table.add_row(
            f"{point['target']} ({point['target_ms']:.3f} ms)",
            f"{point['measured_ms']:.3f} ms",
            "[green]yes[/]" if point["meets_target"] else "[red]no[/]",
            f"{point['speedup']:.2f}x",
            fmt(point["accuracy"], "{:.2%}"),
            fmt(point["flops"], "{:,}"),
            fmt(point["params"], "{:,}"),
        )
    report = Path(summary["sweep_dir"]) / "report.html"
    return [table, f"{summary['seconds']:.0f} s; report: {report}" + timing_label(summary["timings_are_real"])]


@app.command("sweep")
@options("settings", loop_settings)
def sweep_cmd(
    settings: dict[str, Any],
    targets: Annotated[
        str,
        typer.Option(
            "--targets",
            help="Comma-separated targets: fractions of the measured unpruned latency (0.5x) or ms (2.5). "
            "The one LeGR search runs at the first.",
        ),
    ] = "0.8x,0.6x,0.5x,0.4x,0.3x",
    sweep_dir: Annotated[
        Path | None, typer.Option("--sweep-dir", help="Sweep folder (default runs/<model>-<device>-sweep).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """One LeGR search, then each target pruned, fine-tuned, compiled and measured on the device.

    Each target runs the closed loop of `run` in its own sub-folder of the sweep folder, its first round with the
    latency table scaled by what the device measured for the unpruned model; the report shows a table and the
    Pareto plot of accuracy against measured latency, the unpruned model included. Re-running with the same
    --sweep-dir resumes (a target added later is swept then). Exit 0 when every target holds on the device, 1
    when one does not, 2 on an error.
    """
    import edgeprune as ep
    from edgeprune.sweeping import parse_targets

    summary = closed_loop(ep.sweep, settings, targets=parse_targets(targets), folder=sweep_dir)
    emit(summary, as_json, lambda: _lines(summary))
    if not all(p.get("meets_target") for p in summary["points"]):
        raise typer.Exit(1)
