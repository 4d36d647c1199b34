"""Runtime benchmark on the local device: PyTorch eager, ONNX Runtime, TVM untuned and TVM tuned, same threads.

For a zoo model and a pruned version of it (a saved model from `edgeprune prune` with --pruned, else a
uniformly narrower width with about half the MACs, reported as a stand-in). Goal (issue #5): tuned TVM
latency <= ONNX Runtime's. Results: bench/results/runtime.json and runtime.md.

Every runtime is timed with one protocol: a warm-up run, then repeats each lasting at least MIN_REPEAT_MS
(runs per repeat raised until it does), per-run mean of each repeat; median, half the interquartile range and
minimum reported. TVM runs on the local RPC farm's server through `time_evaluator` (as `verify` measures it);
PyTorch and ONNX Runtime run in this process. The machine is shared, so the runtimes are measured in
interleaved rounds: load that comes and goes hits them all alike. Tuning starts from an empty database, so
the trials reported are all the tuning the kernels got.

    .venv/bin/python tools/bench_runtime.py [--model resnet20] [--trials 8 32] [--threads 1 2] [--pruned FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS = 5
REPEATS_PER_ROUND = 3
MIN_REPEAT_MS = 50
TVM_NUMBER = 10  # time_evaluator's starting runs per repeat (raised to reach MIN_REPEAT_MS)
BASE_RUNTIMES = ("pytorch", "onnxruntime", "tvm_untuned")
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


class LocalRuntime:
    """A callable timed in this process like `time_evaluator` times on the device."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self.run = run
        run()  # warm-up
        self.number = 1
        while True:
            start = time.perf_counter()
            for _ in range(self.number):
                run()
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if elapsed_ms >= MIN_REPEAT_MS:
                break
            self.number = max(self.number * 2, int(self.number * MIN_REPEAT_MS / max(elapsed_ms, 1e-3)) + 1)

    def samples_ms(self) -> list[float]:
        """`REPEATS_PER_ROUND` samples, as `RemoteTimer.samples_ms` gives for a TVM library."""
        out = []
        for _ in range(REPEATS_PER_ROUND):
            start = time.perf_counter()
            for _ in range(self.number):
                self.run()
            out.append((time.perf_counter() - start) * 1e3 / self.number)
        return out


def tuned_label(trials: int) -> str:
    return f"tvm_tuned_{trials}"


@dataclass
class Variant:
    """A model ready to measure: its module, its ONNX, and its TVM artifacts untuned and tuned per budget."""

    name: str
    bundle: Any
    onnx_bytes: bytes
    libraries: dict[str, Path]
    tuning: dict[str, dict[str, Any]]
    runs: dict[str, Any] = field(default_factory=dict)


def prepare(name: str, bundle: Any, device: Any, budgets: list[int], work: Path, progress: Any) -> Variant:
    """Compile the untuned artifact and one tuned artifact per trial budget, each tuned from an empty database
    on the device."""
    from edgeprune.compile.compiler import compile_model
    from edgeprune.tvmx.export import to_onnx

    step = progress.add_task(f"{name}: compile untuned", total=None)
    untuned = compile_model(bundle, device, work / f"{name}-untuned", 0)
    variant = Variant(name, bundle, to_onnx(bundle.module, (1, *bundle.input_shape)), {}, {})
    variant.libraries["tvm_untuned"] = untuned.artifact.library
    for trials in budgets:
        progress.update(step, description=f"{name}: tune {trials}/task on the device", completed=0, total=None)

        def on_trials(done: int, total: int, _best: float | None) -> None:
            progress.update(step, completed=done, total=total)

        label = tuned_label(trials)
        tuned = compile_model(
            bundle, device, work / f"{name}-{label}", trials, work / f"{name}-db-{trials}", on_trials=on_trials
        )
        variant.libraries[label] = tuned.artifact.library
        report = tuned.tuning
        variant.tuning[label] = {
            "trials_per_task": trials,
            "trials": report.trials,
            "failed": report.failed,
            "tasks": report.tasks,
            "seconds": round(report.seconds, 1),
        }
    progress.remove_task(step)
    return variant


