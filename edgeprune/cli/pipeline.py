"""`edgeprune run` and `edgeprune demo`: the whole pipeline over a resumable run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune import search_defaults, training_defaults
from edgeprune.cli.common import (
    DeviceOpt,
    JsonOpt,
    ModelArg,
    NoWaitOpt,
    ShapeOpt,
    TargetMsOpt,
    TrialsOpt,
    TrustOpt,
    VerboseOpt,
    WidthOpt,
    console,
    emit,
    log_lines,
    options,
    refuse_if_busy,
    set_threads,
    tvm_output,
)
from edgeprune.cli.emulating import timing_label
from edgeprune.cli.pruning import (
    DataOpt,
    GenerationsOpt,
    LimitOpt,
    MethodOpt,
    PopulationOpt,
    SearchMinutesOpt,
    SeedOpt,
    ThreadsOpt,
)
from edgeprune.errors import EdgepruneError
from edgeprune.logs import LOGS, TVM_LOG
from edgeprune.loop import SLACK

app = typer.Typer()

SlackOpt = Annotated[
    float,
    typer.Option(
        "--slack",
        help="Prune again, less, while the measured latency is under this share of the target; the most "
        "accurate round that meets is kept. 0 turns slack rounds off.",
    ),
]

DEMO_MODEL = "resnet20"
DEMO_DATA = "digits"


class _Bars:
    """One rich bar per long step (profiling phases, tuning trials); stage changes are printed as lines."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def announce(self, text: str) -> None:
        for task in self.tasks.values():
            self.progress.remove_task(task)
        self.tasks.clear()
        console.print(f"[bold]>[/] {text}", highlight=False)

    def _bar(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=max(total, 1))
        self.progress.update(self.tasks[name], completed=done, total=max(total, 1))

    def profile(self, phase: str, done: int, total: int) -> None:
        self._bar(f"profile: {phase}", done, total)

    def trials(self, done: int, total: int, _best_ms: float | None) -> None:
        self._bar("tuning trials", done, total)


def _lines(summary: dict[str, Any]) -> list[Any]:
    """The run's table (original vs pruned), its verdict and where it deployed."""
    from rich.table import Table

    from edgeprune.report.html import SUMMARY_ROWS, ort_label, summary_cell

    original, pruned = summary["original"], summary["pruned"]
    table = Table(title=f"{summary['model']} on {summary['device']}: original vs pruned")
    for column in ("", "original", "pruned"):
        table.add_column(column, justify="right")
    for label, key, pattern in SUMMARY_ROWS:
        table.add_row(label, summary_cell(original.get(key), pattern), summary_cell(pruned.get(key), pattern))
        if key == "measured_ms" and (original.get("ort_ms") or pruned.get("ort_ms")):
            # what the user would ship otherwise, measured on the same ONNX files: the report's line, the same words
            threads = original.get("ort_threads") or pruned.get("ort_threads")
            cells = (summary_cell(side.get("ort_ms"), pattern) for side in (original, pruned))
            table.add_row(ort_label(threads), *cells, style="magenta")
    verdict = "[green]MEETS[/]" if summary["meets_target"] else "[red]MISSES[/]"
    lines = [
        table,
        f"{verdict} the budget: {pruned['measured_ms']:.3f} ms measured on {summary['device']} vs target "
        f"{summary['target_ms']:.3f} ms; speedup {summary['speedup']:.2f}x; round {summary['chosen_round']} of "
        f"{summary['rounds']} kept ({summary['stopped']}); "
        f"report: {Path(summary['run_dir']) / 'report.html'}" + timing_label(summary["timings_are_real"]),
    ]
    if summary.get("deploy"):
        lines.append(f"deployed to {summary['deploy']['host']}:{summary['deploy']['remote_path']}")
    return lines + log_lines(Path(summary["run_dir"]) / LOGS / TVM_LOG)


