"""`edgeprune compile` and `edgeprune verify`: TVM build with on-device autotuning, and the budget check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune.cli.common import ClassesOpt, DeviceOpt, JsonOpt, ModelArg, ShapeOpt, WidthOpt, console, print_json
from edgeprune.cli.emulating import timing_label
from edgeprune.cli.profiling import MinutesOpt
from edgeprune.verify import defaults as verify_defaults

app = typer.Typer()

STAGES = {
    "export": "exporting to ONNX and TVM Relax",
    "check": "checking Relax outputs against PyTorch on this host",
    "tune": "tuning on the device",
    "build": "building for the device",
    "write": "writing the artifact folder",
}


class _CompileProgress:
    """A spinner naming the current step, and a bar of tuning trials with the best kernel time so far."""

    def __init__(self, progress: Any, trials_per_task: int) -> None:
        self.progress = progress
        self.trials_per_task = trials_per_task
        self.step = progress.add_task("starting", total=None, best="")
        self.tuning: Any = None

    def stage(self, name: str) -> None:
        self.progress.update(self.step, description=STAGES.get(name, name))

    def tuning_start(self, tasks: int, reused: int) -> None:
        todo = tasks - reused
        description = f"tuning {todo} of {tasks} tasks ({reused} reused from the database)"
        self.tuning = self.progress.add_task(description, total=max(todo * self.trials_per_task, 1), best="")
        if todo == 0:
            self.progress.update(self.tuning, completed=1)

    def trials(self, done: int, total: int, best_ms: float | None) -> None:
        best = f"kernels {best_ms:.3f} ms" if best_ms is not None else ""
        self.progress.update(self.tuning, completed=done, total=max(total, 1), best=best)


@app.command("compile")
def compile_cmd(
    model: ModelArg,
    device: DeviceOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifact folder to write (replaced whole).")],
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            help="MetaSchedule trials per new task, measured on the device; tasks the tuning database already "
            "holds are reused (with tuning.transplant, new shapes of a tuned layer get its schedule "
            "transplanted). 0 builds the untuned default schedules. Default: the device's tuning.trials (16 "
            "without a [tuning] table).",
        ),
    ] = None,
    minutes: MinutesOpt = None,
    tuning_db: Annotated[
        Path | None,
        typer.Option(
            "--tuning-db", help="Tuning database folder (default: PROFILES/<device>/tuning/, see `edgeprune devices`)."
        ),
    ] = None,
    input_shape: ShapeOpt = None,
    classes: ClassesOpt = None,
    width: WidthOpt = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Export to ONNX, import into TVM Relax, tune with MetaSchedule on the device, write an artifact folder.

    The folder holds the library (model.so, or model.tar for a board to link), model.onnx, a reference
    input with PyTorch's output for it, and manifest.json. Outputs are checked against PyTorch before tuning.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from edgeprune.compile.compiler import compile_model
    from edgeprune.devices.profile import load_device
    from edgeprune.models.io import load_model, parse_input_shape

    profile = load_device(device)
    tuning = profile.tuning.with_changes(trials=trials, minutes=minutes)
    bundle = load_model(model, parse_input_shape(input_shape) if input_shape else None, classes, width)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        display = _CompileProgress(progress, tuning.trials)
        result = compile_model(
            bundle,
            profile,
            output,
            tuning=tuning,
            db_dir=tuning_db,
            source=model,
            on_stage=display.stage,
            on_tuning_start=display.tuning_start,
            on_trials=display.trials,
        )
    if as_json:
        print_json(result.to_json())
        return
    report = result.tuning
    summary = (
        f"{report.trials} trials on {report.tasks - report.tasks_reused - report.tasks_transplanted} tasks, "
        f"{report.tasks_reused} reused, {report.tasks_transplanted} transplanted"
        + (", stopped by the time budget" if report.out_of_time else "")
        if tuning.trials > 0
        else "untuned"
    )
    failed = f", {report.failed} candidates failed" if report.failed else ""
    console.print(
        f"[green]compiled[/] {bundle.name} for {profile.name} in {result.seconds:.0f} s ({summary}{failed}); "
        f"outputs vs PyTorch max |diff| {result.max_abs_diff:.2g}\n  {result.artifact.library}"
    )


def _verify_table(result: Any, min_repeat_ms: int) -> Any:
    from rich.table import Table

    table = Table(title=f"{result.artifact} on {result.device}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    timing = result.timing
    table.add_row(
        "measured",
        f"{timing.median_ms:.4f} ms ± {timing.spread_ms:.4f} (median of {timing.repeats} repeats, "
        f"each >= {min_repeat_ms} ms)" + timing_label(result.timings_are_real),
    )
    if result.target_ms is not None:
        verdict = "[green]holds[/]" if result.meets_target else "[red]missed[/]"
        margin = (result.measured_ms / result.target_ms - 1) * 100
        table.add_row("target", f"{result.target_ms:.4f} ms ({result.target_source}): {verdict}, {margin:+.1f}%")
    if result.baseline_timing is not None:
        table.add_row(
            "baseline",
            f"{result.baseline_timing.median_ms:.4f} ms ({result.baseline}): speedup {result.speedup:.2f}x",
        )
    if result.ort_timing is not None:
        ort_timing = result.ort_timing
        table.add_row(
            "ONNX Runtime",
            f"{ort_timing.median_ms:.4f} ms ± {ort_timing.spread_ms:.4f} on the same model.onnx, {result.ort_threads} "
            f"thread(s), alternating with the artifact: TVM/ORT {result.measured_ms / ort_timing.median_ms:.2f}",
        )
    if result.predicted_ms is not None:
        table.add_row("predicted", f"{result.predicted_ms:.4f} ms (error {result.prediction_error_pct:+.1f}%)")
    match = "[green]match[/]" if result.outputs_match else "[red]DIFFER[/]"
    tolerance = f"rtol {verify_defaults.RTOL:g}, atol {verify_defaults.ATOL:g}"
    table.add_row("outputs", f"max |diff| {result.max_abs_diff:.2g} vs PyTorch ({tolerance}): {match}")
    table.add_row("result", "[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]")
    return table


@app.command("verify")
def verify_cmd(
    artifacts: Annotated[Path, typer.Argument(help="Artifact folder written by `edgeprune compile`.")],
    device: DeviceOpt,
    target_ms: Annotated[
        float | None,
        typer.Option("--target-ms", help="Latency budget (default: the pruning budget in the manifest, if any)."),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="Another artifact folder to measure for the speedup.")
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat", help="Timed repeats (median and spread are reported); default: the device's timing.repeat."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a compiled artifact on the device against the budget, a baseline and PyTorch's outputs.

    Exit 0 when the outputs match and the target holds, 1 when not (numbers printed), 2 on an error.
    Writes verify.json into the artifact folder.
    """
    from edgeprune.devices.profile import load_device
    from edgeprune.verify.verifier import verify_artifact

    profile = load_device(device)
    with console.status(f"measuring on {profile.name} through RPC"):
        result = verify_artifact(artifacts, profile, target_ms, baseline, repeat)
    if as_json:
        print_json(result.to_json())
    else:
        console.print(_verify_table(result, profile.timing.min_repeat_ms))
    raise typer.Exit(0 if result.passed else 1)
