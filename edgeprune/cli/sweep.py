"""`edgeprune sweep`: one LeGR search, many targets, each compiled and measured; a table and a Pareto plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune import search_defaults
from edgeprune.cli.common import DeviceOpt, JsonOpt, ModelArg, ShapeOpt, WidthOpt, console, print_json, set_threads
from edgeprune.cli.emulating import timing_label
from edgeprune.cli.pipeline import (
    GenerationsOpt,
    MethodOpt,
    PopulationOpt,
    SearchMinutesOpt,
    SlackOpt,
    TrainEpochsOpt,
    TrialsOpt,
    _Bars,
)
from edgeprune.cli.pruning import DataOpt, LimitOpt, SeedOpt, ThreadsOpt
from edgeprune.loop import SLACK

app = typer.Typer()


def _table(summary: dict[str, Any]) -> None:
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
    console.print(table)
    console.print(
        f"{summary['seconds']:.0f} s; report: {Path(summary['sweep_dir']) / 'report.html'}"
        + timing_label(summary["timings_are_real"]),
        highlight=False,
    )


@app.command("sweep")
def sweep_cmd(
    model: ModelArg,
    device: DeviceOpt,
    targets: Annotated[
        str,
        typer.Option(
            "--targets",
            help="Comma-separated targets: fractions of the measured unpruned latency (0.5x) or ms (2.5). "
            "The one LeGR search runs at the first.",
        ),
    ] = "0.8x,0.6x,0.5x,0.4x,0.3x",
    data: DataOpt = None,
    sweep_dir: Annotated[
        Path | None, typer.Option("--sweep-dir", help="Sweep folder (default runs/<model>-<device>-sweep).")
    ] = None,
    input_shape: ShapeOpt = None,
    width: WidthOpt = 1.0,
    method: MethodOpt = "legr",
    train_epochs: TrainEpochsOpt = 15,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="Fine-tune epochs per target.")] = 5,
    search_minutes: SearchMinutesOpt = 1.5,
    generations: GenerationsOpt = search_defaults.GENERATIONS,
    population: PopulationOpt = search_defaults.POPULATION,
    trials: TrialsOpt = None,
    max_rounds: Annotated[int, typer.Option("--max-rounds", help="Closed-loop rounds per target at most.")] = 3,
    slack: SlackOpt = SLACK,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    threads: ThreadsOpt = 1,
    as_json: JsonOpt = False,
) -> None:
    """One LeGR search, then each target pruned, fine-tuned, compiled and measured on the device.

    Each target runs the closed loop of `run` in its own sub-folder of the sweep folder, its first round with the
    latency table scaled by what the device measured for the unpruned model; the report shows a table and the
    Pareto plot of accuracy against measured latency, the unpruned model included. Re-running with the same
    --sweep-dir resumes (a target added later is swept then). Exit 0 when every target holds on the device, 1
    when one does not, 2 on an error.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edgeprune.models.io import parse_input_shape
    from edgeprune.pipeline import RunConfig, Stages
    from edgeprune.sweeping import SweepConfig, parse_targets, sweep

    wanted = parse_targets(targets)
    # every option named after a RunConfig field is that field
    settings = {k: v for k, v in locals().items() if k in RunConfig.__dataclass_fields__}
    shape = parse_input_shape(input_shape) if input_shape else None
    config = SweepConfig(RunConfig(**{**settings, "target": wanted[0], "input_shape": shape}), wanted)
    config.check()
    set_threads(threads)
    folder = sweep_dir or Path("runs") / f"{Path(model).stem}-{Path(device).stem}-sweep"
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as progress:
        bars = _Bars(progress)
        summary = sweep(config, folder, Stages(bars.announce, progress, bars.profile, bars.trials))
    if as_json:
        print_json(summary)
    else:
        _table(summary)
    if not all(p.get("meets_target") for p in summary["points"]):
        raise typer.Exit(1)
