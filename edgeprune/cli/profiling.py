"""`edgeprune profile` and `edgeprune estimate`: the device's latency lookup table and the latency model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgeprune.cli.common import (
    ClassesOpt,
    DeviceOpt,
    JsonOpt,
    MinKeepOpt,
    ModelArg,
    ShapeOpt,
    WidthOpt,
    console,
    print_json,
)
from edgeprune.cli.emulating import timing_label

app = typer.Typer()

TrialsOpt = Annotated[
    int | None,
    typer.Option(
        "--trials",
        help="MetaSchedule trials per task when tuning (tasks the device's tuning database already holds are "
        "reused, not tuned again); default: the device's [tuning] table (trials, or profile_trials for "
        "`profile`), 16 without one.",
    ),
]
MinutesOpt = Annotated[
    float | None,
    typer.Option(
        "--tuning-minutes",
        help="Stop tuning after this many minutes, keeping what was measured; default: the device's "
        "tuning.minutes (none).",
    ),
]


def _bundle(model: str, input_shape: str | None, classes: int | None, width: float) -> Any:
    from edgeprune.models.io import load_model, parse_input_shape

    return load_model(model, parse_input_shape(input_shape) if input_shape else None, classes, width)


class _PhaseProgress:
    """One rich progress bar per profiling phase (tuning trials, network, entries), with an ETA."""

    LABELS = {"tuning": "tuning (trials)", "network": "whole network", "entries": "entries"}

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(self.LABELS.get(phase, phase), total=max(total, 1))
        self.progress.update(self.tasks[phase], completed=done, total=max(total, 1))


@app.command("profile")
def profile_cmd(
    model: ModelArg,
    device: DeviceOpt,
    input_shape: ShapeOpt = None,
    classes: ClassesOpt = None,
    width: WidthOpt = 1.0,
    grid: Annotated[
        int | None,
        typer.Option(
            "--grid",
            help="Channel step of the table's grid (default: the device's vector width in fp32 lanes, "
            "coarser for wide layers so each channel dimension has at most 4 points).",
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option("--repeat", help="Timed repeats per entry (median, spread); default: the device's timing.repeat."),
    ] = None,
    number: Annotated[
        int | None,
        typer.Option(
            "--number",
            help="Runs per repeat (raised so a repeat lasts the device's timing.min_repeat_ms); default: the "
            "device's timing.number.",
        ),
    ] = None,
    trials: TrialsOpt = None,
    minutes: MinutesOpt = None,
    servers_parallel: Annotated[
        bool,
        typer.Option("--servers-parallel", help="Measure on every free RPC server under the device's key at once."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure per-layer latency on a device through TVM RPC into its lookup table (LUT).

    The table models the tuned kernels `compile` ships (one MetaSchedule database per device, shared).
    An interrupted run resumes; entries measured for other models are reused.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from edgeprune.devices.profile import load_device
    from edgeprune.profiling.profiler import profile_model

    profile = load_device(device)
    bundle = _bundle(model, input_shape, classes, width)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        report = profile_model(
            bundle,
            profile,
            grid=grid,
            settings=profile.timing.with_counts(number=number, repeat=repeat),
            parallel=servers_parallel,
            trials=trials,
            on_progress=_PhaseProgress(progress),
            tuning=profile.tuning.with_changes(minutes=minutes),
        )
    if as_json:
        print_json({**report.to_json(), "timings_are_real": profile.timings_are_real})
        return
    network = f", whole network {report.network_ms:.3f} ms" if report.network_ms is not None else ""
    console.print(
        f"[green]profiled[/] {bundle.name} on {profile.name}: {report.entries_measured} entries measured, "
        f"{report.entries_reused} reused of {report.entries_total}{network} in {report.seconds:.0f} s "
        f"({report.servers or 0} server(s))" + timing_label(profile.timings_are_real) + f"\n  {report.lut}"
    )


def _estimate_table(bundle: Any, estimate: Any, flops: int, params: int) -> Any:
    from rich.table import Table

    table = Table(title=f"{bundle.name} {list(bundle.input_shape)}: predicted latency per layer")
    for column in ("layer", "kind", "in", "out", "ms", "share"):
        table.add_column(column, justify="left" if column in ("layer", "kind") else "right")
    for row in estimate.layers:
        mark = "" if row.exact else " ~"
        table.add_row(
            row.name,
            row.kind,
            str(row.in_channels),
            str(row.out_channels),
            f"{row.predicted_ms:.4f}{mark}",
            f"{row.predicted_ms / estimate.predicted_ms:.1%}",
        )
    table.add_row(f"calibration (x{estimate.ratio:.3f})", "", "", "", f"{estimate.calibration_ms:+.4f}", "")
    table.add_row("[bold]total[/]", "", "", "", f"[bold]{estimate.predicted_ms:.4f}[/]", "")
    table.caption = f"{flops / 1e6:.2f} M MACs, {params / 1e6:.3f} M params; ~ interpolated between grid points"
    return table


def _min_reachable_ms(bundle: Any, device: Any, model: str, min_keep: float) -> float:
    """What `prune` computes before refusing a target: the same budget on the same grid, every layer at its floor."""
    from edgeprune.pruning.budget import LatencyPredictor, Target, bind
    from edgeprune.pruning.groups import analyze
    from edgeprune.pruning.ranking import smallest_reachable

    predictor = LatencyPredictor(device, bundle, model_arg=model)
    budget = bind(
        Target("ms", 1.0, relative=True), bundle.module, analyze(bundle.module, bundle.input_shape), predictor
    )
    return smallest_reachable(budget, min_keep)


@app.command("estimate")
def estimate_cmd(
    model: ModelArg,
    device: DeviceOpt,
    input_shape: ShapeOpt = None,
    classes: ClassesOpt = None,
    width: WidthOpt = 1.0,
    measure: Annotated[
        bool, typer.Option("--measure", help="Also compile the network as `compile` does and measure it.")
    ] = False,
    trials: TrialsOpt = None,
    min_keep: MinKeepOpt = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """Predict a model's latency on a device from its LUT, per layer, and the smallest latency pruning can reach
    on the table's grid (every layer at --min-keep); optionally measure it."""
    from edgeprune.devices.profile import load_device
    from edgeprune.profiling.latency import LatencyModel
    from edgeprune.profiling.profiler import measure_network

    profile = load_device(device)
    bundle = _bundle(model, input_shape, classes, width)
    latency = LatencyModel.for_device(profile)
    estimate = latency.estimate(bundle.module, bundle.input_shape)
    flops = estimate.flops
    params = sum(p.numel() for p in bundle.module.parameters())
    result: dict[str, Any] = {
        "model": bundle.name,
        "device": profile.name,
        "timings_are_real": profile.timings_are_real,
        "predicted_ms": round(estimate.predicted_ms, 6),
        "min_reachable_ms": round(_min_reachable_ms(bundle, profile, model, min_keep), 6),
        "min_keep": min_keep,
        "layer_sum_ms": round(estimate.layer_sum_ms, 6),
        "calibration_ratio": round(estimate.ratio, 6),
        "flops": flops,
        "params": params,
        "layers": [row.to_json() for row in estimate.layers],
    }
    if measure:
        with console.status(f"compiling {bundle.name} as `compile` does and measuring it on {profile.name}"):
            timing, tuning = measure_network(bundle, profile, trials)
        result["measured_ms"] = round(timing.median_ms, 6)
        result["measured_spread_ms"] = round(timing.spread_ms, 6)
        result["error_pct"] = round(100.0 * (estimate.predicted_ms - timing.median_ms) / timing.median_ms, 3)
        result["tasks_tuned"] = tuning.tasks - tuning.tasks_reused
    if as_json:
        print_json(result)
        return
    console.print(_estimate_table(bundle, estimate, flops, params))
    console.print(
        f"smallest reachable: {result['min_reachable_ms']:.4f} ms "
        f"({result['min_reachable_ms'] / estimate.predicted_ms:.2f}x), every layer at {min_keep:.0%} of its channels "
        "on the table's grid: `prune --target-ms` refuses a lower target (a finer `profile --grid` or a lower "
        "--min-keep reaches further)"
    )
    if measure:
        console.print(
            f"measured {result['measured_ms']:.4f} ms (spread {result['measured_spread_ms']:.4f}), predicted "
            f"{result['predicted_ms']:.4f} ms: error {result['error_pct']:+.2f}%"
            + timing_label(profile.timings_are_real)
        )
        if result["tasks_tuned"]:
            console.print(
                f"[yellow]note:[/] {result['tasks_tuned']} kernel(s) had no record in the tuning database and were "
                "tuned for this build: off the table's grid, its prediction is interpolated"
            )
