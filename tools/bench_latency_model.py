"""Benchmark: does the latency table predict what randomly pruned networks measure on the device?

On `local` (a real TVM RPC farm with 2 servers on 127.0.0.1, state and tables in --workdir):
1. profile each model (serial), keeping the phase timings;
2. speed-up of the device farm: the first model's entries measured again into scratch tables on 1 server,
   on 2 (--servers-parallel), and on 2 without the local host lock (as boards would run); values compared;
3. >= 20 randomly pruned variants per model, channel counts drawn on the table's grid (as the pruner keeps
   them; Torch-Pruning's dependency graph does the surgery), each compiled twice and measured on the device:
   as `compile` ships it (records of the device's tuning database) and with TVM's default build (untuned);
4. the interpolation between grid points: random off-grid layer shapes (aligned to half a vector, and not)
   measured as entries of their own and compared with the model's interpolated value.
Every step resumes from --workdir. Results: bench/results/latency_model.json and latency_model.md.

    .venv/bin/python tools/bench_latency_model.py [--variants 20] [--models resnet20:1.0,mobilenetv2:1.0]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_farm() -> Any:
    """A local farm with 2 servers on a free port; retried, as two servers starting together sometimes race
    for the same port (TVM's server binds, then listens) and one of them dies."""
    from edgeprune.devices import farm
    from edgeprune.devices.profile import local_device
    from edgeprune.errors import EdgepruneError

    for attempt in range(3):
        os.environ["EDGEPRUNE_LOCAL_PORT"] = str(_free_port())
        try:
            farm.up(servers=2, port=local_device().tracker_port)
            return local_device()
        except EdgepruneError as exc:
            console.print(f"farm start failed (attempt {attempt + 1} of 3): {exc.message}")
    raise SystemExit("could not start a local farm with 2 servers")


ROUNDS = 5  # alternations of reference, tuned and default build per variant


def _wait_for_quiet(max_load: float, timeout_s: float = 900.0) -> float:
    """Wait (up to `timeout_s`) until the 1-minute load average is at most `max_load`; returns the load then.
    The machine is shared: measuring while other work saturates the cores measures that work."""
    deadline = time.monotonic() + timeout_s
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(10)
    return round(os.getloadavg()[0], 2)


def _progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console)


def _stats(errors_pct: list[float]) -> dict[str, float]:
    """mean |error|, p95 |error| and the share within +-10% of a list of signed percentage errors."""
    if not errors_pct:
        return {}
    absolute = sorted(abs(e) for e in errors_pct)
    p95 = absolute[min(len(absolute) - 1, math.ceil(0.95 * len(absolute)) - 1)]
    return {
        "n": len(absolute),
        "mean_abs_pct": round(statistics.fmean(absolute), 2),
        "p95_abs_pct": round(p95, 2),
        "max_abs_pct": round(absolute[-1], 2),
        "within_10pct": round(sum(a <= 10.0 for a in absolute) / len(absolute), 3),
        "mean_signed_pct": round(statistics.fmean(errors_pct), 2),
    }


