"""The search's fitness kinds (issue 31, item 2): registered classes, selectable by name, the training ones
("tau-steps", "distill") deterministic for a seed, bit for bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model
from edgeprune.pruning import criteria, groups, ranking
from edgeprune.pruning.budget import bind
from edgeprune.pruning.finetune import TrainSettings, initialize, train
from edgeprune.pruning.fitness import FITNESSES, describe
from edgeprune.pruning.search import SearchSettings, search
from edgeprune.pruning.trainer import OwnLoop
from edgeprune.targets import parse_target

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module

SMALL = SearchSettings(population=4, sample_size=2, generations=2, batch_size=32, calibration=2, val_samples=128)


@pytest.fixture(scope="module")
def net(digits: Dataset) -> tuple[nn.Module, groups.Structure]:
    """A ResNet-20 (width 0.25) trained 2 epochs on digits: quick, and with BatchNorm for adaptive BN to act on."""
    module = load_model("resnet20", (1, 8, 8), 10, width=0.25).module
    initialize(module, 0)
    train(module, digits, TrainSettings(epochs=2), torch.Generator().manual_seed(0))
    return module.eval(), groups.analyze(module, (1, 8, 8))


def halves(structure: groups.Structure, offset: int = 0) -> dict[str, list[int]]:
    """Every group keeps half its channels, starting at `offset`."""
    return {
        name: sorted((offset + i) % group.size for i in range(max(1, group.size // 2)))
        for name, group in structure.groups.items()
    }


def scores_of(net, digits, settings: SearchSettings, seed: int) -> list[float]:
    module, structure = net
    fitness = OwnLoop(digits).search_fitness(module, structure, settings, np.random.default_rng(seed), None)
    return [fitness.score(halves(structure, offset)) for offset in (0, 1, 3)]


def test_the_kinds_are_registered_by_name() -> None:
    assert list(FITNESSES) == ["adaptive-bn", "probe", "tau-steps", "distill"]
    assert SearchSettings().fitness == "adaptive-bn" and SearchSettings().tau == 20
    assert describe("distill") == "KL from the unpruned net" and describe("metric") == "minus your metric"
    with pytest.raises(EdgepruneError, match="unknown search fitness 'accuracy'.*tau-steps"):
        SearchSettings(fitness="accuracy").check()
    with pytest.raises(EdgepruneError, match="--tau must be >= 0"):
        SearchSettings(tau=-1).check()


@pytest.mark.parametrize("kind", ["tau-steps", "distill"])
def test_a_training_fitness_is_deterministic_for_a_seed(net, digits: Dataset, kind: str) -> None:
    settings = replace(SMALL, fitness=kind, tau=3)
    first = scores_of(net, digits, settings, seed=0)
    assert first == scores_of(net, digits, settings, seed=0)  # bit for bit
    assert all(np.isfinite(first)) and len(set(first)) == 3  # the candidates differ, and so do their scores
    assert scores_of(net, digits, settings, seed=1) != first  # other rows: other training, other scores


def test_tau_steps_at_tau_zero_is_adaptive_bn(net, digits: Dataset) -> None:
    adaptive = scores_of(net, digits, SMALL, seed=0)
    assert scores_of(net, digits, replace(SMALL, fitness="tau-steps", tau=0), seed=0) == adaptive
    trained = scores_of(net, digits, replace(SMALL, fitness="tau-steps", tau=5), seed=0)
    assert trained != adaptive


def test_distill_measures_the_distance_from_the_unpruned_network(net, digits: Dataset) -> None:
    """Keeping every channel (and its BatchNorm statistics) the candidate is the unpruned network: KL 0."""
    module, structure = net
    settings = replace(SMALL, fitness="distill", tau=0, calibration=0)
    fitness = OwnLoop(digits).search_fitness(module, structure, settings, np.random.default_rng(0), None)
    everything = {name: list(range(group.size)) for name, group in structure.groups.items()}
    assert fitness.scored_by == "distill"
    assert fitness.score(everything) == pytest.approx(0.0, abs=1e-6)
    assert fitness.score(halves(structure)) > 1e-3


def test_the_search_runs_with_a_training_fitness_and_says_which(net, digits: Dataset) -> None:
    module, structure = net
    scores = criteria.score("l2", module, structure)
    budget = bind(parse_target("flops", "50%"), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    settings = replace(SMALL, fitness="tau-steps", tau=2)
    runs = [search(module, structure, scores, budget, floor, digits, settings, 0) for _ in range(2)]
    assert runs[0].scored_by == "tau-steps" and runs[0].evaluations == 6
    assert runs[0].history == runs[1].history and runs[0].alpha == runs[1].alpha


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ResNet-20 (width 0.25) trained one epoch on digits by `ep.train`, saved to a file."""
    import edgeprune as ep

    path = tmp_path_factory.mktemp("fitness") / "m.pt"
    ep.train("resnet20", path, data="digits", input_shape="1x8x8", width=0.25, epochs=1, recipe="adam")
    return str(path)


def test_the_api_prunes_with_the_fitness_its_settings_name(saved: str) -> None:
    import edgeprune as ep
    from edgeprune.pruning import PruneSettings, TrainSettings

    search = SearchSettings(population=3, sample_size=2, generations=1, fitness="tau-steps", tau=2)
    settings = PruneSettings(finetune=TrainSettings(epochs=0), search=search)
    _, result = ep.prune(saved, target_flops="50%", settings=settings, data=True)
    assert result.summary["search_scored_by"] == "tau-steps"


def test_the_cli_prunes_with_the_fitness_asked_for(saved: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edgeprune.cli import main

    common = ("prune", saved, "--target-flops", "50%", "--population", "3", "--sample-size", "2", "--generations", "1")
    args = (*common, "--finetune-epochs", "0", "--fitness", "distill", "--tau", "2", "-o", str(tmp_path / "p.pt"))
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--json"])
    out, err = capsys.readouterr()
    assert not exit_info.value.code, err
    assert json.loads(out)["search_scored_by"] == "distill"
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--fitness", "accuracy", "-o", str(tmp_path / "q.pt")])
    out, err = capsys.readouterr()
    assert exit_info.value.code != 0 and "unknown search fitness 'accuracy'" in out + err
    assert not (tmp_path / "q.pt").exists()
