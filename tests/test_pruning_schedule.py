"""The iterative schedule (`PruneSettings.steps`): K cuts under an exponentially decaying target, the one-shot
fine-tune epochs split across them. FLOPs are exact, latency the stand-in of the ranking tests (the fake
device's MACs formula on a grid of 4): the schedule's logic, not a claim about accuracy or speed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model
from edgeprune.pruning import PruneSettings, SearchSettings, TrainSettings, cost, schedule
from edgeprune.pruning.methods import prune_module
from edgeprune.pruning.trainer import UserLoop
from edgeprune.targets import Target
from tests.test_pruning_ranking import StandInLatency

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module

SHAPE = (1, 8, 8)


def test_targets_decay_exponentially_to_the_target_and_epochs_add_up() -> None:
    goals = schedule.targets(10.0, 2.5, 4)
    assert goals[-1] == 2.5 and all(a > b for a, b in zip([10.0, *goals], goals, strict=False))
    ratios = [b / a for a, b in zip([10.0, *goals], goals, strict=False)]
    assert ratios == pytest.approx([ratios[0]] * 4)  # the same share of the cost goes at every step
    assert schedule.targets(10.0, 2.5, 1) == [2.5]  # one step: today's one-shot
    assert schedule.split_epochs(5, 3) == [1, 1, 3] and schedule.split_epochs(2, 4) == [0, 0, 0, 2]
    assert all(sum(schedule.split_epochs(total, k)) == total for total in range(8) for k in range(1, 6))
    with pytest.raises(EdgepruneError, match="--steps must be >= 1"):
        schedule.targets(10.0, 2.5, 0)


def measure(kind: str, module: nn.Module) -> float:
    return cost.measure(module, SHAPE)[0] if kind == "flops" else StandInLatency().predict_ms(module, SHAPE)


@pytest.mark.parametrize(("kind", "share", "method"), [("flops", 0.4, "global"), ("ms", 0.6, "legr-knapsack")])
def test_each_step_meets_its_decreasing_target_and_the_last_meets_the_goal(
    kind: str, share: float, method: str
) -> None:
    module = load_model("resnet20", SHAPE, 10, width=0.5).module
    steps: list[tuple[float, int]] = []  # (cost after the cut, epochs) of every fine-tune asked for
    loop = UserLoop(lambda net, epochs: steps.append((measure(kind, net), epochs)), lambda net: 0.0, search_epochs=0)
    search = SearchSettings(population=2, sample_size=1, generations=1, steps=0)
    settings = PruneSettings(method=method, finetune=TrainSettings(epochs=5), search=search, steps=3)
    predictor = StandInLatency() if kind == "ms" else None
    full = measure(kind, module)
    outcome = prune_module(module, loop, Target(kind, share, relative=True), settings, predictor, None, SHAPE)
    goal = share * full
    # before the steps, legr's search fine-tuned its candidates 0 epochs, one search, once per distinct plan (the
    # knapsack's grid plans coincide more often than the ranking's)
    searched = len(steps) - 3
    evaluations = outcome.search.evaluations if outcome.search else 0
    assert 0 < searched <= evaluations if method != "global" else searched == evaluations == 0
    steps = steps[-3:]
    assert [epochs for _, epochs in steps] == [1, 1, 3]  # the one-shot budget of 5 epochs, split
    goals = schedule.targets(full, goal, 3)
    assert all(reached <= target * (1 + 1e-9) for (reached, _), target in zip(steps, goals, strict=True))
    reached = [cost_after for cost_after, _ in steps]
    assert reached == sorted(reached, reverse=True) and reached[0] < full
    assert measure(kind, outcome.module) == pytest.approx(reached[-1]) and reached[-1] <= goal * (1 + 1e-9)
    assert reached[-1] >= 0.8 * goal  # the last step uses the budget, it does not overshoot far below it


def test_steps_refused_where_the_method_has_its_own_rounds() -> None:
    for method in ("iap", "pai"):
        with pytest.raises(EdgepruneError, match="--steps applies to"):
            PruneSettings(method=method, steps=2).check()
    PruneSettings(method="legr-knapsack", steps=2).check()


def test_ep_prune_takes_steps_with_the_users_own_loop() -> None:
    import edgeprune as ep

    epochs: list[int] = []
    module = load_model("resnet20", SHAPE, 10, width=0.25).module
    small, result = ep.prune(
        module, torch.zeros(1, *SHAPE), target_flops="50%", method="global", steps=2, epochs=4,
        finetune=lambda net, count: epochs.append(count),
    )  # fmt: skip
    assert epochs == [2, 2] and result.within_budget and result.flops <= 0.5 * result.original_flops
