"""`edgeprune profile` and `edgeprune estimate`: the device's latency lookup table and the latency model."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer

from edgeprune.cli.common import (
    DeviceOpt,
    JsonOpt,
    MinKeepOpt,
    NoWaitOpt,
    RepeatOpt,
    TrialsOpt,
    VerboseOpt,
    console,
    emit,
    log_lines,
    refuse_if_busy,
    tvm_output,
    with_model,
    with_tuning,
)
from edgeprune.cli.emulating import timing_label
from edgeprune.logs import LOGS, TVM_LOG

app = typer.Typer()


class _PhaseProgress:
    """One rich progress bar per profiling phase (tuning trials, network, entries), with an ETA."""

    LABELS = {
        "tuning": "tuning (trials)",
        "network": "whole network",
        "entries": "entries",
        "cooling": "cooling down (s)",  # a throttled board, before its entries are measured again
    }

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(self.LABELS.get(phase, phase), total=max(total, 1))
        self.progress.update(self.tasks[phase], completed=done, total=max(total, 1))


@app.command("profile")
@with_model
@with_tuning
def profile_cmd(
    named: dict[str, Any],
    device: DeviceOpt,
    tuning: dict[str, Any],
    grid: Annotated[
        int | None,
        typer.Option(
            "--grid",
            help="Channel step of the table's grid (default: the device's vector width in fp32 lanes, "
            "coarser for wide layers so each channel dimension has at most 4 points).",
        ),
    ] = None,
    repeat: RepeatOpt = None,
    number: Annotated[
        int | None,
        typer.Option(
            "--number",
            help="Runs per repeat (raised so a repeat lasts the device's timing.min_repeat_ms); default: the "
            "device's timing.number.",
        ),
    ] = None,
    servers_parallel: Annotated[
        bool,
        typer.Option("--servers-parallel", help="Measure on every free RPC server under the device's key at once."),
    ] = False,
    verbose: VerboseOpt = False,
    no_wait: NoWaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure per-layer latency on a device through TVM RPC into its lookup table (LUT).

    The table models the tuned kernels `compile` ships (one MetaSchedule database per device, shared).
    An interrupted run resumes; entries measured for other models are reused. A second profile of a device
    waits for the first (saying for whom), then measures only what the table still lacks. TVM's own output
    goes to logs/tvm.log beside the table (--verbose shows it here too). The board's health is read around every
    few entries: what was measured while it throttled or its clock moved is measured again after a cool-down (up
    to 2 minutes), or the profile is refused with the fix (exit 2; run it again to resume).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    import edgeprune as ep

    dev = ep.device(device)
    if no_wait:
        refuse_if_busy(dev)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    log = dev.lut_dir / LOGS / TVM_LOG
    with tvm_output(log, verbose), Progress(*columns, console=console, transient=True) as progress:
        report = ep.profile(
            **named,
            device=dev,
            grid=grid,
            repeat=repeat,
            number=number,
            parallel=servers_parallel,
            **tuning,
            on_progress=_PhaseProgress(progress),
        )
    shown = {**report.to_json(), "timings_are_real": dev.timings_are_real}
    emit(shown, as_json, lambda: [_profiled(report, named, dev), *log_lines(log)])


def _profiled(report: Any, named: dict[str, Any], device: Any) -> str:
    """What `profile` measured and reused, and where the table is."""
    network = f", whole network {report.network_ms:.3f} ms" if report.network_ms is not None else ""
    return (
        f"[green]profiled[/] {named['model']} on {device.name}: {report.entries_measured} entries measured, "
        f"{report.entries_reused} reused of {report.entries_total}{network} in {report.seconds:.0f} s "
        f"({report.servers or 0} server(s))" + timing_label(device.timings_are_real) + f"\n  {report.lut}"
    ) + "".join(f"\n  [yellow]board health:[/] {w}" for w in report.health_warnings)


def _estimate_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    total = result["predicted_ms"]
    table = Table(title=f"{result['model']} {result['input_shape']}: predicted latency per layer")
    for column in ("layer", "kind", "in", "out", "ms", "share"):
        table.add_column(column, justify="left" if column in ("layer", "kind") else "right")
    for row in result["layers"]:
        mark = "" if row["exact"] else " ~"
        ms = row["predicted_ms"]
        cells = (row["name"], row["kind"], str(row["in_channels"]), str(row["out_channels"]), f"{ms:.4f}{mark}")
        table.add_row(*cells, f"{ms / total:.1%}")
    ratio, calibration = result["calibration_ratio"], result["calibration_ms"]
    table.add_row(f"calibration (x{ratio:.3f})", "", "", "", f"{calibration:+.4f}", "")
    table.add_row("[bold]total[/]", "", "", "", f"[bold]{total:.4f}[/]", "")
    table.caption = (
        f"{result['flops'] / 1e6:.2f} M MACs, {result['params'] / 1e6:.3f} M params; ~ interpolated between grid points"
    )
    return table


def _estimate_lines(result: dict[str, Any]) -> list[Any]:
    """The table, the floor `prune` refuses targets under, and the measurement when there is one."""
    floor, predicted = result["min_reachable_ms"], result["predicted_ms"]
    lines = [
        _estimate_table(result),
        f"smallest reachable: {floor:.4f} ms ({floor / predicted:.2f}x), every layer at {result['min_keep']:.0%} of "
        "its channels on the table's grid: `prune --target-ms` refuses a lower target (a finer `profile --grid` or "
        "a lower --min-keep reaches further)",
    ]
    if "measured_ms" in result:
        lines.append(
            f"measured {result['measured_ms']:.4f} ms (spread {result['measured_spread_ms']:.4f}), predicted "
            f"{predicted:.4f} ms: error {result['error_pct']:+.2f}%" + timing_label(result["timings_are_real"])
        )
        if result["tasks_tuned"]:
            lines.append(
                f"[yellow]note:[/] {result['tasks_tuned']} kernel(s) had no record in the tuning database and were "
                "tuned for this build: off the table's grid, its prediction is interpolated"
            )
    return lines


@app.command("estimate")
@with_model
def estimate_cmd(
    named: dict[str, Any],
    device: DeviceOpt,
    measure: Annotated[
        bool, typer.Option("--measure", help="Also compile the network as `compile` does and measure it.")
    ] = False,
    trials: TrialsOpt = None,
    min_keep: MinKeepOpt = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """Predict a model's latency on a device from its LUT, per layer, and the smallest latency pruning can reach
    on the table's grid (every layer at --min-keep); optionally measure it."""
    import edgeprune as ep

    dev = ep.device(device)
    waiting = f"predicting, then compiling as `compile` does and measuring on {dev.name}"
    with console.status(waiting) if measure else contextlib.nullcontext():
        latency = ep.latency_model(dev, **named, profile_missing=False)
        result = latency.estimate(min_keep=min_keep, measure=measure, trials=trials)
    emit(result, as_json, lambda: _estimate_lines(result))
