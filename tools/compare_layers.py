"""Where the time goes, layer by layer: a compiled artifact's TVM kernels beside ONNX Runtime's nodes (issue 36).

The artifact folder (`edgeprune compile -o DIR`, device `local`) holds the shipped library and the ONNX file it
was compiled from; both run here, on this host, at `--threads`:

- TVM: the Relax VM runs the network once with an instrument that records each kernel call and its arguments,
  then `time_evaluator` times every kernel alone on those arguments (the VM has no profiler in TVM 0.27);
- ORT: the same ONNX file with ONNX Runtime's profiling on, its per-node kernel times over the runs;
- each the median of many short repeats or runs, so that on a shared machine the preempted ones drop out;
- both end to end, so what the kernels do not account for (VM calls and allocations, ORT's session) is a row.

Rounds alternate TVM and ORT (load that comes and goes hits both); each figure is the median over rounds.
Layers are the ONNX graph's Conv/Gemm/MatMul nodes, named as the exporter named them from the PyTorch modules.
A TVM kernel is a layer's when it takes that layer's weights (prepacked or not); an ORT node is a layer's when
it is that node or one fused onto it (ORT names a fused node after its output tensor).
Trials: the tuning records the artifact's database holds for the kernel's workload.

    python tools/compare_layers.py ARTIFACT_DIR [--threads 1] [--out bench/results/layers-NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LAYER_OPS = ("Conv", "Gemm", "MatMul")  # ONNX nodes that are a network layer
ROUNDS = 3
ORT_RUNS = 50  # profiled runs per round (after warm-up)
ORT_WARM_UP = 5
# TVM: the median of many short repeats, like ORT's per-run median: on a shared machine a repeat that is
# preempted is an outlier the median drops (long repeats would all carry some of it)
TVM_NUMBER = 3
TVM_REPEAT = 25


@dataclass
class Layer:
    name: str  # the ONNX node's name (the exporter's, from the PyTorch module path), e.g. /conv1/Conv
    op: str
    macs: int
    weight: np.ndarray  # its weights as the ONNX file holds them (BatchNorm folded in)
    tvm_kernel: str = ""
    trials: int | None = None
    tvm_us: list[float] = field(default_factory=list)  # one value per round
    ort_us: list[float] = field(default_factory=list)


@dataclass
class Graph:
    """The ONNX graph's layers in order, and for every node and tensor the layer whose work it is part of."""

    layers: list[Layer]
    owner: dict[str, str]  # node name or tensor name -> layer name


