"""Every method reaches its budget on real data; every zoo model prunes; results are reproducible by seed;
a saved pruned model reloads with identical outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeprune.data import Dataset, load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle, load_model, load_saved, save_model
from edgeprune.pruning import METHODS, PruneSettings, SearchSettings, TrainSettings, cost, parse_target, prune_bundle
from edgeprune.pruning.methods import prune_module
from edgeprune.pruning.run import train_bundle

QUICK = dict(
    finetune=TrainSettings(epochs=1),
    search=SearchSettings(population=4, sample_size=2, generations=2, steps=3, val_samples=128),
    rounds=2,
    round_epochs=0,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


@pytest.fixture(scope="module")
def trained(digits: Dataset) -> ModelBundle:
    bundle, report = train_bundle(load_model("resnet20", (1, 8, 8), 10, width=0.25), digits, TrainSettings(epochs=3))
    assert report["accuracy"] > 0.5 and bundle.trained and bundle.meta["dataset"] == "digits"
    return bundle


@pytest.mark.parametrize("method", METHODS)
def test_every_method_meets_its_budget(method: str, trained: ModelBundle, digits: Dataset, tmp_path: Path) -> None:
    settings = PruneSettings(method=method, search_file=tmp_path / "learned.json", **QUICK)
    pruned, summary = prune_bundle(trained, digits, parse_target("flops", "50%"), settings)
    assert summary["within_budget"] and summary["flops"] <= summary["target_flops"]
    assert summary["target_flops"] == pytest.approx(0.5 * summary["original_flops"])
    assert (summary["flops"], summary["params"]) == cost.measure(pruned.module, (1, 8, 8))
    assert pruned.module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert 0.0 <= summary["accuracy_after"] <= 1.0 and summary["accuracy_before"] == trained.meta["accuracy"]
    assert any(row["after"] < row["before"] for row in summary["layers"])
    assert summary["layers"][-1]["after"] == 10  # never the classifier's outputs
    assert pruned.meta["pruning"]["method"] == method
    searches = METHODS.get(method).searches  # legr and legr-knapsack
    assert (tmp_path / "learned.json").is_file() == searches
    assert (summary["search_evaluations"] == 6) == searches
    assert summary["normalize"] == ("mean" if method == "global" else "none")  # each method's default


def test_global_ranks_mean_normalised_scores_unless_told_otherwise(trained: ModelBundle, digits: Dataset) -> None:
    def counts(**normalize: str) -> list[int]:
        settings = PruneSettings(method="global", **{**QUICK, "finetune": TrainSettings(epochs=0)}, **normalize)
        _, summary = prune_bundle(trained, digits, parse_target("flops", "40%"), settings)
        return [row["after"] for row in summary["layers"]]

    assert counts() == counts(normalize="mean") != counts(normalize="none")
    assert PruneSettings(method="legr").normalizer == "none" and PruneSettings(normalize="mean").normalizer == "mean"
    with pytest.raises(EdgepruneError, match="unknown normalisation 'max'"):
        PruneSettings(method="global", normalize="max").check()


@pytest.mark.parametrize(
    ("arch", "shape", "width"),
    [
        ("lenet5", (1, 16, 16), 0.5),
        ("resnet56", (1, 8, 8), 0.25),
        ("mobilenetv2", (1, 8, 8), 0.25),
        ("vgg11", (1, 16, 16), 0.25),
    ],
)
def test_every_zoo_model_prunes_to_a_params_target(arch: str, shape: tuple, width: float) -> None:
    data = load_dataset("digits", shape, seed=0)
    module = load_model(arch, shape, 10, width=width).module
    outcome = prune_module(
        module, data, parse_target("params", "60%"), PruneSettings(method="global", finetune=TrainSettings(epochs=0))
    )
    params = cost.measure(outcome.module, shape)[1]
    assert params <= outcome.budget.target < cost.measure(module, shape)[1]
    assert outcome.module(torch.zeros(2, *shape)).shape == (2, 10)


def test_same_seed_same_pruned_model(trained: ModelBundle, digits: Dataset) -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        settings = PruneSettings(method="legr", seed=seed, **QUICK)
        return prune_bundle(trained, digits, parse_target("flops", "60%"), settings)[0].module.state_dict()

    first, second = run(0), run(0)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_saved_pruned_model_reloads_with_identical_outputs(
    trained: ModelBundle, digits: Dataset, tmp_path: Path
) -> None:
    pruned, _ = prune_bundle(trained, digits, parse_target("params", "50%"), PruneSettings(method="global", **QUICK))
    path = save_model(pruned, tmp_path / "pruned.pt")
    reloaded = load_saved(path)
    inputs = digits.prepare(digits.test.images[:16])
    with torch.no_grad():
        torch.testing.assert_close(reloaded.module.eval()(inputs), pruned.module.eval()(inputs), rtol=0, atol=0)
    assert reloaded.meta["pruning"]["params"] == cost.measure(reloaded.module, (1, 8, 8))[1]


def test_a_model_within_budget_is_left_unchanged(trained: ModelBundle, digits: Dataset) -> None:
    pruned, summary = prune_bundle(trained, digits, parse_target("params", "1G"), PruneSettings(**QUICK))
    assert summary["unchanged"] and "already meets" in summary["notes"][0]
    assert summary["params"] == summary["original_params"] and summary["finetune_epochs"] == 0