def loop_settings(
    model: ModelArg,
    device: DeviceOpt,
    data: DataOpt = None,
    input_shape: ShapeOpt = None,
    width: WidthOpt = 1.0,
    method: MethodOpt = "legr",
    train_epochs: Annotated[
        int,
        typer.Option(
            "--train-epochs", help="Epochs when MODEL has no weights (trained with `edgeprune train`'s recipe)."
        ),
    ] = training_defaults.EPOCHS,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", help="Fine-tune epochs after pruning (each target's, in a sweep).")
    ] = 5,
    prune_steps: Annotated[
        int | None,
        typer.Option(
            "--prune-steps",
            help="Prune in K steps toward each round's target, the fine-tune epochs split across them "
            "(default: one shot, until measured).",
        ),
    ] = None,
    search_minutes: SearchMinutesOpt = 1.5,
    generations: GenerationsOpt = search_defaults.GENERATIONS,
    population: PopulationOpt = search_defaults.POPULATION,
    trials: TrialsOpt = None,
    max_rounds: Annotated[
        int, typer.Option("--max-rounds", help="Closed-loop rounds at most (per target, in a sweep).")
    ] = 3,
    slack: SlackOpt = SLACK,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    threads: ThreadsOpt = 1,
) -> dict[str, Any]:
    """What `run` and `sweep` share: the model, the device and the closed loop's options. Each parameter is a
    field of `edgeprune.pipeline.RunConfig`, so these are ep.run's and ep.sweep's keywords as they are."""
    return dict(locals())


def closed_loop(
    call: Callable[..., dict[str, Any]], settings: dict[str, Any], verbose: bool = False, **more: Any
) -> dict[str, Any]:
    """`call` (ep.run or ep.sweep) with the progress display: each stage a line, each long step a bar; TVM's
    own output only with `verbose` (ep.run writes it to the run's logs/ in any case)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    set_threads(settings["threads"])
    with (
        tvm_output(None, verbose),
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        ) as progress,
    ):
        bars = _Bars(progress)
        shown = {"on_stage": bars.announce, "progress": progress, "on_profile": bars.profile, "on_trials": bars.trials}
        return call(**settings, **more, **shown)


def _finish(summary: dict[str, Any], as_json: bool) -> None:
    emit(summary, as_json, lambda: _lines(summary))
    if not summary["meets_target"]:
        raise typer.Exit(1)


def _target(target_ms: float | None, target: str | None) -> str:
    if (target_ms is None) == (target is None):
        raise EdgepruneError("give exactly one of --target-ms T or --target 0.5x")
    if target is not None and not target.endswith("x"):
        raise EdgepruneError(f"--target '{target}' must be a fraction of the unpruned latency like 0.5x")
    return str(target_ms) if target_ms is not None else str(target)


@app.command("run")
@options("settings", loop_settings)
def run_cmd(
    settings: dict[str, Any],
    target_ms: TargetMsOpt = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Budget as a fraction of the measured unpruned latency: 0.5x.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run folder (default runs/<model>-<device>).")
    ] = None,
    latency_scale: Annotated[
        float | None,
        typer.Option(
            "--latency-scale",
            help="Known correction factor of the LUT's predictions (default: the unpruned model's measured latency "
            "over the LUT's prediction of it).",
        ),
    ] = None,
    deploy: Annotated[
        bool, typer.Option("--deploy/--no-deploy", help="Deploy over SSH when the budget holds and the device has SSH.")
    ] = True,
    trust_new_host: TrustOpt = False,
    verbose: VerboseOpt = False,
    no_wait: NoWaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Profile -> train -> prune -> compile -> verify -> deploy, to a millisecond target on a device.

    Re-running with the same --run-dir resumes: finished stages are skipped. If the tuned pruned model measures
    above the target, or under --slack of it, the latency model is corrected by what the device measured and the
    model pruned again; the most accurate round that meets the target (validation accuracy) is the result.
    Exit 0 when the budget holds on the device, 1 when it does not after --max-rounds, 2 on an error (a failed
    deploy included: the summary and report are written first).
    """
    import edgeprune as ep

    wanted = _target(target_ms, target)
    if no_wait:
        refuse_if_busy(ep.device(settings["device"]))
    loop = {"folder": run_dir, "latency_scale": latency_scale, "deploy": deploy, "trust_new_host": trust_new_host}
    _finish(closed_loop(ep.run, settings, verbose, target=wanted, **loop), as_json)


@app.command("demo")
def demo_cmd(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Run folder.")] = Path("runs/demo"),
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The whole pipeline on the built-in local device: a resnet20 trained on digits, pruned to 0.5x its measured
    latency, tuned and verified through the local RPC farm. Takes about 5 minutes on 2 idle cores."""
    import edgeprune as ep
    from edgeprune.data import default_input_shape

    shape = default_input_shape(DEMO_DATA)  # the input `train` and `run` build for digits too
    console.print(f"demo: {DEMO_MODEL} on {DEMO_DATA} {list(shape)}, target 0.5x of its measured latency, local")
    settings = {"model": DEMO_MODEL, "device": "local", "data": DEMO_DATA, "input_shape": shape, "threads": 1}
    _finish(closed_loop(ep.run, settings, verbose, target="0.5x", folder=run_dir), as_json)