class Checkpoint:
    """The benchmark's results so far, saved after every step so a re-run continues where it stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, *keys: str) -> Any:
        node: Any = self.data
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def put(self, value: Any, *keys: str) -> None:
        from edgeprune import atomic

        node = self.data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        atomic.write_json(self.path, self.data)


def _use_profiles(folder: Path) -> None:
    os.environ["EDGEPRUNE_PROFILES_DIR"] = str(folder)


def profile_phase(bundle: Any, device: Any, args: argparse.Namespace) -> dict[str, Any]:
    from edgeprune.profiling.profiler import profile_model

    with _progress() as progress:
        tasks: dict[str, Any] = {}

        def show(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(f"{bundle.name}: {phase}", total=max(total, 1))
            progress.update(tasks[phase], completed=done, total=max(total, 1))

        report = profile_model(bundle, device, trials=args.trials, on_progress=show)
    return report.to_json()


SPEEDUP_RUNS = (
    ("1 server", False, None),
    ("2 servers", True, None),  # local: builds never overlap measurements (the servers share this machine's cores)
    ("2 servers, no host lock", True, False),  # as on separate boards: builds overlap measurements
)


def speedup_phase(bundle: Any, device: Any, workdir: Path) -> dict[str, Any]:
    """The model's entries measured again into scratch tables on 1 server, then on 2."""
    from edgeprune.profiling.entries import measure_entries
    from edgeprune.profiling.grid import anchors, plan
    from edgeprune.profiling.lut import LatencyTable
    from edgeprune.profiling.signature import LayerExtractor

    layers = LayerExtractor().layers(bundle.module, bundle.input_shape)
    planned = list(plan(layers, device.channel_step).values())
    first = LatencyTable.load(device).entries  # type: ignore[union-attr]
    runs = {}
    for label, parallel, exclusive in SPEEDUP_RUNS:
        table = LatencyTable.new(device)
        table.path = workdir / f"speedup-{label.replace(' ', '_').replace(',', '')}.json"
        console.print(f"speed-up run: {label}")
        start = time.perf_counter()
        anchor_of = anchors(layers, planned, device.tuning.conv_layout(device.target, device.channel_step))
        servers = measure_entries(device, table, planned, anchor_of, parallel=parallel, exclusive=exclusive)
        seconds = time.perf_counter() - start
        diffs = [abs(e["median_ms"] / first[k]["median_ms"] - 1) * 100 for k, e in table.entries.items()]
        runs[label] = {
            "servers": servers,
            "seconds": round(seconds, 1),
            "median_abs_diff_from_profile_pct": round(statistics.median(diffs), 1),
        }
    base = runs[SPEEDUP_RUNS[0][0]]["seconds"]
    for run in runs.values():
        run["speedup"] = round(base / run["seconds"], 2)
    return {"model": bundle.name, "entries": len(planned), "runs": runs}


def random_variant(bundle: Any, steps: dict[str, int], fixed: set[str], seed: int) -> tuple[Any, dict[str, int]]:
    """A copy of the model with every channel group cut to a random point of its grid (Torch-Pruning surgery)."""
    import torch_pruning as tp

    from edgeprune.profiling.grid import grid_values

    rng = np.random.default_rng(seed)
    module = copy.deepcopy(bundle.module).eval()
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=torch.zeros(1, *bundle.input_shape))
    names = {m: n for n, m in module.named_modules()}
    ignored = [module.get_submodule(n) for n in fixed]
    kept: dict[str, int] = {}
    groups = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=[torch.nn.Conv2d, torch.nn.Linear]))
    for group in groups:
        root, handler = group[0].dep.target.module, group[0].dep.handler
        cut = [
            names[it.dep.target.module]
            for it in group
            if it.dep.target.module in names and getattr(it.dep.handler, "__name__", "") == "prune_out_channels"
        ]
        step = 1
        for name in cut:
            step = math.lcm(step, steps.get(name, 1))
        full = root.out_channels if isinstance(root, torch.nn.Conv2d) else root.out_features
        keep = int(rng.choice(grid_values(full, step)))
        kept[names[root]] = keep
        if keep < full:
            drop = sorted(int(i) for i in rng.choice(full, full - keep, replace=False))
            graph.get_pruning_group(root, handler, idxs=drop).prune()
    return module, kept


def _builds(module: Any, input_shape: tuple[int, ...], device: Any, trials: int, folder: Path, stem: str) -> dict:
    """The network built as `compile` ships it (tuning only what the database lacks) and with TVM's default
    build (no database: convolutions run as untuned default schedules); returns library paths + tuning."""
    import tvm

    from edgeprune.tvmx import tune
    from edgeprune.tvmx.export import to_relax

    mod = to_relax(module, (1, *input_shape)).mod
    tuning = tune.tune(mod, device, trials)
    tuned = device.export(tune.build(mod, device), folder, stem=f"{stem}_tuned")
    default = device.export(tvm.compile(mod, target=device.tvm_target()), folder, stem=f"{stem}_default")
    return {"tuned": tuned, "default": default, "tasks_tuned": tuning.tasks - tuning.tasks_reused}