def onnx_graph(onnx_file: Path) -> Graph:
    """The layers with their multiply-accumulates (ONNX shape inference), and which layer each other node
    belongs to: an elementwise node after a layer (its bias, activation, residual add) is the nearest layer
    it consumes, the latest in graph order when two feed it (that is the one a fused kernel carries)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_file)))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]
    }
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers, owner, order = [], {}, {}
    for index, node in enumerate(model.graph.node):
        order[node.name] = index
        if node.op_type in LAYER_OPS and node.input[1] in weights:
            out, weight = shapes.get(node.output[0], []), weights[node.input[1]]
            if node.op_type == "Conv":
                macs = int(np.prod(out)) * int(np.prod(weight.shape[1:]))  # per output: cin/groups x kh x kw
            else:
                macs = int(np.prod(out)) * int(weight.shape[0] if _b_as_stored(node) else weight.shape[-1])
            layers.append(Layer(node.name, node.op_type, macs, weight))
            owner[node.name] = node.name
        else:
            feeding = [owner[i] for i in node.input if i in owner]
            if feeding:
                owner[node.name] = max(feeding, key=lambda name: order[name])
        if node.name in owner:
            for output in node.output:
                owner[output] = owner[node.name]
    return Graph(layers, owner)


def _b_as_stored(node: Any) -> bool:
    """Whether a Gemm multiplies by B as stored (transB=0: B is in x out, the reduction is its first dim)."""
    return not any(a.name == "transB" and a.i == 1 for a in node.attribute)


def tvm_calls(library: Path, x: np.ndarray) -> tuple[Any, list[tuple[str, list[np.ndarray]]]]:
    """The loaded library and the kernels one run calls, in order, each with a copy of its arguments."""
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(str(library))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    calls: list[tuple[str, list[np.ndarray]]] = []

    def record(_func: Any, symbol: str, before: bool, _ret: Any, *args: Any) -> int:
        if before and not symbol.startswith("vm.builtin."):
            calls.append((symbol, [a.numpy() for a in args if hasattr(a, "numpy")]))
        return 0  # go on with the call

    vm.set_instrument(record)
    vm["main"](tvm.runtime.tensor(x))
    return lib, calls


def kernel_timer(lib: Any, symbol: str, args: list[np.ndarray]) -> Any:
    """A callable giving the kernel's time alone (us; the median repeat), from whichever module of the library
    holds it."""
    import tvm

    tensors = [tvm.runtime.tensor(a) for a in args]
    for module in [lib, *lib.imports]:
        try:
            evaluator = module.time_evaluator(symbol, tvm.cpu(), number=TVM_NUMBER, repeat=TVM_REPEAT)
        except Exception:  # noqa: BLE001,S112 - not in this module: try the next
            continue
        return lambda: evaluator(*tensors).median * 1e6
    raise LookupError(f"kernel {symbol} is in no module of {lib}")


def network_timer(lib: Any, x: np.ndarray) -> Any:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(lib, tvm.cpu())
    evaluator = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=TVM_REPEAT)
    data = tvm.runtime.tensor(x)
    return lambda: evaluator(data).median * 1e6


def ort_profile(onnx_file: Path, x: np.ndarray, threads: int, runs: int) -> tuple[dict[str, float], float]:
    """ONNX Runtime's kernel time per node (us) and its run time (us), each the median of `runs` profiled
    runs after a warm-up: a median, as on a shared machine some runs are preempted (a node's time then jumps
    several-fold, which a mean would spread over the whole table)."""
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="edgeprune-ort-") as folder:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(ORT_WARM_UP + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    node_us: dict[str, list[float]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node_us.setdefault(name.removesuffix("_kernel_time"), []).append(float(event["dur"]))
    model_runs = [float(e["dur"]) for e in events if e.get("name") == "model_run"]
    return (
        {node: statistics.median(us[ORT_WARM_UP:] or us) for node, us in node_us.items()},
        statistics.median(model_runs[ORT_WARM_UP:]),
    )


def ort_layer(node: str, owner: dict[str, str]) -> str | None:
    """The layer an ORT node computes: ORT keeps a node's ONNX name, or names a fused NCHWc node after its
    output tensor (`/relu/Relu_output_0_nchwc`); None for its own reorders and for work outside the layers."""
    return owner.get(node, owner.get(node.removesuffix("_nchwc")))


def match_kernels(layers: list[Layer], calls: list[tuple[str, list[np.ndarray]]]) -> list[int]:
    """For each layer, the index of the TVM kernel call that takes its weights: the same values, possibly
    prepacked into a blocked layout (a permutation), so compared sorted."""

    def fingerprint(array: np.ndarray) -> tuple[int, bytes]:
        return array.size, np.sort(array.astype("float32"), axis=None).tobytes()

    by_print: dict[tuple[int, bytes], list[int]] = {}
    for index, (_, args) in enumerate(calls):
        for arg in args:
            by_print.setdefault(fingerprint(arg), []).append(index)
    matched = []
    for layer in layers:
        candidates = by_print.get(fingerprint(layer.weight), [])
        if not candidates:
            raise SystemExit(f"no TVM kernel takes the weights of layer {layer.name}")
        matched.append(candidates.pop(0))
    return matched


def trials_by_kernel(artifact: Any, onnx_bytes: bytes) -> dict[str, int]:
    """Tuning records in the artifact's database per kernel name (empty when it was built untuned)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.tvmx.export import onnx_to_relax

    db_dir = artifact.manifest["tuning"].get("database")
    if not db_dir or not (Path(db_dir) / "database_tuning_record.json").exists():
        return {}
    layout = artifact.manifest["tuning"].get("layout", "NCHW")  # artifacts before layouts were NCHW
    mod = onnx_to_relax(onnx_bytes, layout)
    db = ms.database.JSONDatabase(work_dir=db_dir)
    counts = {}
    for task in ms.relax_integration.extract_tasks(mod, tvm.target.Target(artifact.target)):
        workload = task.dispatched[0]
        if db.has_workload(workload):
            counts[task.task_name] = len(db.get_top_k(db.commit_workload(workload), 1_000_000))
    return counts


