"""Global ranking to a budget: FLOPs / params fully, latency through a stand-in that implements the latency
model's two methods (these tests are about the ranking logic, not about latency)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model
from edgeprune.pruning import cost, criteria, groups, ranking
from edgeprune.pruning.budget import bind
from edgeprune.targets import Target, parse_target
from tests.fake_device import MacsLatency

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, groups.Structure, dict[str, torch.Tensor]]:
    torch.manual_seed(0)  # the scores are the random initial weights' norms: the same ones every run
    module = load_model("resnet20", (1, 8, 8), 10, width=0.5).module
    structure = groups.analyze(module, (1, 8, 8))
    return module, structure, criteria.score("l2", module, structure)


class StandInLatency:
    """The fake device's latency (a linear function of MACs) on a grid of 4 channels: the contract of
    LatencyModel, nothing more."""

    def predict_ms(self, module: nn.Module, input_shape: tuple[int, int, int]) -> float:
        return MacsLatency(module, input_shape).predict_ms({})

    def network(self, module: nn.Module, input_shape: tuple[int, int, int]) -> MacsLatency:
        return MacsLatency(module, input_shape)

    def channel_steps(self, module: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
        return {name: 4 for name, layer in module.named_modules() if isinstance(layer, nn.Conv2d)}


def test_parse_target() -> None:
    assert parse_target("flops", "1.5M") == Target("flops", 1.5e6)
    assert parse_target("params", "20k").value == 20000
    assert parse_target("flops", "50%") == Target("flops", 0.5, relative=True)
    assert parse_target("ms", "2.5").value == 2.5
    # a FLOPs / params count below 1 is a fraction of the original: no model has half a FLOP
    assert parse_target("flops", 0.5) == parse_target("flops", "0.5") == Target("flops", 0.5, relative=True)
    assert parse_target("params", "0.25") == Target("params", 0.25, relative=True)
    assert parse_target("flops", "1") == Target("flops", 1.0)  # 1 and above stay counts
    assert parse_target("ms", "0.5") == Target("ms", 0.5)  # half a millisecond is a latency
    for kind, text, message in (
        ("ms", "5M", "'5M' is not a number: a target must be a positive number of milliseconds"),
        ("ms", "-1", "--target-ms -1: a target must be a positive number of milliseconds"),  # not "not a number"
        ("ms", "0", "a target must be a positive number of milliseconds"),
        ("ms", "1e999", "a target must be a positive number of milliseconds"),
        ("flops", "-5", "--target-flops -5: a target must be a positive number of FLOPs"),
        ("flops", "lots", "'lots' is not a number"),
        ("params", "-1k", "--target-params -1k: a target must be a positive number of parameters"),
        ("params", "150%", "a percentage must be in (0, 100]"),
    ):
        with pytest.raises(EdgepruneError) as error:
            parse_target(kind, text)
        assert message in error.value.message


def test_global_ranking_meets_flops_with_the_fewest_removals(resnet) -> None:
    module, structure, scores = resnet
    budget = bind(parse_target("flops", "45%"), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.05)
    plan = ranking.rank(scores, budget, floor)
    counts = plan.counts()
    assert plan.cost <= budget.target == pytest.approx(0.45 * budget.full())
    assert all(counts[g] >= floor[g] for g in counts)
    pruned = groups.prune(module, structure, plan.keep)
    assert cost.measure(pruned, (1, 8, 8))[0] == plan.cost
    # within a group the lowest go; across groups a global threshold, except where the fill gave back channels
    # (cheaper ones) that fit when the next more important one did not: that one still breaks the budget
    for name, values in scores.items():
        gone = [float(values[i]) for i in range(len(values)) if i not in plan.keep[name]]
        assert not gone or max(gone) <= min(float(values[i]) for i in plan.keep[name])
    best_group = max(
        (g for g in scores if counts[g] < structure.groups[g].size and counts[g] > floor[g]),
        key=lambda g: max(float(scores[g][i]) for i in range(len(scores[g])) if i not in plan.keep[g]),
    )
    assert budget.cost({**counts, best_group: counts[best_group] + 1}) > budget.target


def test_alpha_and_kappa_steer_the_ranking(resnet) -> None:
    module, structure, scores = resnet
    budget = bind(parse_target("flops", "50%"), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    names = list(scores)
    protected, sacrificed = "layers.6.conv1", "layers.7.conv1"
    alpha = {n: 1.0 for n in names} | {protected: 1e6}
    kappa = {n: 0.0 for n in names} | {sacrificed: -1e6}
    plan = ranking.rank(scores, budget, floor, alpha, kappa).counts()
    assert plan[protected] == structure.groups[protected].size
    assert plan[sacrificed] == floor[sacrificed]
    assert ranking.rank(scores, budget, floor).counts() != plan


def test_latency_budget_keeps_counts_on_the_table_grid(resnet) -> None:
    module, structure, scores = resnet
    predictor = StandInLatency()
    budget = bind(Target("ms", 0.5, relative=True), module, structure, predictor)
    assert set(budget.steps.values()) == {4}
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    plan = ranking.rank(scores, budget, floor)
    for name, count in plan.counts().items():
        assert count % 4 == 0 or count == structure.groups[name].size
    pruned = groups.prune(module, structure, plan.keep)
    assert predictor.predict_ms(pruned, (1, 8, 8)) == pytest.approx(plan.cost)
    assert plan.cost <= budget.target


@pytest.mark.parametrize("share", [0.3, 0.45, 0.6])
def test_the_plan_leaves_no_grid_step_that_would_still_fit(resnet, share: float) -> None:
    """The removed channels come back wherever they fit: no group's next grid step fits in what is left."""
    module, structure, scores = resnet
    budget = bind(Target("ms", share, relative=True), module, structure, StandInLatency())
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    for alpha in (None, {name: 1.0 / (1 + index % 3) for index, name in enumerate(scores)}):
        plan = ranking.rank(scores, budget, floor, alpha)
        counts = plan.counts()
        assert plan.cost <= budget.target and all(counts[g] >= floor[g] for g in counts)
        unfilled = ranking.rank(scores, budget, floor, alpha, fill=False)  # the fill only gives channels back
        assert all(counts[g] >= count for g, count in unfilled.counts().items()) and unfilled.cost <= plan.cost
        for name, count in counts.items():
            size = structure.groups[name].size
            if count < size:
                assert budget.cost({**counts, name: ranking.round_up(count + 1, size, 4)}) > budget.target, name