def variants_phase(bundle: Any, device: Any, checkpoint: Checkpoint, args: argparse.Namespace) -> None:
    """Random variants on the grid: predicted vs measured, each measured in alternation with the unpruned
    network on one session, so the load of the moment is recorded beside every measurement."""
    from edgeprune.devices.base import TimingSettings
    from edgeprune.devices.timing import Timing, time_alternating
    from edgeprune.profiling.latency import LatencyModel
    from edgeprune.profiling.lut import LatencyTable
    from edgeprune.profiling.signature import LayerExtractor

    model = LatencyModel.for_device(device)
    layers, structure = LayerExtractor().extract(bundle.module, bundle.input_shape)
    calibration = LatencyTable.load(device).networks[structure]  # type: ignore[union-attr]
    fixed = {layer.name for layer in layers if layer.slot.out_fixed}
    steps = model.channel_steps(bundle.module, bundle.input_shape)
    full_sum = model.estimate(bundle.module, bundle.input_shape).layer_sum_ms
    inputs = bundle.example_input().numpy()
    with tempfile.TemporaryDirectory() as folder, _progress() as progress:
        reference = _builds(bundle.module, bundle.input_shape, device, args.trials, Path(folder), "reference")
        task = progress.add_task(f"{bundle.name}: variants", total=args.variants)
        for index in range(args.variants):
            key = f"{args.seed}-{index}"
            if checkpoint.get("variants", bundle.name, key) is None:
                module, kept = random_variant(bundle, steps, fixed, seed=args.seed * 1000 + index)
                estimate = model.estimate(module, bundle.input_shape)
                built = _builds(module, bundle.input_shape, device, args.trials, Path(folder), f"v{index}")
                items = [
                    ("reference", reference["tuned"], inputs),
                    ("tuned", built["tuned"], inputs),
                    ("default", built["default"], inputs),
                ]
                load = _wait_for_quiet(args.max_load)
                settings = TimingSettings(repeat=args.repeat)
                rounds = time_alternating(device.request_session(), device, items, ROUNDS, settings)
                timings = {name: Timing.from_samples(sum(runs, []), 10) for name, runs in rounds.items()}
                ratios = [
                    statistics.median(variant) / statistics.median(ref)
                    for variant, ref in zip(rounds["tuned"], rounds["reference"], strict=True)
                ]
                record = {
                    "kept": kept,
                    "predicted_ms": estimate.predicted_ms,
                    "layer_sum_ms": estimate.layer_sum_ms,
                    "offset_prediction_ms": estimate.layer_sum_ms + calibration["measured_ms"] - full_sum,
                    "exact": all(row.exact for row in estimate.layers),
                    "macs": sum(row.macs for row in estimate.layers),
                    "tuned_ms": timings["tuned"].median_ms,
                    "tuned_spread_ms": timings["tuned"].spread_ms,
                    "default_build_ms": timings["default"].median_ms,
                    "reference_now_ms": timings["reference"].median_ms,
                    "reference_at_calibration_ms": calibration["measured_ms"],
                    "ratio_to_reference": statistics.median(ratios),
                    "load_1min": load,
                    "kernels_tuned_for_build": built["tasks_tuned"],
                }
                checkpoint.put(record, "variants", bundle.name, key)
            progress.advance(task)