def compare(artifact_dir: Path, threads: int, rounds: int = ROUNDS) -> dict[str, Any]:
    """The per-layer table of one artifact at `threads` (set TVM_NUM_THREADS before TVM starts its pool)."""
    from edgeprune.compile.artifacts import ONNX_FILE, load_artifact

    artifact = load_artifact(artifact_dir)
    onnx_file = artifact.folder / ONNX_FILE
    x, _ = artifact.reference()
    x = np.ascontiguousarray(x, dtype="float32")
    graph = onnx_graph(onnx_file)
    layers = graph.layers
    lib, calls = tvm_calls(artifact.library, x)
    trials = trials_by_kernel(artifact, onnx_file.read_bytes())
    layer_calls = match_kernels(layers, calls)
    kernels = [(s, kernel_timer(lib, s, a)) for s, a in calls]
    for layer, index in zip(layers, layer_calls, strict=True):
        layer.tvm_kernel = kernels[index][0]
        layer.trials = trials.get(layer.tvm_kernel)
    by_name = {layer.name: layer for layer in layers}
    other = {"tvm_kernels": [], "ort_nodes": [], "tvm_total": [], "ort_total": []}
    network = network_timer(lib, x)
    rest_calls = set(range(len(kernels))) - set(layer_calls)
    for _ in range(rounds):
        times = [timer() for _, timer in kernels]  # one timing per call, in call order
        for layer, index in zip(layers, layer_calls, strict=True):
            layer.tvm_us.append(times[index])
        other["tvm_kernels"].append(sum(times[i] for i in rest_calls))
        other["tvm_total"].append(network())
        nodes, ort_total = ort_profile(onnx_file, x, threads, ORT_RUNS)
        per_layer = {layer.name: 0.0 for layer in layers}
        rest = 0.0
        for node, us in nodes.items():
            owner = ort_layer(node, graph.owner)
            if owner is None:
                rest += us
            else:
                per_layer[owner] += us
        for name, us in per_layer.items():
            by_name[name].ort_us.append(us)
        other["ort_nodes"].append(rest)
        other["ort_total"].append(ort_total)
    median = {k: statistics.median(v) for k, v in other.items()}
    rows = [
        {
            "layer": layer.name,
            "op": layer.op,
            "tvm_kernel": layer.tvm_kernel,
            "tvm_us": statistics.median(layer.tvm_us),
            "ort_us": statistics.median(layer.ort_us),
            "macs": layer.macs,
            "trials": layer.trials,
        }
        for layer in layers
    ]
    tvm_layers, ort_layers = sum(r["tvm_us"] for r in rows), sum(r["ort_us"] for r in rows)
    return {
        "artifact": str(artifact.folder),
        "threads": threads,
        "rounds": rounds,
        "tuning": artifact.manifest["tuning"].get("config", {}),
        "layers": rows,
        "tvm_other_kernels_us": median["tvm_kernels"],
        "ort_other_nodes_us": median["ort_nodes"],
        "tvm_total_us": median["tvm_total"],
        "ort_total_us": median["ort_total"],
        "tvm_overhead_us": median["tvm_total"] - tvm_layers - median["tvm_kernels"],
        "ort_overhead_us": median["ort_total"] - ort_layers - median["ort_nodes"],
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def markdown(table: dict[str, Any], title: str) -> str:
    """The table as markdown: one row per layer, then what is outside the layers, then the totals."""

    def ratio(tvm: float, ort: float) -> str:
        return f"{tvm / ort:.2f}" if ort > 0 else ""

    lines = [
        f"### {title}",
        "",
        f"{table['threads']} thread(s); median of {table['rounds']} interleaved rounds; load average after "
        f"{table['load_average']}. TVM kernels timed alone (time_evaluator), ORT per node from its profiler.",
        "",
        "| layer | TVM kernel | TVM us | ORT us | TVM/ORT | MMACs | TVM GMAC/s | trials |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table["layers"]:
        rate = row["macs"] / row["tvm_us"] / 1e3 if row["tvm_us"] > 0 else 0.0
        lines.append(
            f"| {row['layer']} | {row['tvm_kernel']} | {row['tvm_us']:.1f} | {row['ort_us']:.1f} | "
            f"{ratio(row['tvm_us'], row['ort_us'])} | {row['macs'] / 1e6:.2f} | {rate:.1f} | "
            f"{'' if row['trials'] is None else row['trials']} |"
        )
    tvm_layers = sum(r["tvm_us"] for r in table["layers"])
    ort_layers = sum(r["ort_us"] for r in table["layers"])
    lines += [
        f"| all layers | | {tvm_layers:.1f} | {ort_layers:.1f} | {ratio(tvm_layers, ort_layers)} | | | |",
        f"| other kernels / nodes (layout transforms, pooling, elementwise) | | {table['tvm_other_kernels_us']:.1f}"
        f" | {table['ort_other_nodes_us']:.1f} | | | | |",
        f"| overhead (end to end minus kernels: VM calls, allocation / ORT session) | | "
        f"{table['tvm_overhead_us']:.1f} | {table['ort_overhead_us']:.1f} | | | | |",
        f"| **end to end** | | **{table['tvm_total_us']:.1f}** | **{table['ort_total_us']:.1f}** | "
        f"**{ratio(table['tvm_total_us'], table['ort_total_us'])}** | | | |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="an artifact folder from `edgeprune compile` for device local")
    parser.add_argument("--threads", type=int, default=1, help="TVM and ORT threads (default 1)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved TVM/ORT rounds")
    parser.add_argument("--title", help="the table's heading (default: the artifact folder)")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md (default: print the markdown)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeprune import atomic
    from edgeprune.errors import EdgepruneError

    try:
        table = compare(args.artifact, args.threads, args.rounds)
    except EdgepruneError as exc:
        raise SystemExit(f"error: {exc}") from exc
    text = markdown(table, args.title or str(args.artifact))
    if args.out is None:
        sys.stdout.write(text)
        return
    atomic.write_json(args.out.with_suffix(".json"), table)
    atomic.write_text(args.out.with_suffix(".md"), text)
    sys.stderr.write(text)


if __name__ == "__main__":
    main()
