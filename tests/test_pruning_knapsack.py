"""Latency-aware selection (`knapsack.select`): value per unit of cost saved, on the budget's grid. FLOPs are
exact, latency a stand-in (the fake device's MACs formula on a grid of 4 channels): the selection's logic, not
a latency claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.models.io import load_model
from edgeprune.network import to_graph_module
from edgeprune.pruning import criteria, groups, knapsack, ranking
from edgeprune.pruning.budget import bind
from edgeprune.pruning.methods import METHODS
from edgeprune.pruning.search import SearchSettings, search, search_fingerprint
from edgeprune.pruning.trainer import SearchFitness
from edgeprune.targets import Target, parse_target
from tests.test_pruning_ranking import StandInLatency

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


def two_sets() -> tuple[nn.Module, groups.Structure]:
    """Groups 'a' (first) and 'b' of 8 channels each; a channel of b costs about 3.6x a channel of a in MACs
    (b feeds the wide layer 'c')."""
    module = nn.Sequential()
    module.add_module("a", nn.Conv2d(3, 8, 3, stride=2, padding=1))
    module.add_module("relu_a", nn.ReLU())
    module.add_module("b", nn.Conv2d(8, 8, 3, padding=1))
    module.add_module("relu_b", nn.ReLU())
    module.add_module("c", nn.Conv2d(8, 32, 3, padding=1))
    module.add_module("pool", nn.AdaptiveAvgPool2d(1))
    module.add_module("flat", nn.Flatten())
    module.add_module("head", nn.Linear(32, 10))
    traced = to_graph_module(module, (3, 16, 16))
    return traced, groups.analyze(traced, (3, 16, 16))


def test_the_knapsack_removes_the_costlier_of_two_equally_important_sets() -> None:
    module, structure = two_sets()
    assert list(structure.groups)[:2] == ["a", "b"]
    scores = {name: torch.ones(group.size) for name, group in structure.groups.items()} | {"c": torch.full((32,), 9.0)}
    budget = bind(parse_target("flops", "80%"), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    per_channel = {g: budget.full() - budget.cost({g: 7}) for g in ("a", "b")}
    assert per_channel["b"] > 3 * per_channel["a"]  # the premise: b's channels are the expensive ones
    plan = knapsack.select(scores, budget, floor)
    counts = plan.counts()
    assert plan.cost <= budget.target and counts["a"] == 8 and counts["b"] < 8 and counts["c"] == 32
    # the ranking, blind to cost, takes the equally important channels in group order: a's cheap ones first
    ranked = ranking.rank(scores, budget, floor).counts()
    assert ranked["a"] < 8
    assert sum(counts.values()) > sum(ranked.values())  # the same budget met with fewer channels given up
    assert knapsack.select(scores, budget, floor).keep == plan.keep  # deterministic


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, groups.Structure, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    module = load_model("resnet20", (1, 8, 8), 10, width=0.5).module
    structure = groups.analyze(module, (1, 8, 8))
    return module, structure, criteria.score("l2", module, structure)


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_latency_plans_hold_the_budget_on_the_grid_and_leave_no_step_that_fits(resnet, share: float) -> None:
    module, structure, scores = resnet
    budget = bind(Target("ms", share, relative=True), module, structure, StandInLatency())
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    names = list(scores)
    kappa = {name: -float(scores[name].max()) if index % 2 else 0.0 for index, name in enumerate(names)}
    for alpha, shift in ((None, None), ({n: 1.0 / (1 + i % 3) for i, n in enumerate(names)}, kappa)):
        plan = knapsack.select(scores, budget, floor, alpha, shift)
        counts = plan.counts()
        assert plan.cost <= budget.target and all(counts[g] >= floor[g] for g in counts)
        for name, count in counts.items():
            size = structure.groups[name].size
            assert count % 4 == 0 or count == size
            if count < size:  # the next grid step back would break the budget
                assert budget.cost({**counts, name: ranking.round_up(count + 1, size, 4)}) > budget.target
        assert knapsack.select(scores, budget, floor, alpha, shift).keep == plan.keep
        pruned = groups.prune(module, structure, plan.keep)
        assert StandInLatency().predict_ms(pruned, (1, 8, 8)) == pytest.approx(plan.cost)


def test_learned_offsets_never_make_a_removal_look_like_a_gain() -> None:
    values = knapsack.transformed({"x": torch.tensor([3.0, 1.0]), "y": torch.tensor([2.0])}, None, {"x": -5.0})
    assert values["x"].tolist() == [0.0, 2.0] and values["y"].tolist() == [6.0]  # shifted by 4, order kept
    assert knapsack.grid(16, 4, 4) == [16, 12, 8, 4] and knapsack.grid(10, 4, 4) == [10, 8, 4]
    assert knapsack.grid(8, 1, 8) == [8]


def test_an_unreachable_budget_is_a_clear_error(resnet) -> None:
    module, structure, scores = resnet
    budget = bind(Target("flops", 1000.0), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.5)
    with pytest.raises(ranking.BudgetUnreachable, match="below the smallest reachable"):
        knapsack.select(scores, budget, floor)


class Recording:
    """A trainer whose search score only records the plan it was asked to score (no data, no training)."""

    input_shape = None

    def __init__(self) -> None:
        self.scored: list[tuple[int, ...]] = []

    def search_fitness(self, module, structure, settings, rng, rows) -> SearchFitness:
        def score(keep: dict[str, list[int]]) -> float:
            self.scored.append(tuple(len(keep[name]) for name in structure.groups))
            return float(len(self.scored) % 5)  # any score: the evolution needs one

        return SearchFitness(score, np.zeros((0, settings.batch_size), dtype=np.int64), "recorded")

    def finalist_judge(self, module, structure, settings, seed) -> None:
        return None


def test_legr_knapsacks_search_scores_the_knapsacks_plans(resnet) -> None:
    """The search optimises what the method ships: every candidate legr-knapsack's search scores is a knapsack
    plan, and a checkpoint of a search on the ranking's plans is not continued as one on the knapsack's."""
    module, structure, scores = resnet
    budget = bind(Target("ms", 0.4, relative=True), module, structure, StandInLatency())
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    planner = METHODS.get("legr-knapsack").planner
    assert planner is knapsack.select and METHODS.get("legr").planner is ranking.rank
    made: list[tuple[int, ...]] = []

    def spy(*args, **kwargs) -> ranking.Plan:
        plan = planner(*args, **kwargs)
        made.append(tuple(plan.counts().values()))
        return plan

    trainer = Recording()
    settings = SearchSettings(population=6, sample_size=2, generations=6)
    result = search(module, structure, scores, budget, floor, trainer, settings, 0, planner=spy)
    assert result.evaluations == 12 and trainer.scored and set(trainer.scored) <= set(made)
    ranked = {tuple(ranking.rank(scores, budget, floor).counts().values())}
    assert trainer.scored[0] == tuple(knapsack.select(scores, budget, floor).counts().values()) not in ranked
    fingerprints = [
        search_fingerprint(structure, budget, "l2", "none", settings, 0, p) for p in (planner, ranking.rank)
    ]
    assert fingerprints[0] != fingerprints[1]
