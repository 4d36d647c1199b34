"""The runtime benchmark leaves nothing behind in the temp folder: its ONNX files and work folder go with the run."""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from rich.progress import Progress

from edgeprune.devices import farm, profile
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_runtime.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_runtime", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's folder, empty, and the environment the benchmark sets, restored after the test."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    for name in ("EDGEPRUNE_LOCAL_PORT", "EDGEPRUNE_STATE_DIR", "EDGEPRUNE_PROFILES_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "1")
    return root


def test_measuring_ort_writes_no_temporary_onnx_folder(
    temp_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _tool()
    monkeypatch.setattr(bench, "ROUNDS", 1)
    monkeypatch.setattr(bench, "MIN_REPEAT_MS", 1)
    device = SimpleNamespace(tracker_port=0, key="k", request_session=lambda: None)
    monkeypatch.setattr(profile, "local_device", lambda: device)
    monkeypatch.setattr(farm, "up", lambda **_: None)
    monkeypatch.setattr(farm, "down", lambda *_: None)
    work = tmp_path / "work"
    work.mkdir()
    variant = bench.with_onnx("baseline", load_model("lenet5", (1, 16, 16), 10, width=0.5), work)
    threads = torch.get_num_threads()
    try:
        with Progress(disable=True) as progress:
            bench.measure([variant], 1, progress)
    finally:
        torch.set_num_threads(threads)
    assert set(variant.runs["1"]["ms"]) == {"pytorch", "onnxruntime"}
    assert variant.onnx.parent == work
    assert list(temp_root.iterdir()) == []


def test_a_run_that_fails_early_still_removes_its_work_folder(temp_root: Path) -> None:
    bench = _tool()
    with pytest.raises(EdgepruneError):
        bench.main(["--model", "no-such-model-here", "--out", str(temp_root.parent / "results")])
    assert list(temp_root.iterdir()) == []


def _report(model: str, ratio: float) -> dict:
    """A run's report as `run` returns it, with one baseline budget measured at one thread count."""
    timing = {"pytorch": 3.0, "onnxruntime": 1.0, "tvm_16": ratio}
    variant = {
        "variant": "baseline",
        "model": model,
        "width": 1.0,
        "input_shape": [3, 32, 32],
        "macs": 4e7,
        "tuning": {"tvm_16": {"trials_per_task": 16, "tuning_seconds": 60.0, "from": "an empty database"}},
        "by_threads": {
            "1": {
                "ms": timing,
                "spread_ms": dict.fromkeys(timing, 0.1),
                "min_ms": timing,
                "tvm_vs_onnxruntime": {"tvm_16": ratio},
            }
        },
    }
    return {
        "command": f"python tools/bench_runtime.py --model {model}",
        "machine": {"cpu": "cpu", "cores": 2, "target": {}, "load_before": [0.5], "load_after": [0.6]},
        "threads": [1],
        "tuning_config": {"strategy": "replay-trace", "cost_model": "random", "task_scheduler": "round-robin"},
        "variants": [variant],
        "notes": [],
    }


def test_results_keep_one_run_per_baseline_model(tmp_path: Path) -> None:
    """Benchmarking a second model adds a section; benchmarking the first again replaces its run."""
    bench = _tool()
    path = tmp_path / "runtime.json"
    for report in (_report("resnet20", 1.5), _report("mobilenetv2", 2.0), _report("resnet20", 1.2)):
        results = bench.merged(report, path)
        path.write_text(json.dumps(results))
    assert [run["variants"][0]["model"] for run in results["runs"]] == ["mobilenetv2", "resnet20"]
    text = bench.markdown(results)
    assert "## mobilenetv2 3x32x32 width 1.0" in text and "## resnet20 3x32x32 width 1.0" in text
    assert "| 1.20 |" in text and "| 1.50 |" not in text
    bench.plot(results, tmp_path / "runtime.png")
    assert (tmp_path / "runtime.png").stat().st_size > 0


def test_runs_of_other_levers_are_kept_beside_each_other_with_their_layer_tables(tmp_path: Path) -> None:
    """A run with another search or layout is another row set (the levers are compared); its per-layer tables
    are written with it."""
    bench = _tool()
    path = tmp_path / "runtime.json"
    lever = _report("resnet20", 0.9)
    lever["tuning_config"] |= {"strategy": "evolutionary", "cost_model": "xgb", "layout": "NCHW16c"}
    row = {"layer": "/conv1/Conv", "op": "Conv", "tvm_kernel": "fused_conv2d_NCHWc", "macs": 10**6, "trials": 64}
    table = {
        "threads": 1,
        "rounds": 3,
        "load_average": [1.0],
        "layers": [row | {"tvm_us": 9.0, "ort_us": 10.0}],
        "tvm_other_kernels_us": 1.0,
        "ort_other_nodes_us": 2.0,
        "tvm_overhead_us": 3.0,
        "ort_overhead_us": 4.0,
        "tvm_total_us": 13.0,
        "ort_total_us": 16.0,
    }
    lever["layers"] = {"1": {"baseline tvm_64": table}}
    for report in (_report("resnet20", 1.5), lever):
        results = bench.merged(report, path)
        path.write_text(json.dumps(results))
    assert len(results["runs"]) == 2
    text = bench.markdown(results)
    assert "evolutionary + xgb, NCHW16c" in text and "replay-trace + random, NCHW" in text
    layers = bench.layers_markdown(results)
    assert "| /conv1/Conv | fused_conv2d_NCHWc | 9.0 | 10.0 | 0.90 | 1.00 |" in layers
    assert "**0.81**" in layers  # end to end 13 / 16