def interpolation_phase(
    bundle: Any, device: Any, checkpoint: Checkpoint, workdir: Path, args: argparse.Namespace
) -> None:
    """Off-grid layer shapes measured as entries of their own vs the model's interpolation."""
    from edgeprune.devices.base import TimingSettings
    from edgeprune.profiling.entries import measure_entries
    from edgeprune.profiling.grid import PlannedEntry, anchors
    from edgeprune.profiling.latency import LatencyModel
    from edgeprune.profiling.lut import LatencyTable
    from edgeprune.profiling.signature import LayerExtractor

    if checkpoint.get("interpolation", bundle.name) is not None:
        return
    model = LatencyModel.for_device(device)
    layers = LayerExtractor().layers(bundle.module, bundle.input_shape)
    steps = model.channel_steps(bundle.module, bundle.input_shape)
    rng = np.random.default_rng(args.seed)
    half_vector = max(1, device.channel_step // 2)
    off_grid = {
        (layer.name, aligned): [
            c
            for c in range(steps[layer.name] + 1, layer.out_channels)
            if c % steps[layer.name]
            and (c % half_vector == 0) == aligned
            and not c % (layer.family.outputs_per_input or 1)
        ]
        for layer in layers
        if layer.name in steps
        for aligned in (True, False)
    }
    picks: list[tuple[Any, int, int]] = []
    for index in range(args.offgrid):
        aligned = index % 2 == 0  # half on multiples of half a vector, half anywhere
        candidates = [layer for layer in layers if off_grid.get((layer.name, aligned))]
        layer = candidates[int(rng.integers(len(candidates)))]
        cout = int(rng.choice(off_grid[(layer.name, aligned)]))
        ratio = layer.family.outputs_per_input  # depthwise, a channel multiplier: the input follows the output
        if ratio:
            cin = cout // ratio
        elif layer.slot.in_fixed:
            cin = layer.in_channels
        else:  # in the upper half of the input width, aligned like cout
            choices = range(-(-layer.in_channels // 2), layer.in_channels + 1)
            cin = int(rng.choice([c for c in choices if (c % half_vector == 0) == aligned] or [layer.in_channels]))
        picks.append((layer, cin, cout))
    scratch = LatencyTable.new(device)
    scratch.path = workdir / f"offgrid-{bundle.name}.json"
    planned = [PlannedEntry(layer.family, cin, cout) for layer, cin, cout in picks]
    unique = list({p.key: p for p in planned}.values())
    with _progress() as progress:
        task = progress.add_task(f"{bundle.name}: off-grid entries", total=len(unique))
        measure_entries(
            device,
            scratch,
            unique,
            anchors(layers, unique, device.tuning.conv_layout(device.target, device.channel_step)),
            TimingSettings(repeat=args.repeat),
            on_entry=lambda: progress.advance(task),
        )
    rows = []
    for layer, cin, cout in picks:
        estimate = model.estimate(bundle.module, bundle.input_shape, channels={layer.name: (cin, cout)})
        predicted = next(r.predicted_ms for r in estimate.layers if r.name == layer.name)
        measured = scratch.entries[PlannedEntry(layer.family, cin, cout).key]["median_ms"]
        rows.append(
            {
                "layer": layer.name,
                "in": cin,
                "out": cout,
                "aligned": cout % half_vector == 0,
                "interpolated_ms": predicted,
                "measured_ms": measured,
            }
        )
    checkpoint.put(rows, "interpolation", bundle.name)


def _error(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured


def summarise(checkpoint: Checkpoint) -> dict[str, Any]:
    """Errors against the tuned build (what the table models) and the default build; the same against the
    tuned build rescaled to the load of the calibration moment (measured / reference now * reference then)."""
    summary: dict[str, Any] = {"models": {}}
    everything: list[dict[str, Any]] = []
    for name, variants in (checkpoint.get("variants") or {}).items():
        rows = list(variants.values())
        everything += rows
        references = [r["reference_now_ms"] for r in rows]
        summary["models"][name] = {
            "variants": len(rows),
            "all_on_grid": all(r["exact"] for r in rows),
            "kernels_tuned_at_build": sum(r["kernels_tuned_for_build"] for r in rows),
            "tuned_ms_range": [round(min(r["tuned_ms"] for r in rows), 4), round(max(r["tuned_ms"] for r in rows), 4)],
            "vs_tuned_build": _stats([_error(r["predicted_ms"], r["tuned_ms"]) for r in rows]),
            "vs_tuned_build_load_normalised": _stats([_error(r["predicted_ms"], _normalised(r)) for r in rows]),
            "vs_default_build": _stats([_error(r["predicted_ms"], r["default_build_ms"]) for r in rows]),
            "layer_sum_only_vs_tuned_build": _stats([_error(r["layer_sum_ms"], r["tuned_ms"]) for r in rows]),
            "constant_offset_vs_tuned_build": _stats([_error(r["offset_prediction_ms"], r["tuned_ms"]) for r in rows]),
            "noise_unpruned_network": {
                "load_1min_range": [min(r["load_1min"] for r in rows), max(r["load_1min"] for r in rows)],
                "calibration_ms": rows[0]["reference_at_calibration_ms"],
                "during_variants_ms_min_median_max": [
                    round(min(references), 4),
                    round(statistics.median(references), 4),
                    round(max(references), 4),
                ],
            },
        }
    for name, rows in (checkpoint.get("interpolation") or {}).items():
        for label, aligned in (("aligned", True), ("unaligned", False)):
            summary["models"].setdefault(name, {})[f"interpolation_off_grid_{label}"] = _stats(
                [_error(r["interpolated_ms"], r["measured_ms"]) for r in rows if r["aligned"] == aligned]
            )
    summary["all_models"] = {
        "vs_tuned_build": _stats([_error(r["predicted_ms"], r["tuned_ms"]) for r in everything]),
        "vs_tuned_build_load_normalised": _stats([_error(r["predicted_ms"], _normalised(r)) for r in everything]),
        "vs_default_build": _stats([_error(r["predicted_ms"], r["default_build_ms"]) for r in everything]),
    }
    return summary


def _normalised(row: dict[str, Any]) -> float:
    """The variant's time at the load of the calibration moment: its median ratio to the unpruned network
    over rounds measured in alternation, times the unpruned network at calibration."""
    return row["ratio_to_reference"] * row["reference_at_calibration_ms"]


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Latency model benchmark (`tools/bench_latency_model.py`)",
        "",
        f"Device `local`: {env['target']}, TVM {env['tvm']}, {env['cores']} cores shared with other work; "
        f"{result['date']}.",
        "",
        "**What the table models:** the MetaSchedule-tuned kernels `compile` ships. Each entry runs the record the "
        "device's tuning database holds for that exact shape; a shape without one gets the tuned schedule of its "
        "layer family's full-width layer re-applied (tile sizes adapted), measured, and committed to the database, so "
        "a network pruned on the grid compiles to exactly the measured kernels. Errors are signed "
        "100*(predicted-measured)/measured over randomly pruned variants on the grid.",
        "",
        "| model | variants | against | mean abs err | p95 abs err | within +-10% |",
        "|---|---|---|---|---|---|",
    ]
    labels = (
        ("tuned build (`compile`); calibration: ratio (shipped)", "vs_tuned_build"),
        ("tuned build, load-normalised", "vs_tuned_build_load_normalised"),
        ("tuned build; calibration: none", "layer_sum_only_vs_tuned_build"),
        ("tuned build; calibration: constant offset", "constant_offset_vs_tuned_build"),
        ("default build (untuned)", "vs_default_build"),
    )
    for name, data in result["summary"]["models"].items():
        for label, key in labels:
            s = data.get(key) or {}
            if s:
                lines.append(
                    f"| {name} | {data['variants']} | {label} | {s['mean_abs_pct']}% | {s['p95_abs_pct']}% | "
                    f"{s['within_10pct']:.0%} |"
                )
    lines += [
        "",
        "Load-normalised: each variant was measured in alternation with the unpruned network on one session "
        f"({ROUNDS} rounds); its time is the median per-round ratio to the unpruned network times the unpruned "
        "network at calibration. This removes the drift of the machine's load (other work on its 2 cores) between "
        "profiling and measuring, not the model's error.",
        "",
        "Noise of this machine (unpruned network, ms):",
        "",
    ]
    for name, data in result["summary"]["models"].items():
        noise = data.get("noise_unpruned_network")
        if noise:
            lines.append(
                f"- {name}: {noise['calibration_ms']} at calibration; min/median/max during the variants "
                f"{noise['during_variants_ms_min_median_max']} (1-min load average {noise['load_1min_range']}); "
                "kernels tuned at build: "
                f"{data['kernels_tuned_at_build']}"
            )
    lines += [
        "",
        "Interpolation between grid points: single layers at off-grid channel counts, measured as entries of their "
        "own (schedule re-applied like any entry) vs interpolated. Aligned: out channels a multiple of half the "
        "vector width; unaligned: any other count (tile sizes lose the vector width there).",
        "",
    ]
    for name, data in result["summary"]["models"].items():
        for label in ("aligned", "unaligned"):
            s = data.get(f"interpolation_off_grid_{label}")
            if s:
                lines.append(
                    f"- {name}, {label}: {s['n']} shapes, mean abs err {s['mean_abs_pct']}%, "
                    f"p95 {s['p95_abs_pct']}%, within +-10% {s['within_10pct']:.0%}, "
                    f"mean signed {s['mean_signed_pct']}%"
                )
    lines += ["", "Profiling cost:", ""]
    for name, report in result["profiles"].items():
        lines.append(
            f"- {name}: {report['entries_total']} entries, {report['seconds']:.0f} s in total "
            f"(phases, s: {report['phase_seconds']}), {report['tuning_trials']} tuning trials"
        )
    speed = result.get("speedup")
    if speed:
        lines += ["", f"Device farm, the {speed['entries']} entries of {speed['model']} measured again:", ""]
        lines += ["| run | servers | seconds | speed-up | median abs diff from the profile |", "|---|---|---|---|---|"]
        for label, run in speed["runs"].items():
            lines.append(
                f"| {label} | {run['servers']} | {run['seconds']} | {run['speedup']}x | "
                f"{run['median_abs_diff_from_profile_pct']}% |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20:1.0,mobilenetv2:1.0", help="zoo:width,... at 3x32x32")
    parser.add_argument("--variants", type=int, default=20, help="randomly pruned variants per model")
    parser.add_argument("--offgrid", type=int, default=20, help="off-grid layer shapes per model")
    parser.add_argument("--trials", type=int, default=16, help="tuning trials per task (as `profile` and `compile`)")
    parser.add_argument("--repeat", type=int, default=7, help="time_evaluator repeats of each measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-load", type=float, default=2.5, help="wait until the 1-min load average is at most this (max 15 min)"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edgeprune-bench-latency")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--skip-speedup", action="store_true")
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    main_profiles = workdir / "profiles"
    os.environ["EDGEPRUNE_STATE_DIR"] = str(workdir / "state")
    _use_profiles(main_profiles)

    from edgeprune.devices import farm
    from edgeprune.models.io import load_model
    from edgeprune.profiling.lut import tvm_version

    device = _start_farm()
    checkpoint = Checkpoint(workdir / "checkpoint.json")
    started = time.perf_counter()
    try:
        bundles = []
        for spec in args.models.split(","):
            name, _, width = spec.partition(":")
            bundle = load_model(name, (3, 32, 32), 10, width=float(width or 1.0))
            bundle.meta["arch"] = f"{name}-w{width or 1.0}"
            bundles.append(bundle)
        for bundle in bundles:
            if checkpoint.get("profiles", bundle.name) is None:
                _wait_for_quiet(args.max_load)
                checkpoint.put(profile_phase(bundle, device, args), "profiles", bundle.name)
        if not args.skip_speedup and checkpoint.get("speedup") is None:
            checkpoint.put(speedup_phase(bundles[0], device, workdir), "speedup")
        for bundle in bundles:
            variants_phase(bundle, device, checkpoint, args)
            interpolation_phase(bundle, device, checkpoint, workdir, args)
    finally:
        farm.down(device.tracker_port)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "environment": {
            "target": device.target,
            "tvm": tvm_version(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
        },
        "settings": {k: str(v) for k, v in vars(args).items()},
        "seconds_this_run": round(time.perf_counter() - started, 1),
        "summary": summarise(checkpoint),
        "profiles": checkpoint.get("profiles"),
        "speedup": checkpoint.get("speedup"),
        "variants": checkpoint.get("variants"),
        "interpolation": checkpoint.get("interpolation"),
    }
    from edgeprune import atomic

    atomic.write_json(args.out / "latency_model.json", result)
    atomic.write_text(args.out / "latency_model.md", markdown(result))
    console.print(markdown(result))


if __name__ == "__main__":
    main()
