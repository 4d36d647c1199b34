"""Runtime benchmark on the local device: PyTorch eager, ONNX Runtime and TVM at growing tuning budgets.

Issue #15: shipped TVM latency / ORT latency against tuning minutes, and what reusing the device's deep
tuning buys a pruned variant's compile. One run:

1. the baseline is tuned on the device from an empty database, deepened budget by budget (`--budgets 16 64
   128` trials per task: replay-trace draws independent samples, so 48 more trials on top of 16 is a
   64-trial search); after each budget the database is copied and a TVM artifact built from it;
2. a pruned variant (a saved model, else a uniformly narrower stand-in with about half the MACs) is compiled
   twice, as `edgeprune compile` does: reusing the deepest baseline database (exact records, the family's
   schedule transplanted onto new shapes, only the rest tuned), and from an empty database;
3. every runtime is timed in interleaved rounds at each `--threads` (load that comes and goes hits them all
   alike): per runtime, the median of the samples, half their interquartile range and the minimum.

Results: bench/results/runtime.json, runtime.md, runtime.png (TVM/ORT against tuning minutes), one run per
baseline model: running the tool for another model adds it, a rerun of the same model replaces it.

A run with `--work DIR` can be resumed: each finished stage (a layout's tuning and pruned compile, a thread
count's interleaved rounds, its per-layer tables) is recorded in DIR/checkpoint.json as it ends, and the same
command run again skips those stages and keeps their rows as measured (an interrupted stage starts over).

    .venv/bin/python tools/bench_runtime.py [--model resnet20] [--budgets 16 64 128] [--threads 1 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS = 5
REPEATS_PER_ROUND = 3
MIN_REPEAT_MS = 50
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
KEPT = "<!-- written by hand below: kept when the benchmark rewrites this file -->"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


@dataclass
class Variant:
    """A model to measure: its module, its ONNX file (in the run's work folder, removed with it), its TVM
    libraries by label and how each was tuned."""

    name: str
    bundle: Any
    onnx: Path
    libraries: dict[str, Path] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)  # by label: the folders compare_layers reads
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)


class Checkpoint:
    """The stages a run with a kept work folder has finished, with what each produced, saved (atomically) as
    each ends: a rerun skips them, so hours of tuning and the rows already measured survive an interruption.
    `signature` is the run's arguments that decide what is measured; a folder holding another run is refused
    rather than mixed into this one."""

    def __init__(self, work: Path, signature: dict[str, Any]) -> None:
        self.path = work / "checkpoint.json"
        self.signature = signature
        self.stages: dict[str, Any] = {}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved["signature"] != signature:
                differing = sorted(
                    key
                    for key in signature.keys() | saved["signature"].keys()
                    if signature.get(key) != saved["signature"].get(key)
                )
                raise SystemExit(
                    f"{work} holds a run with other arguments ({', '.join(differing)}): pass the same arguments to "
                    "resume it, or another --work folder"
                )
            self.stages = saved["stages"]

    def get(self, stage: str) -> Any:
        """What a finished stage produced, or None when it has not finished."""
        return self.stages.get(stage)

    def save(self, stage: str, value: Any) -> None:
        from edgeprune import atomic

        self.stages[stage] = value
        atomic.write_json(self.path, {"signature": self.signature, "stages": self.stages})


def built(variants: list[Variant]) -> dict[str, Any]:
    """The libraries, artifacts and tuning of every variant so far, as a checkpoint keeps them."""
    return {
        v.name: {
            "libraries": {label: str(path) for label, path in v.libraries.items()},
            "artifacts": {label: str(path) for label, path in v.artifacts.items()},
            "tuning": v.tuning,
        }
        for v in variants
    }


def restore(variants: list[Variant], state: dict[str, Any]) -> None:
    """The variants as `built` saved them (a resumed run's finished tuning stages)."""
    for v in variants:
        v.libraries = {label: Path(path) for label, path in state[v.name]["libraries"].items()}
        v.artifacts = {label: Path(path) for label, path in state[v.name]["artifacts"].items()}
        v.tuning = state[v.name]["tuning"]


def tuned_label(trials: int, layout: str = "") -> str:
    """A TVM library's label: its trials per task, and its layout where a run compares several."""
    return f"tvm_{trials}" + (f" {layout}" if layout else "")


def deepen(
    baseline: Variant, device: Any, budgets: list[int], config: Any, work: Path, progress: Any, suffix: str = ""
) -> Path:
    """Tune the baseline budget after budget into one database; an artifact from a copy of it after each
    (labelled with `suffix`, the layout where a run compares several). Returns the deepest database."""
    from edgeprune.compile.compiler import compile_model
    from edgeprune.tvmx import tune
    from edgeprune.tvmx.export import to_relax

    db = work / "baseline-db"
    db.mkdir(parents=True)
    layout = config.conv_layout(device.target, device.channel_step)
    tasks = tune.extract_tasks(to_relax(baseline.bundle.module, (1, *baseline.bundle.input_shape), layout).mod, device)
    step = progress.add_task(f"baseline {suffix}: tuning", total=None)
    done, seconds = 0, 0.0
    for trials in budgets:
        progress.update(step, description=f"baseline: tuning to {trials}/task", completed=0, total=None)
        start = time.perf_counter()
        with tune.exclusive(db):
            tally = tune.run_tuning(
                tasks,
                device,
                config.with_changes(trials=trials - done),
                db,
                seed=trials,
                on_progress=lambda n, total, _b: progress.update(step, completed=n, total=total),
            )
        seconds += time.perf_counter() - start
        done = trials
        snapshot = work / f"baseline-db-{trials}"
        shutil.copytree(db, snapshot)
        label = tuned_label(trials, suffix)
        # trials > 0 applies the database; every task has records there, so nothing is tuned
        result = compile_model(baseline.bundle, device, work / f"baseline-{label}", 1, snapshot, tuning=config)
        baseline.libraries[label] = result.artifact.library
        baseline.artifacts[label] = result.artifact.folder
        baseline.tuning[label] = {
            "trials_per_task": trials,
            "tasks": len(tasks),
            "failed": tally.failed,
            "tuning_seconds": round(seconds, 1),
            "from": "an empty database",
        }
    progress.remove_task(step)
    return db


def compile_pruned(
    pruned: Variant,
    device: Any,
    deep_db: Path,
    trials: int,
    config: Any,
    work: Path,
    from_empty: bool,
    suffix: str = "",
) -> None:
    """The pruned variant compiled as `edgeprune compile` does: reusing the deep database, and (`from_empty`)
    from nothing."""
    from edgeprune.compile.compiler import compile_model

    reuse_db = work / "pruned-reuse-db"
    shutil.copytree(deep_db, reuse_db)
    reuse = "tvm_reuse" + (f" {suffix}" if suffix else "")
    compiles = [(reuse, reuse_db, f"the baseline's {deep_db.name} (records, transplants, the rest tuned)")]
    if from_empty:
        compiles.append((tuned_label(trials, suffix), work / "pruned-own-db", "an empty database"))
    for label, db, source in compiles:
        tuning = config.with_changes(transplant=label == reuse)
        result = compile_model(pruned.bundle, device, work / f"pruned-{label}", None, db, tuning=tuning)
        report = result.tuning
        pruned.libraries[label] = result.artifact.library
        pruned.artifacts[label] = result.artifact.folder
        pruned.tuning[label] = {
            "trials_per_task": trials,
            "tasks": report.tasks,
            "tasks_reused": report.tasks_reused,
            "tasks_transplanted": report.tasks_transplanted,
            "trials": report.trials,
            "failed": report.failed,
            "tuning_seconds": round(report.seconds, 1),
            "compile_seconds": round(result.seconds, 1),
            "from": source,
        }


def measure(variants: list[Variant], threads: int, progress: Any) -> None:
    """Every runtime of every variant with `threads` threads, in interleaved rounds; fills `variant.runs`."""
    import torch

    from edgeprune.devices import farm
    from edgeprune.devices.base import TimingSettings
    from edgeprune.devices.profile import local_device
    from edgeprune.devices.timing import RemoteTimer, Timing
    from edgeprune.verify import ort

    os.environ["TVM_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)  # the farm's server inherits it
    torch.set_num_threads(threads)
    device = local_device()
    settings = TimingSettings(number=1, repeat=REPEATS_PER_ROUND, min_repeat_ms=MIN_REPEAT_MS)
    farm.up(servers=1, port=device.tracker_port, key=device.key)
    try:
        session = device.request_session()
        timers: dict[tuple[str, str], Any] = {}
        for variant in variants:
            module, x = variant.bundle.module.eval(), variant.bundle.example_input()
            with torch.no_grad():
                expected = module(x).numpy()
            ort_session = ort.session(variant.onnx, threads)
            feed = {ort_session.get_inputs()[0].name: x.numpy()}

            def eager(module: Any = module, x: Any = x) -> Any:
                with torch.no_grad():
                    return module(x)

            timers[variant.name, "pytorch"] = ort.HostTimer(eager, settings)
            timers[variant.name, "onnxruntime"] = ort.HostTimer(lambda s=ort_session, f=feed: s.run(None, f), settings)
            diffs = {"onnxruntime": float(np.max(np.abs(ort_session.run(None, feed)[0] - expected)))}
            for label, library in variant.libraries.items():
                remote = f"{variant.name}-{label}-{threads}{library.suffix}"
                timers[variant.name, label] = RemoteTimer(session, device, library, x.numpy(), settings, remote)
                diffs[label] = float(np.max(np.abs(timers[variant.name, label].output - expected)))
            variant.runs[str(threads)] = {"max_abs_diff_vs_pytorch": diffs}
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in timers}
        rounds = progress.add_task(f"{threads} thread(s): interleaved rounds", total=ROUNDS)
        for _ in range(ROUNDS):
            for key, timer in timers.items():
                samples[key] += timer.samples_ms()
            progress.advance(rounds)
    finally:
        farm.down(device.tracker_port)
    for variant in variants:
        labels = ["pytorch", "onnxruntime", *variant.libraries]
        timings = {label: Timing.from_samples(samples[variant.name, label], 0) for label in labels}
        run = variant.runs[str(threads)]
        run["ms"] = {label: t.median_ms for label, t in timings.items()}
        run["spread_ms"] = {label: t.spread_ms for label, t in timings.items()}
        run["min_ms"] = {label: t.min_ms for label, t in timings.items()}
        run["tvm_vs_onnxruntime"] = {label: run["ms"][label] / run["ms"]["onnxruntime"] for label in variant.libraries}


def per_layer(variants: list[Variant], labels: dict[str, str], threads: int, progress: Any) -> dict[str, Any]:
    """tools/compare_layers.py on the chosen artifact of each variant (`labels`: variant -> library label), in a
    process of its own so TVM's thread pool starts at `threads`; its tables by `variant label`."""
    tables = {}
    step = progress.add_task(f"{threads} thread(s): per-layer tables", total=len(labels))
    for variant in variants:
        label = labels.get(variant.name)
        if label is None:
            continue
        with tempfile.TemporaryDirectory(prefix="edgeprune-layers-") as folder:
            out = Path(folder) / "table"
            command = [
                sys.executable,
                str(Path(__file__).with_name("compare_layers.py")),
                str(variant.artifacts[label]),
            ]
            subprocess.run([*command, "--threads", str(threads), "--out", str(out)], check=True, capture_output=True)
            tables[f"{variant.name} {label}"] = json.loads(out.with_suffix(".json").read_text())
        progress.advance(step)
    progress.remove_task(step)
    return tables


def to_json(variant: Variant) -> dict[str, Any]:
    from edgeprune.pruning import cost

    bundle = variant.bundle
    macs, params = cost.measure(bundle.module, bundle.input_shape)
    return {
        "variant": variant.name,
        "model": bundle.name,
        "source": bundle.meta.get("source"),
        "width": bundle.meta.get("width"),
        "input_shape": list(bundle.input_shape),
        "macs": macs,
        "params": params,
        "tuning": variant.tuning,
        "by_threads": variant.runs,
    }


def run_key(report: dict[str, Any]) -> str:
    """Which baseline and which levers a run measured: a rerun of the same replaces it in the results file."""
    baseline, tuning = report["variants"][0], report["tuning_config"]
    return (
        f"{baseline['model']} {'x'.join(map(str, baseline['input_shape']))} width {baseline['width']}, "
        f"{tuning['strategy']} + {tuning['cost_model']}, {tuning.get('layout', 'NCHW')}"
    )


def merged(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """The results file's runs with this one in place of an earlier run of the same baseline, so one model
    can be benchmarked at a time (a file from before runs were kept per model is replaced)."""
    runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    return {"runs": [*(run for run in runs if run_key(run) != run_key(report)), report]}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Runtime benchmark (tools/bench_runtime.py)",
        "",
        f"Per runtime: median of {ROUNDS * REPEATS_PER_ROUND} samples (each >= {MIN_REPEAT_MS} ms, {ROUNDS} "
        "interleaved rounds) +- half the IQR (min); ms per image, batch 1. One section per baseline model; "
        "each is one run of the tool.",
        "",
    ]
    for report in results["runs"]:
        machine, tuning = report["machine"], report["tuning_config"]
        lines += [
            f"## {run_key(report)}",
            "",
            f"{machine['cpu']} ({machine['cores']} cores, TVM target {machine['target']}); load average "
            f"{machine['load_before']} before, {machine['load_after']} after. Tuning: {tuning['strategy']} + "
            f"{tuning['cost_model']} cost model, {tuning['task_scheduler']}, layout {tuning.get('layout', 'NCHW')}.",
            "",
            f"Command: `{report['command']}`",
            "",
        ]
        for threads in report["threads"]:
            lines += [f"### {threads} thread(s) for every runtime", ""]
            lines += [
                "| variant | runtime | tuned from | trials/task | tuning s | compile s | ms | TVM/ORT |",
                "|---" * 8 + "|",
            ]
            for row in report["variants"]:
                run = row["by_threads"][str(threads)]
                for label, ms in run["ms"].items():
                    tuned = row["tuning"].get(label, {})
                    ratio = run["tvm_vs_onnxruntime"].get(label)
                    lines.append(
                        f"| {row['variant']} ({row['macs'] / 1e6:.1f} MMACs) | {label} | {tuned.get('from', '')} | "
                        f"{tuned.get('trials_per_task', '')} | {tuned.get('tuning_seconds', '')} | "
                        f"{tuned.get('compile_seconds', '')} | {ms:.3f} +- {run['spread_ms'][label]:.3f} "
                        f"({run['min_ms'][label]:.3f}) | {'' if ratio is None else f'{ratio:.2f}'} |"
                    )
            lines.append("")
        lines += [*[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def layers_markdown(results: dict[str, Any]) -> str:
    """Every run's per-layer tables (compare_layers.py's markdown), one section per run."""
    spec = importlib.util.spec_from_file_location("compare_layers", Path(__file__).with_name("compare_layers.py"))
    assert spec is not None and spec.loader is not None
    compare_layers = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = compare_layers  # its dataclasses look their module up
    spec.loader.exec_module(compare_layers)
    lines = [
        "# Per-layer time, TVM against ONNX Runtime (tools/bench_runtime.py --layers, tools/compare_layers.py)",
        "",
        "The deepest baseline artifact and the pruned variant compiled from its database, per run of "
        "bench_runtime (runtime.md has the runs' settings and machine). Layer names are the ONNX exporter's.",
        "",
    ]
    for report in results["runs"]:
        for threads, tables in report.get("layers", {}).items():
            lines += [f"## {run_key(report)}, {threads} thread(s)", ""]
            lines += [compare_layers.markdown(table, title) for title, table in tables.items()]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """TVM/ORT of each baseline against cumulative tuning minutes, one line per model and thread count."""
    import matplotlib.pyplot as plt

    from edgeprune.report.plots import save_png  # sets matplotlib's headless backend

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for report in results["runs"]:
        baseline = report["variants"][0]
        for threads in report["threads"]:
            run = baseline["by_threads"][str(threads)]
            points = [
                (tuning["tuning_seconds"] / 60, run["tvm_vs_onnxruntime"][label])
                for label, tuning in baseline["tuning"].items()
            ]
            axis.plot(*zip(*points, strict=True), marker="o", label=f"{run_key(report)}, {threads} thread(s)")
            for (minutes, ratio), tuning in zip(points, baseline["tuning"].values(), strict=True):
                axis.annotate(f"{tuning['trials_per_task']}/task", (minutes, ratio), fontsize=7)
    axis.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    axis.set(
        title="TVM / ONNX Runtime, unpruned baselines (load: see runtime.md)",
        xlabel="tuning minutes on the device (from an empty database)",
        ylabel="TVM ms / ORT ms",
    )
    axis.legend(fontsize=7)
    figure.tight_layout()
    save_png(figure, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20", help="zoo model (the baseline)")
    parser.add_argument("--input-shape", default="3x32x32")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier of the baseline")
    parser.add_argument(
        "--pruned", help="a saved pruned model (edgeprune prune -o) or a MODEL file; default: narrower stand-in"
    )
    parser.add_argument("--budgets", type=int, nargs="+", default=[16, 64, 128], help="trials per task, ascending")
    parser.add_argument("--pruned-trials", type=int, default=16, help="compile's trials per new task (pruned)")
    parser.add_argument("--strategy", help="tuning.strategy (replay-trace, evolutionary; default: the product's)")
    parser.add_argument("--cost-model", help="tuning.cost_model (random, xgb; default: the product's)")
    parser.add_argument("--task-scheduler", help="tuning.task_scheduler (default: the product's)")
    parser.add_argument(
        "--layout",
        nargs="+",
        help="tuning.layout (NCHW, NCHWc, NCHW8c, ...; default: the product's); "
        "several: each tuned into its own database, all measured in the same interleaved rounds",
    )
    parser.add_argument(
        "--pruned-width",
        type=float,
        default=0.5**0.5,
        help="the stand-in's uniform width when no --pruned is given (default: 0.707, about half the MACs)",
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="per-layer tables (tools/compare_layers.py) of the deepest baseline "
        "and the pruned variant compiled from its database, at each thread count: bench/results/runtime-layers.md",
    )
    parser.add_argument(
        "--no-pruned-from-empty",
        action="store_true",
        help="skip compiling the pruned variant from an empty "
        "database (the lever runs compare the shipped path: the pruned variant reusing the baseline's database)",
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts to measure with")
    parser.add_argument("--seed", type=int, default=0, help="seed of the zoo models' initial weights")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the run's work folder (databases, artifacts, checkpoint) here, so that the same command run "
        "again resumes an interrupted run; default: a temporary folder, removed at the end",
    )
    args = parser.parse_args(argv)
    if args.budgets != sorted(set(args.budgets)):
        parser.error("--budgets must be ascending and distinct")
    return args


def with_onnx(name: str, bundle: Any, work: Path) -> Variant:
    """A variant with its ONNX export written into the run's work folder."""
    from edgeprune.tvmx.export import to_onnx

    onnx = work / f"{name}.onnx"
    onnx.write_bytes(to_onnx(bundle.module, (1, *bundle.input_shape)))
    return Variant(name, bundle, onnx)


def signature(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that decide what a run measures (not where it writes, nor its notes): a checkpoint's key."""
    return {key: value for key, value in vars(args).items() if key not in ("work", "out", "note")}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The whole benchmark with everything it writes (farm state, profiles, ONNX files, tuning databases,
    artifacts, its checkpoint) under `work`; returns the report. Stages the checkpoint has are not rerun."""
    os.environ["EDGEPRUNE_LOCAL_PORT"] = str(free_port())
    os.environ["EDGEPRUNE_STATE_DIR"] = str(work / "state")
    os.environ["EDGEPRUNE_PROFILES_DIR"] = str(work / "profiles")

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgeprune.devices.profile import local_device
    from edgeprune.devices.tuning import TuningConfig
    from edgeprune.models.io import load_model, parse_input_shape

    config = TuningConfig().with_changes(  # the product's defaults where a lever is not named
        trials=args.pruned_trials,
        strategy=args.strategy,
        cost_model=args.cost_model,
        task_scheduler=args.task_scheduler,
    )
    layouts = args.layout or [config.layout]
    torch.manual_seed(args.seed)  # zoo weights are freshly initialised: seeded, runs compare alike
    shape = parse_input_shape(args.input_shape)
    baseline_bundle = load_model(args.model, shape, None, args.width)
    if args.pruned:
        pruned_bundle = load_model(args.pruned, shape)  # the shape serves a model file (path.py:factory)
        summary = pruned_bundle.meta.get("pruning")
        how = f"{summary.get('method')}, target {summary.get('target')}" if summary else "a STAND-IN, not pruned"
        notes = [f"pruned: {args.pruned} ({how})"]
    else:
        stand_in = round(args.width * args.pruned_width, 3)
        pruned_bundle = load_model(args.model, shape, None, stand_in)
        notes = [
            f"pruned: a STAND-IN, not the pruner's output: {args.model} at uniform width {stand_in} (about half "
            f"the MACs of width {args.width}); pass --pruned FILE for a model from `edgeprune prune`"
        ]
    notes += [
        "TVM: time_evaluator on the local RPC farm's server (no RPC time included), as `edgeprune verify` "
        "measures; PyTorch and ONNX Runtime in this process with the same protocol; TVM_NUM_THREADS, "
        "torch.set_num_threads and ORT intra_op_num_threads all set to the thread count",
        "baseline budgets are cumulative: one database deepened (tuning seconds add up), a snapshot per budget",
        "tuning ran with the farm server at TVM's default threads; candidates measured on the device",
        *args.note,
    ]
    variants = [
        with_onnx(name, bundle, work) for name, bundle in (("baseline", baseline_bundle), ("pruned", pruned_bundle))
    ]
    device = local_device()
    checkpoint = Checkpoint(work, signature(args))
    if checkpoint.get("load_before") is None:
        checkpoint.save("load_before", [round(v, 2) for v in os.getloadavg()])
    report: dict[str, Any] = {
        "command": shlex.join(["python", "tools/bench_runtime.py", *sys.argv[1:]]),
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "target": device.target,
            "load_before": checkpoint.get("load_before"),
        },
        "threads": args.threads,
        "budgets": args.budgets,
        "tuning_config": {**config.to_json(), "layout": " vs ".join(layouts)},
    }
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        with device.serving():
            for layout in layouts:
                stage = f"tuning {layout}"
                if checkpoint.get(stage) is not None:
                    restore(variants, checkpoint.get(stage))
                    continue
                suffix = layout if len(layouts) > 1 else ""
                folder = work / layout
                shutil.rmtree(folder, ignore_errors=True)  # what an interrupted try left: tuned again from empty
                layout_config = config.with_changes(layout=layout)
                deep_db = deepen(variants[0], device, args.budgets, layout_config, folder, progress, suffix)
                from_empty = not args.no_pruned_from_empty
                compile_pruned(
                    variants[1], device, deep_db, args.pruned_trials, layout_config, folder, from_empty, suffix
                )
                checkpoint.save(stage, built(variants))
        report["layers"] = {}
        for threads in args.threads:
            measured = checkpoint.get(f"rounds {threads}")
            if measured is None:
                measure(variants, threads, progress)
                checkpoint.save(f"rounds {threads}", {v.name: v.runs[str(threads)] for v in variants})
            else:
                for variant in variants:
                    variant.runs[str(threads)] = measured[variant.name]
            if args.layers:
                tables = checkpoint.get(f"layers {threads}")
                if tables is None:
                    tables = {}
                    for layout in layouts:
                        suffix = layout if len(layouts) > 1 else ""
                        reuse = "tvm_reuse" + (f" {suffix}" if suffix else "")
                        labels = {"baseline": tuned_label(args.budgets[-1], suffix), "pruned": reuse}
                        tables.update(per_layer(variants, labels, threads, progress))
                    checkpoint.save(f"layers {threads}", tables)
                report["layers"][str(threads)] = tables
    import onnxruntime
    import tvm

    report["machine"]["load_after"] = [round(v, 2) for v in os.getloadavg()]
    report["versions"] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "tvm": tvm.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    report["variants"] = [to_json(v) for v in variants]
    report["notes"] = notes
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeprune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args, work)
    except BaseException:
        if args.work:
            sys.stderr.write(f"stopped: the same command resumes it from {work}/checkpoint.json\n")
        raise
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)  # everything the run wrote but its results
    from edgeprune import atomic

    results = merged(report, args.out / "runtime.json")
    atomic.write_json(args.out / "runtime.json", results)
    old = args.out / "runtime.md"
    kept = old.read_text().partition(KEPT)[2] if old.exists() else ""
    atomic.write_text(old, markdown(results) + "\n" + KEPT + (kept or "\n"))
    atomic.write_text(args.out / "runtime-layers.md", layers_markdown(results))
    plot(results, args.out / "runtime.png")
    sys.stderr.write(markdown(results))


if __name__ == "__main__":
    main()
