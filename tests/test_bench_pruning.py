"""The pruning benchmark's own pieces: the Torch-Pruning peer and the results table (the benchmark itself is a tool)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from edgeprune.models.io import load_model
from edgeprune.pruning import TrainSettings

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
    runner.record_failure("resnet20", "pai", 0.3, 0, "budget out of reach")
    assert [f["reason"] for f in bench.read_failures(out)] == ["budget out of reach"]
    assert "pai found no model" in out.with_suffix(".md").read_text()
    row = {"dataset": bench.QUICK.data, "model": "resnet20", "method": "pai", "target_fraction": 0.3, "seed": 0}
    row |= {"plan": asdict(bench.QUICK), "baseline_accuracy": 0.9, "accuracy": 0.8, "measured_ms": 0.1}
    row |= {"target_ms": 0.2, "meets_target": True, "flops": 1e6, "params": 1e4, "seconds": 1.0}
    runner.record(row)
    assert bench.read_failures(out) == []
    assert "found no model" not in out.with_suffix(".md").read_text()


def test_iterative_methods_spend_their_round_epochs_from_the_common_budget() -> None:
    bench = _tool()
    assert [bench.iterative_rounds("aiap", b) for b in (1, 2, 3, 5)] == [1, 2, 3, 3]
    assert bench.iterative_rounds("iap", 3) == 3 and bench.iterative_rounds("legr", 3) == 1


def seed_rows(bench, method: str, accuracies: list[float], plan=None) -> list[dict]:
    plan = asdict(plan or bench.QUICK)
    base = {"dataset": "digits", "model": "resnet20", "method": method, "target_fraction": 0.5, "plan": plan}
    return [
        base
        | {"seed": seed, "accuracy": accuracy, "baseline_accuracy": 0.95, "measured_ms": 0.1 * (1 + seed / 10)}
        | {"target_ms": 0.11, "meets_target": True, "flops": 1e6, "params": 1e4, "seconds": 5.0}
        | {"search_seconds": 3.0, "prune_seconds": 4.0, "compile_seconds": 20.0, "finetune_seconds": 1.0}
        for seed, accuracy in enumerate(accuracies)
    ]


def test_table_gives_mean_and_std_over_seeds_and_paired_margins(tmp_path: Path) -> None:
    bench = _tool()
    rows = seed_rows(bench, "legr", [0.90, 0.92, 0.94]) + seed_rows(bench, "torch-pruning", [0.89, 0.90, 0.93])
    text = bench.markdown(rows, [])
    legr = next(line for line in text.splitlines() if "| legr |" in line)
    assert "| 3 | 92.00% ± 2.00 |" in legr and "| 3/3 |" in legr
    assert "100.0% (min 90.9%)" in legr  # measured / target: 0.10, 0.11, 0.12 ms of 0.11 ms
    assert "legr vs torch-pruning: +1.33 points (mean of 3 seeds, std 0.58)" in text  # differences 1, 2, 1
    assert "unpruned test accuracy 95.00% ± 0.00, 3 seed(s)" in text
    out = tmp_path / "pruning.json"
    bench.write_report(rows, out, [])
    assert out.with_suffix(".png").stat().st_size > 1000 and out.with_suffix(".md").read_text() == text


def test_a_row_is_done_only_under_the_same_conditions(tmp_path: Path) -> None:
    from dataclasses import replace

    bench = _tool()
    runner = bench.Bench.__new__(bench.Bench)  # the bookkeeping only: no device, no farm
    runner.plan, runner.out, runner.failures = bench.QUICK, tmp_path / "pruning.json", []
    runner.rows = seed_rows(bench, "legr", [0.9, 0.8])
    assert runner.done("resnet20", "legr", 0.5, 1) and not runner.done("resnet20", "legr", 0.5, 2)
    runner.plan = replace(bench.QUICK, methods=("legr",), seeds=(0, 1, 2))  # which rows to make: still done
    assert runner.done("resnet20", "legr", 0.5, 0)
    runner.plan = replace(bench.QUICK, slack=0.0)  # how they are made: not done, and made again replaces
    assert not runner.done("resnet20", "legr", 0.5, 0)
    runner.record(seed_rows(bench, "legr", [0.7], runner.plan)[0])
    assert sorted((r["seed"], r["accuracy"]) for r in runner.rows) == [(0, 0.7), (1, 0.8)]
    assert runner.done("resnet20", "legr", 0.5, 0) and not runner.done("resnet20", "legr", 0.5, 1)


def test_a_row_from_before_a_plan_field_existed_counts_as_made_without_it(tmp_path: Path) -> None:
    from dataclasses import replace

    bench = _tool()
    runner = bench.Bench.__new__(bench.Bench)
    runner.plan, runner.out, runner.failures = bench.QUICK, tmp_path / "pruning.json", []
    runner.rows = seed_rows(bench, bench.PEER, [0.9])
    del runner.rows[0]["plan"]["peer_window"]  # recorded before the field
    assert runner.done("resnet20", bench.PEER, 0.5, 0)
    runner.plan = replace(bench.QUICK, peer_window=0.1)
    assert not runner.done("resnet20", bench.PEER, 0.5, 0)


def test_the_peers_ratio_predicted_by_the_table_is_the_smallest_that_fits() -> None:
    from edgeprune.pruning.cost import measure

    class MacsTable:  # a stand-in table: latency proportional to MACs
        def predict_ms(self, module: torch.nn.Module, shape: tuple[int, int, int]) -> float:
            return measure(module, shape)[0] / 1e6

    bench = _tool()
    runner = bench.Bench.__new__(bench.Bench)
    runner.plan = bench.QUICK
    bundle = load_model("resnet20", (1, 8, 8), 10, width=0.25)
    table, shape = MacsTable(), bundle.input_shape
    full = table.predict_ms(bundle.module, shape)
    ratio = runner.predicted_peer_ratio(bundle, table, 2 * full, 0.5)  # measured twice the table: the same share
    assert table.predict_ms(bench.metapruner(bundle, ratio, 0.1), shape) <= 0.5 * full
    assert table.predict_ms(bench.metapruner(bundle, ratio - 0.01, 0.1), shape) > 0.5 * full


def test_rows_from_before_seeds_count_as_their_plans_seed() -> None:
    bench = _tool()
    assert bench.seed_of({"plan": {"seed": 3}}) == 3 and bench.seed_of({"seed": 2, "plan": {}}) == 2
    assert bench.seed_of({}) == 0


def test_seeds_and_slack_from_the_command_line() -> None:
    bench = _tool()
    plan = bench.plan_from(bench.parse_args(["--quick", "--seeds", "2,0,2", "--slack", "0"]))
    assert plan.seeds == (2, 0) and plan.slack == 0.0 and plan.data == "digits"
    assert bench.plan_from(bench.parse_args([])).seeds == (0, 1, 2)
    assert bench.plan_from(bench.parse_args([])).methods == ("legr", "legr-knapsack", "global", "uniform", bench.PEER)
    for bad in (["--seeds", "0,x"], ["--seeds", "-1"], ["--slack", "1.0"]):
        with pytest.raises(SystemExit):
            bench.plan_from(bench.parse_args(bad))


def test_method_variants_are_methods_of_their_own() -> None:
    bench = _tool()
    knapsack = bench.method_variant("legr-knapsack-tau20-iter3")
    assert knapsack == ("legr-knapsack", {"fitness": "tau-steps", "tau": 20}, {"steps": 3})
    assert bench.method_variant("legr-distill5") == ("legr", {"fitness": "distill", "tau": 5}, {})
    assert bench.method_variant("global-mean-iter2") == ("global", {}, {"normalize": "mean", "steps": 2})
    assert bench.scheduled("legr-knapsack-iter3") and not bench.scheduled("legr-knapsack")
    assert bench.method_variant("legr-steps10") == ("legr", {"steps": 10}, {})
    assert bench.method_variant("legr-probe") == ("legr", {"fitness": "probe"}, {})
    assert bench.method_variant("legr-final4-mean") == ("legr", {"finalists": 4}, {"normalize": "mean"})
    assert bench.method_variant("global") == ("global", {}, {})
    assert bench.method_variant("global-mean-grid1") == ("global", {}, {"normalize": "mean", "channel_step": 1})
    assert bench.method_variant("legr-grid4-steps3") == ("legr", {"steps": 3}, {"channel_step": 4})
    assert bench.method_variant(bench.PEER) == (bench.PEER, {}, {})
    for unknown in ("global-steps3", "uniform-grid0", "legr-fast", "magnitude-mean", "iap-iter3", "legr-iter1"):
        assert bench.method_variant(unknown) == (unknown, {}, {})
    plan = bench.plan_from(bench.parse_args(["--methods", "legr-steps3", "legr-probe"]))
    assert plan.methods == ("legr-steps3", "legr-probe")
    for bad in (["--methods", "legr-stepsx"], ["--methods", "legr-fast"]):
        with pytest.raises(SystemExit):
            bench.plan_from(bench.parse_args(bad))


def test_a_new_search_default_redoes_legr_rows_only(tmp_path: Path) -> None:
    from dataclasses import replace

    bench = _tool()
    runner = bench.Bench.__new__(bench.Bench)  # the bookkeeping only: no device, no farm
    runner.plan, runner.out, runner.failures = bench.QUICK, tmp_path / "pruning.json", []
    runner.rows = seed_rows(bench, "legr", [0.9]) + seed_rows(bench, "global", [0.9])
    runner.plan = replace(bench.QUICK, search_steps=bench.QUICK.search_steps + 3)
    assert runner.done("resnet20", "global", 0.5, 0) and not runner.done("resnet20", "legr", 0.5, 0)


def test_every_seed_prunes_one_converged_baseline() -> None:
    """Issue 31: the full plan's baseline is trained once (SGD with crops and flips on the whole training split),
    and the seeds replicate pruning and fine-tuning on it, each in a work folder of its own."""
    bench = _tool()
    full = bench.FULL
    assert full.tag("resnet20", 0) != full.tag("resnet20", 1)
    assert full.tag("resnet20", 1).startswith(full.baseline_tag("resnet20"))
    assert full.baseline_tag("resnet20") == "fashion-mnist-native-resnet20-w1.0-lNone-sgd+aug-e12-s0"
    settings = full.train_settings("resnet20")
    assert (settings.recipe, settings.augment, settings.epochs, settings.lr) == ("sgd", True, 12, 0.05)
    assert full.train_settings("mobilenetv2").epochs == 15  # its own epochs, in its own cache name
    assert full.baseline_tag("mobilenetv2") == "fashion-mnist-native-mobilenetv2-w1.0-lNone-sgd+aug-e15-s0"
    quick = bench.QUICK.train_settings("resnet20")
    assert quick == TrainSettings(epochs=bench.QUICK.train_epochs)  # as it always was
    text = bench.markdown(seed_rows(bench, "legr", [0.9, 0.8], full), [])
    assert "(one baseline, sgd+aug, 12 epochs: unpruned test accuracy 95.00%; 2 seed(s))" in text


def test_rows_on_the_old_baselines_are_made_again(tmp_path: Path) -> None:
    bench = _tool()
    runner = bench.Bench.__new__(bench.Bench)
    runner.plan, runner.out, runner.failures = bench.FULL, tmp_path / "pruning.json", []
    runner.rows = [seed_rows(bench, "legr", [0.9], bench.FULL)[0] | {"dataset": "fashion-mnist"}]
    assert runner.done("resnet20", "legr", 0.5, 0)
    for field in ("train_recipe", "train_limit"):
        del runner.rows[0]["plan"][field]  # a row from before: 10 Adam epochs on the fine-tunes' 6000 images
    assert not runner.done("resnet20", "legr", 0.5, 0)


def test_the_search_benchmark_scores_the_pruning_benchmarks_baseline(tmp_path: Path, monkeypatch) -> None:
    """bench_search --baseline pruning reads the one converged baseline bench_pruning caches, and says how to
    make it when it is missing."""
    search_tool = _search_tool()
    monkeypatch.setattr(search_tool, "CACHE", tmp_path)
    with pytest.raises(SystemExit, match=r"baselines/fashion-mnist-native-resnet20-w1.0-lNone-sgd\+aug.*--train-only"):
        search_tool.baseline(search_tool.Plan(baseline="pruning"), "resnet20")


def test_a_new_round_score_redoes_edgeprunes_rows_not_the_peers(tmp_path: Path) -> None:
    from dataclasses import replace

    bench = _tool()
    runner = bench.Bench.__new__(bench.Bench)
    runner.plan, runner.out, runner.failures = bench.QUICK, tmp_path / "pruning.json", []
    runner.rows = seed_rows(bench, "global", [0.9]) + seed_rows(bench, bench.PEER, [0.9])
    runner.plan = replace(bench.QUICK, round_steps=20)
    assert runner.done("resnet20", bench.PEER, 0.5, 0) and not runner.done("resnet20", "global", 0.5, 0)
    assert bench.FULL.round_steps == 20


@pytest.mark.usefixtures("one_thread")
def test_rounds_are_scored_after_training_steps_on_a_copy(digits) -> None:
    """The score that chooses among the closed loop's rounds trains a copy of the round's network (the same
    batches for every round of a seed), so the network kept starts its fine-tune as every method's does."""
    bench = _tool()
    torch.manual_seed(0)
    module = load_model("resnet20", (1, 8, 8), 10, width=0.25).module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    calibration = list(digits.batches(digits.train, 128))[:2]
    steps = bench.score_batches(digits, 20, seed=0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(steps, bench.score_batches(digits, 20, seed=0), strict=True))
    trained = bench.round_score(module, digits, steps, calibration)
    assert trained == bench.round_score(module, digits, steps, calibration)  # deterministic for a seed
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())  # the round's network untouched
    untrained = bench.round_score(module, digits, [], calibration)  # how rounds were scored before
    assert trained > untrained + 0.1  # 20 steps take a fresh network well past its untrained score


