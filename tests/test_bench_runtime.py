"""The runtime benchmark leaves nothing behind in the temp folder: its ONNX files and work folder go with the run."""

from __future__ import annotations

import contextlib
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


def test_a_work_folder_holding_another_run_is_refused(tmp_path: Path) -> None:
    bench = _tool()
    bench.Checkpoint(tmp_path, {"model": "resnet20", "threads": [1]}).save("rounds 1", {"baseline": 1.0})
    assert bench.Checkpoint(tmp_path, {"model": "resnet20", "threads": [1]}).get("rounds 1") == {"baseline": 1.0}
    with pytest.raises(SystemExit, match="threads"):
        bench.Checkpoint(tmp_path, {"model": "resnet20", "threads": [1, 2]})


def test_an_interrupted_run_resumes_without_tuning_again_and_keeps_its_rows(
    temp_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted in its second thread count's rounds, the same command run again neither tunes nor measures
    the first thread count again: that row is the one measured before the interruption."""
    bench = _tool()
    calls: list[str] = []

    def deepen(baseline, _device, budgets, _config, folder, *_rest):  # noqa: ANN001, ANN202
        calls.append("tune")
        label = bench.tuned_label(budgets[-1])
        baseline.libraries[label] = baseline.artifacts[label] = folder / "baseline.so"
        baseline.tuning[label] = {"trials_per_task": budgets[-1], "tuning_seconds": 60.0, "from": "an empty database"}
        return folder / "db"

    def compile_pruned(pruned, _device, _db, trials, _config, folder, *_rest):  # noqa: ANN001, ANN202
        calls.append("compile")
        pruned.libraries["tvm_reuse"] = pruned.artifacts["tvm_reuse"] = folder / "pruned.so"
        pruned.tuning["tvm_reuse"] = {"trials_per_task": trials, "tuning_seconds": 1.0, "from": "the baseline's"}

    def measure(variants, threads, _progress):  # noqa: ANN001, ANN202
        calls.append(f"rounds {threads}")
        if calls.count("rounds 2") == 1:
            raise KeyboardInterrupt
        for variant in variants:
            ms = {"pytorch": 3.0, "onnxruntime": 1.0} | dict.fromkeys(variant.libraries, float(len(calls)))
            variant.runs[str(threads)] = {
                "ms": ms,
                "spread_ms": dict.fromkeys(ms, 0.1),
                "min_ms": ms,
                "tvm_vs_onnxruntime": {label: ms[label] for label in variant.libraries},
            }

    device = SimpleNamespace(target={"kind": "llvm"}, serving=contextlib.nullcontext)
    monkeypatch.setattr(profile, "local_device", lambda: device)
    monkeypatch.setattr(bench, "deepen", deepen)
    monkeypatch.setattr(bench, "compile_pruned", compile_pruned)
    monkeypatch.setattr(bench, "measure", measure)
    work, out = tmp_path / "work", tmp_path / "results"
    argv = ["--model", "lenet5", "--input-shape", "1x16x16", "--budgets", "32", "--threads", "1", "2"]
    with pytest.raises(KeyboardInterrupt):
        bench.main([*argv, "--work", str(work), "--out", str(out)])
    assert not out.exists() and (work / "checkpoint.json").exists()
    with pytest.raises(SystemExit, match="threads"):  # another run in the same folder: refused
        bench.main([*argv[:-1], "--work", str(work), "--out", str(out)])
    bench.main([*argv, "--work", str(work), "--out", str(out)])
    assert calls == ["tune", "compile", "rounds 1", "rounds 2", "rounds 2"]
    run = json.loads((out / "runtime.json").read_text())["runs"][0]
    baseline = run["variants"][0]["by_threads"]
    assert baseline["1"]["ms"]["tvm_32"] == 3.0 and baseline["2"]["ms"]["tvm_32"] == 5.0
    assert list(temp_root.iterdir()) == []