def measure(variants: list[Variant], threads: int, progress: Any) -> None:
    """Every runtime of every variant with `threads` threads, in interleaved rounds; fills `variant.runs`."""
    import onnxruntime as ort
    import torch

    from edgeprune.devices import farm
    from edgeprune.devices.base import TimingSettings
    from edgeprune.devices.profile import local_device
    from edgeprune.devices.timing import RemoteTimer, Timing
    from edgeprune.tvmx.export import INPUT_NAME

    os.environ["TVM_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)  # the farm's server inherits it
    torch.set_num_threads(threads)
    device = local_device()
    farm.up(servers=1, port=device.tracker_port, key=device.key)
    try:
        session = device.request_session()
        tvm_timing = TimingSettings(number=TVM_NUMBER, repeat=REPEATS_PER_ROUND, min_repeat_ms=MIN_REPEAT_MS)
        runtimes: dict[tuple[str, str], Any] = {}
        outputs: dict[tuple[str, str], np.ndarray] = {}
        for variant in variants:
            module, x = variant.bundle.module.eval(), variant.bundle.example_input()
            with torch.no_grad():
                expected = module(x).numpy()
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            ort_session = ort.InferenceSession(variant.onnx_bytes, options, providers=["CPUExecutionProvider"])
            feed = {INPUT_NAME: x.numpy()}

            def eager(module: Any = module, x: Any = x) -> Any:
                with torch.no_grad():
                    return module(x)

            runtimes[variant.name, "pytorch"] = LocalRuntime(eager)
            runtimes[variant.name, "onnxruntime"] = LocalRuntime(lambda s=ort_session, f=feed: s.run(None, f))
            outputs[variant.name, "onnxruntime"] = ort_session.run(None, feed)[0]
            for label, library in variant.libraries.items():
                remote_name = f"{variant.name}-{label}{library.suffix}"
                runtimes[variant.name, label] = RemoteTimer(
                    session, device, library, x.numpy(), tvm_timing, remote_name=remote_name
                )
                outputs[variant.name, label] = runtimes[variant.name, label].output
            variant.runs[str(threads)] = {
                "max_abs_diff_vs_pytorch": {
                    label: float(np.max(np.abs(output - expected)))
                    for (name, label), output in outputs.items()
                    if name == variant.name
                }
            }
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in runtimes}
        rounds = progress.add_task(f"{threads} thread(s): interleaved rounds", total=ROUNDS)
        for _ in range(ROUNDS):
            for key, runtime in runtimes.items():
                samples[key] += runtime.samples_ms()
            progress.advance(rounds)
    finally:
        farm.down(device.tracker_port)
    for variant in variants:
        labels = [*BASE_RUNTIMES, *variant.tuning]
        timings = {label: Timing.from_samples(samples[variant.name, label], 0) for label in labels}
        run = variant.runs[str(threads)]
        run["ms"] = {label: t.median_ms for label, t in timings.items()}
        run["spread_ms"] = {label: t.spread_ms for label, t in timings.items()}
        run["min_ms"] = {label: t.min_ms for label, t in timings.items()}
        run["tuned_tvm_vs_onnxruntime"] = {
            label: run["ms"][label] / run["ms"]["onnxruntime"] for label in variant.tuning
        }
        met = [
            variant.tuning[label]["trials_per_task"]
            for label in variant.tuning
            if run["tuned_tvm_vs_onnxruntime"][label] <= 1
        ]
        run["goal_met"] = bool(met)
        run["smallest_budget_meeting_goal"] = min(met) if met else None


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


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Runtime benchmark (tools/bench_runtime.py)",
        "",
        f"{machine['cpu']} ({machine['cores']} cores, TVM target {machine['target']}); load average "
        f"{machine['load_before']} before, {machine['load_after']} after. Per runtime: median of "
        f"{ROUNDS * REPEATS_PER_ROUND} repeats (each >= {MIN_REPEAT_MS} ms, {ROUNDS} interleaved rounds) "
        "+- half the IQR, and the minimum; ms per image, batch 1.",
        "",
    ]
    budgets = report["trials_per_task"]
    columns = [*BASE_RUNTIMES, *(tuned_label(t) for t in budgets)]
    headers = ["PyTorch eager", "ONNX Runtime", "TVM untuned", *(f"TVM tuned {t}/task" for t in budgets)]
    for threads in report["threads"]:
        lines += [
            f"## {threads} thread(s) for every runtime",
            "",
            "| variant | model | MMACs | " + " | ".join(headers) + " | best tuned / ORT |",
            "|---" * (len(headers) + 4) + "|",
        ]
        for row in report["variants"]:
            run = row["by_threads"][str(threads)]
            cells = [f"{run['ms'][k]:.3f} +- {run['spread_ms'][k]:.3f} (min {run['min_ms'][k]:.3f})" for k in columns]
            smallest = run["smallest_budget_meeting_goal"]
            verdict = f"goal met from {smallest}/task" if smallest else "goal missed"
            lines.append(
                f"| {row['variant']} | {row['source']} width {row['width']} {row['input_shape']} | "
                f"{row['macs'] / 1e6:.1f} | " + " | ".join(cells) + f" | "
                f"{min(run['tuned_tvm_vs_onnxruntime'].values()):.2f} ({verdict}) |"
            )
        lines.append("")
    lines += ["| variant | tuning (MetaSchedule replay-trace, candidates measured on the device) |", "|---|---|"]
    for row in report["variants"]:
        for t in row["tuning"].values():
            lines.append(
                f"| {row['variant']} | {t['trials']} trials ({t['trials_per_task']} per task x {t['tasks']} tasks, "
                f"{t['failed']} failed) in {t['seconds']:.0f} s, from an empty database |"
            )
    lines += ["", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20", help="zoo model (the baseline)")
    parser.add_argument("--input-shape", default="3x32x32")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier of the baseline")
    parser.add_argument("--pruned", help="a saved pruned model (edgeprune prune -o); default: narrower stand-in")
    parser.add_argument(
        "--trials", type=int, nargs="+", default=[8, 32], help="MetaSchedule trials per task: one 'TVM tuned' each"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="thread counts to measure with")
    parser.add_argument("--seed", type=int, default=0, help="seed of the zoo models' initial weights")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeprune-bench-"))
    os.environ["EDGEPRUNE_LOCAL_PORT"] = str(free_port())
    os.environ["EDGEPRUNE_STATE_DIR"] = str(work / "state")

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgeprune import atomic
    from edgeprune.devices.profile import local_device
    from edgeprune.models.io import load_model, parse_input_shape

    torch.manual_seed(args.seed)  # zoo weights are freshly initialised: seeded, runs compare alike
    shape = parse_input_shape(args.input_shape)
    baseline = load_model(args.model, shape, None, args.width)
    if args.pruned:
        pruned = load_model(args.pruned)
        summary = pruned.meta.get("pruning") or {}
        notes = [f"pruned: {args.pruned} ({summary.get('method')}, target {summary.get('target')})"]
    else:
        stand_in = round(args.width * 0.5**0.5, 3)
        pruned = load_model(args.model, shape, None, stand_in)
        notes = [
            f"pruned: a STAND-IN, not the pruner's output: {args.model} at uniform width {stand_in} (about half "
            f"the MACs of width {args.width}); pass --pruned FILE for a model from `edgeprune prune`"
        ]
    notes += [
        "TVM: time_evaluator on the local RPC farm's server (no RPC time included), as `edgeprune verify` "
        "measures; PyTorch and ONNX Runtime in this process with the same protocol; TVM_NUM_THREADS, "
        "torch.set_num_threads and ORT intra_op_num_threads all set to the thread count",
        "a shared 2-core machine: other jobs ran during the benchmark; compare within a table",
    ]
    device = local_device()
    report: dict[str, Any] = {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "target": device.target,
            "load_before": [round(v, 2) for v in os.getloadavg()],
        },
        "threads": args.threads,
        "trials_per_task": args.trials,
    }
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True)) as progress:
            with device.serving():  # tuning: the server runs with TVM's default threads (the target's cores)
                variants = [
                    prepare(name, bundle, device, args.trials, work, progress)
                    for name, bundle in (("baseline", baseline), ("pruned", pruned))
                ]
            for threads in args.threads:
                measure(variants, threads, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # artifacts, tuning databases, farm state of this run
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
    atomic.write_json(args.out / "runtime.json", report)
    atomic.write_text(args.out / "runtime.md", markdown(report))
    sys.stderr.write(markdown(report))


if __name__ == "__main__":
    main()
