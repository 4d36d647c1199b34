"""`edgeprune compile` and `edgeprune verify`: TVM build with on-device autotuning, and the budget check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from edgeprune.cli.common import (
    ArtifactsArg,
    DeviceOpt,
    JsonOpt,
    RepeatOpt,
    TargetMsOpt,
    VerboseOpt,
    console,
    emit,
    log_lines,
    tvm_output,
    with_model,
    with_tuning,
)
from edgeprune.cli.emulating import timing_label
from edgeprune.verify import defaults as verify_defaults

app = typer.Typer()

TuningDbOpt = Annotated[
    Path | None,
    typer.Option(
        "--tuning-db", help="Tuning database folder (default: PROFILES/<device>/tuning/, see `edgeprune devices`)."
    ),
]

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


def _compile_line(result: Any, model: str, device: Any, per_task: int) -> str:
    """What `compile` did, in one line: how the tuning went and how close the build is to PyTorch."""
    report = result.tuning
    tuned = report.tasks - report.tasks_reused - report.tasks_transplanted
    summary = (
        f"{report.trials} trials on {tuned} tasks, {report.tasks_reused} reused, {report.tasks_transplanted} "
        "transplanted" + (", stopped by the time budget" if report.out_of_time else "")
        if per_task > 0
        else "untuned"
    )
    failed = f", {report.failed} candidates failed" if report.failed else ""
    return (
        f"[green]compiled[/] {model} for {device.name} in {result.seconds:.0f} s ({summary}{failed}); "
        f"outputs vs PyTorch max |diff| {result.max_abs_diff:.2g}\n  {result.artifact.library}"
    )


@app.command("compile")
@with_model
@with_tuning
def compile_cmd(
    named: dict[str, Any],
    device: DeviceOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifact folder to write (replaced whole).")],
    tuning: dict[str, Any],
    tuning_db: TuningDbOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export to ONNX, import into TVM Relax, tune with MetaSchedule on the device, write an artifact folder.

    The folder holds the library (model.so, or model.tar for a board to link), model.onnx, a reference
    input with PyTorch's output for it, and manifest.json. Outputs are checked against PyTorch before tuning.
    TVM's own output goes to ARTIFACTS.log beside the folder (--verbose shows it here too).
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

    import edgeprune as ep

    dev = ep.device(device)
    per_task = dev.tuning.trials if tuning["trials"] is None else tuning["trials"]
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    log = output.absolute().with_name(output.absolute().name + ".log")  # not inside: the folder is replaced whole
    with tvm_output(log, verbose), Progress(*columns, console=console, transient=True) as progress:
        display = _CompileProgress(progress, per_task)
        callbacks = {"on_stage": display.stage, "on_tuning_start": display.tuning_start, "on_trials": display.trials}
        result = ep.compile(**named, device=dev, out=output, tuning_db=tuning_db, **tuning, **callbacks)
    emit(result.to_json(), as_json, lambda: [_compile_line(result, named["model"], dev, per_task), *log_lines(log)])


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
    if result.interval is not None:
        i = result.interval
        table.add_row("95% interval", f"{i.low:.4f}-{i.high:.4f} ms (median of {i.samples} samples)")
    if result.baseline_timing is not None:
        table.add_row(
            "baseline",
            f"{result.baseline_timing.median_ms:.4f} ms ({result.baseline}): speedup {result.speedup:.2f}x",
        )
    if result.ratio is not None:
        r = result.ratio
        interval = f"95% interval {r.low:.3f}-{r.high:.3f}, {r.samples} pairs measured in turn"
        table.add_row("ratio", f"{r.estimate:.3f} of the baseline ({interval})")
    if result.target_ms is not None:
        colour = {"MEETS": "green", "MISSES": "red"}.get(result.verdict or "", "yellow")
        if result.target_ratio is not None and result.ratio is not None:  # judged on the paired ratio
            margin = (result.ratio.estimate / result.target_ratio - 1) * 100
            aim = f"{result.target_ratio:g}x of the baseline ({result.target_ms:.4f} ms at its median)"
        else:
            margin = (result.measured_ms / result.target_ms - 1) * 100
            aim = f"{result.target_ms:.4f} ms ({result.target_source})"
        table.add_row("target", f"{aim}: [{colour}]{result.verdict}[/], {margin:+.1f}%")
    if result.ort_timing is not None:
        ort_timing = result.ort_timing
        table.add_row(
            "ONNX Runtime",
            f"{ort_timing.median_ms:.4f} ms ± {ort_timing.spread_ms:.4f} on the same model.onnx, {result.ort_threads} "
            f"thread(s), alternating with the artifact: TVM/ORT {result.measured_ms / ort_timing.median_ms:.2f}",
        )
    if result.ort_baseline_timing is not None and result.baseline_timing is not None:
        base = result.ort_baseline_timing
        table.add_row(
            "baseline, ONNX Runtime",
            f"{base.median_ms:.4f} ms ± {base.spread_ms:.4f} on the baseline's model.onnx, same threads: "
            f"TVM/ORT {result.baseline_timing.median_ms / base.median_ms:.2f}",
        )
    if result.predicted_ms is not None:
        table.add_row("predicted", f"{result.predicted_ms:.4f} ms (error {result.prediction_error_pct:+.1f}%)")
    match = "[green]match[/]" if result.outputs_match else "[red]DIFFER[/]"
    tolerance = f"rtol {verify_defaults.RTOL:g}, atol {verify_defaults.ATOL:g}"
    table.add_row("outputs", f"max |diff| {result.max_abs_diff:.2g} vs PyTorch ({tolerance}): {match}")
    for warning in (result.health or {}).get("warnings", []):
        table.add_row("[yellow]board health[/]", escape(warning))
    table.add_row("result", "[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]")
    return table


@app.command("verify")
def verify_cmd(
    artifacts: ArtifactsArg,
    device: DeviceOpt,
    target_ms: TargetMsOpt = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Budget as a fraction of --baseline's latency: 0.5x, judged on the paired ratio of the two.",
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="Another artifact folder (the unpruned model) measured in alternation."),
    ] = None,
    repeat: RepeatOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure a compiled artifact on the device against the budget, a baseline and PyTorch's outputs.

    The verdict is MEETS, MISSES or TOO CLOSE TO CALL, from the 95% interval of the median (more samples are
    taken before the last). --target 0.5x is relative to --baseline: both are measured in alternation and the
    paired ratio is judged, so load that hits both alike cancels. Without a target, the pruning budget the
    manifest records (if any) is the target. Exit 0 when the outputs match and the target holds, 1 when not
    (numbers printed), 2 on an error. Writes verify.json into the artifact folder.
    """
    import edgeprune as ep

    dev = ep.device(device)
    with console.status(f"measuring on {dev.name} through RPC"):
        result = ep.verify(artifacts, dev, target_ms=target_ms, target=target, baseline=baseline, repeat=repeat)
    emit(result.to_json(), as_json, lambda: [_verify_table(result, dev.timing.min_repeat_ms)])
    raise typer.Exit(0 if result.passed else 1)