def _search_tool():
    _tool()  # registered as bench_pruning, the name bench_search imports it by
    spec = importlib.util.spec_from_file_location("bench_search", TOOL.with_name("bench_search.py"))
    search_tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = search_tool
    spec.loader.exec_module(search_tool)
    return search_tool


@pytest.mark.usefixtures("one_thread")
def test_the_search_benchmark_ranks_against_the_pruning_benchmarks_fine_tune_and_round_score(digits) -> None:
    """bench_search --finetune-epochs N fine-tunes each candidate as a bench_pruning row does (seeded as it is: the
    same accuracy twice), and --round-steps N scores candidates by the closed loop's round score."""
    from edgeprune.pruning import groups

    search_tool, bench = _search_tool(), sys.modules["bench_pruning"]
    module = load_model("resnet20", (1, 8, 8), 10, width=0.25).module.eval()
    setup = search_tool.Setup.__new__(search_tool.Setup)  # no cached baseline: a small network on digits
    setup.plan = search_tool.Plan(finetune_epochs=1, round_steps=2, test_images=100, fitnesses=("tau-steps",), tau=2)
    setup.model, setup.module, setup.data = "resnet20", module, digits
    setup.structure = groups.analyze(module, (1, 8, 8))
    sizes = setup.structure.sizes()
    setup.candidates = [{g: list(range(max(1, n * share // 4))) for g, n in sizes.items()} for share in (3, 1)]
    first, again = (search_tool.correlation(setup, lambda _: None) for _ in range(2))
    assert [r["accuracy"] for r in first["candidates"]] == [r["accuracy"] for r in again["candidates"]]
    assert "round2" in first["spearman"] and "pruning benchmark's fine-tune (1 Adam epochs" in first["finetune"]
    pruned = groups.prune(module, setup.structure, setup.candidates[0])
    expected = bench.round_score(pruned, digits, bench.score_batches(digits, 2, 0), bench.calibration_batches(digits))
    assert first["candidates"][0]["round2"] == -expected
