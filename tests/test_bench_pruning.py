"""The pruning benchmark's own pieces: the Torch-Pruning peer and the results table (the benchmark itself is a tool)."""

from __future__ import annotations

import importlib.util
import sys
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
    text = bench.markdown(rows)
    assert "legr vs torch-pruning: +2.00 points" in text
    assert "legr vs uniform: -0.50 points" in text
    assert text.count("| resnet20 | 0.7x |") == 3
