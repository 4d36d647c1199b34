"""The pruning benchmark's own pieces: the Torch-Pruning peer and the results table (the benchmark itself is a tool)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from edgeprune.models.io import load_model

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_pruning.py"


def _tool():
    spec = importlib.util.spec_from_file_location("bench_pruning", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_metapruner_prunes_globally_and_keeps_the_classes() -> None:
    bench = _tool()
    bundle = load_model("resnet20", (1, 8, 8), 10, width=0.25)
    before = sum(p.numel() for p in bundle.module.parameters())
    pruned = bench.metapruner(bundle, 0.5, min_keep=0.1)
    after = sum(p.numel() for p in pruned.parameters())
    assert after < 0.7 * before
    assert sum(p.numel() for p in bundle.module.parameters()) == before  # the bundle is left as it was
    assert pruned(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_table_reports_legr_margins_over_peer_and_uniform() -> None:
    bench = _tool()
    base = {"dataset": "digits", "model": "resnet20", "target_fraction": 0.7, "baseline_accuracy": 0.99}
    rows = [
        {**base, "method": m, "accuracy": a, "measured_ms": 0.2, "target_ms": 0.21, "meets_target": True}
        | {"flops": 1e6, "params": 1e4, "seconds": 10.0}
        for m, a in (("legr", 0.95), ("torch-pruning", 0.93), ("uniform", 0.955))
    ]
    failed = {**base, "method": "pai", "reason": "budget out of reach", "plan": {"width": 1.0}}
    text = bench.markdown(rows, [failed, {**failed, "model": "mobilenetv2"}])
    assert "legr vs torch-pruning: +2.00 points" in text
    assert "legr vs uniform: -0.50 points" in text
    assert text.count("| resnet20 | 0.7x |") == 3
    resnet, mobilenet = text.split("## mobilenetv2 on digits")  # a model with failures only gets a section too
    assert resnet.count("pai found no model") == 1 and mobilenet.count("pai found no model") == 1


def test_a_success_replaces_the_failure_recorded_for_its_row(tmp_path: Path) -> None:
    bench = _tool()
    out = tmp_path / "pruning.json"
    runner = bench.Bench.__new__(bench.Bench)  # the bookkeeping only: no device, no farm
    runner.plan, runner.out, runner.rows, runner.failures = bench.QUICK, out, [], []
    runner.record_failure("resnet20", "pai", 0.3, "budget out of reach")
    assert [f["reason"] for f in bench.read_failures(out)] == ["budget out of reach"]
    assert "pai found no model" in out.with_suffix(".md").read_text()
    row = {"dataset": bench.QUICK.data, "model": "resnet20", "method": "pai", "target_fraction": 0.3}
    row |= {"plan": asdict(bench.QUICK), "baseline_accuracy": 0.9, "accuracy": 0.8, "measured_ms": 0.1}
    row |= {"target_ms": 0.2, "meets_target": True, "flops": 1e6, "params": 1e4, "seconds": 1.0}
    runner.record(row)
    assert bench.read_failures(out) == []
    assert "found no model" not in out.with_suffix(".md").read_text()


def test_iterative_methods_spend_their_round_epochs_from_the_common_budget() -> None:
    bench = _tool()
    assert [bench.iterative_rounds("aiap", b) for b in (1, 2, 3, 5)] == [1, 2, 3, 3]
    assert bench.iterative_rounds("iap", 3) == 3 and bench.iterative_rounds("legr", 3) == 1