def test_a_channel_step_of_its_own_replaces_the_table_grid(resnet) -> None:
    module, structure, scores = resnet
    predictor = StandInLatency()
    fine = bind(Target("ms", 0.5, relative=True), module, structure, predictor, channel_step=1)
    assert set(fine.steps.values()) == {1}
    plan = ranking.rank(scores, fine, ranking.minimum_counts(structure.sizes(), fine.steps, 0.1))
    assert plan.cost <= fine.target
    assert any(count % 4 for count in plan.counts().values())  # off the table's grid of 4: finer choices
    coarse = bind(parse_target("flops", "50%"), module, structure, channel_step=3)
    plan = ranking.rank(scores, coarse, ranking.minimum_counts(structure.sizes(), coarse.steps, 0.1))
    assert all(c % 3 == 0 or c == structure.groups[n].size for n, c in plan.counts().items())
    with pytest.raises(EdgepruneError, match="--channel-step must be >= 1"):
        bind(parse_target("flops", "50%"), module, structure, channel_step=0)


def test_unreachable_and_already_met_targets(resnet) -> None:
    module, structure, scores = resnet
    floor_ratio = 0.25
    tight = bind(Target("flops", 1000.0), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), tight.steps, floor_ratio)
    with pytest.raises(ranking.BudgetUnreachable) as info:
        ranking.check_reachable(tight, floor_ratio)
    minimum = tight.cost(floor)
    assert ranking.smallest_reachable(tight, floor_ratio) == minimum
    assert info.value.minimum == minimum and f"{minimum / 1e3:.3g}k flops" in info.value.message
    assert "--min-keep" in (info.value.hint or "")
    loose = bind(Target("params", 1e9), module, structure)
    assert ranking.check_reachable(loose, floor_ratio) is False


def test_uniform_cuts_every_group_by_the_same_share(resnet) -> None:
    module, structure, scores = resnet
    budget = bind(parse_target("params", "40%"), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    plan = ranking.uniform(scores, budget, floor)
    shares = {name: count / structure.groups[name].size for name, count in plan.counts().items()}
    assert plan.cost <= budget.target
    assert max(shares.values()) - min(shares.values()) <= 1 / 8 + 1e-9  # one channel of the smallest group


def test_mean_normalisation_rescales_each_group_and_keeps_its_order(resnet) -> None:
    module, structure, scores = resnet
    scaled = {**scores, "layers.6.conv1": scores["layers.6.conv1"] * 0.01}  # a layer of small filters
    normalised = ranking.normalize(scaled, "mean")
    for name, values in normalised.items():
        assert float(values.double().mean()) == pytest.approx(1.0, rel=1e-5)
        assert torch.equal(torch.argsort(values, stable=True), torch.argsort(scaled[name], stable=True))
    assert ranking.normalize(scaled, "none") is scaled
    # raw scores put the small layer's channels first in the global order, down to its floor (the fill may give
    # some back where the budget has room: the order is the claim); normalised ones rank it like the others
    budget = bind(parse_target("flops", "50%"), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    starved = ranking.rank(scaled, budget, floor, fill=False).counts()["layers.6.conv1"]
    assert starved == floor["layers.6.conv1"]
    assert ranking.rank(normalised, budget, floor) == ranking.rank(ranking.normalize(scores, "mean"), budget, floor)
    with pytest.raises(EdgepruneError, match="unknown normalisation 'max'"):
        ranking.normalize(scores, "max")
