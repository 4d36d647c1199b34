"""Global ranking to a budget (LeGR): every channel gets alpha_g * score + kappa_g, the network's channels are
sorted together, and the lowest are removed until the budget holds.

Scores can first be normalised per group (`normalize`): raw filter norms differ in scale from layer to layer
(depth, fan-in, residual sums), and a global ranking of raw values over-protects the large-valued groups.

Kept counts are rounded up to the budget's channel step, and never go below a per-group minimum (a share of
the group's original size). The number of removed channels is found by bisection over the global order: each
probe is a cheap cost evaluation on channel counts, never a surgery. Then the removed channels are given back,
most important first, wherever the budget still holds (`_fill`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edgeprune.errors import EdgepruneError
from edgeprune.pruning.budget import Budget

Counts = dict[str, int]
NORMALIZERS = ("none", "mean")


@dataclass
class Plan:
    """Which channels each group keeps, and the plan's cost in the budget's unit."""

    keep: dict[str, list[int]]
    cost: float

    def counts(self) -> Counts:
        return {name: len(kept) for name, kept in self.keep.items()}


class BudgetUnreachable(EdgepruneError):
    """Even the smallest allowed configuration costs more than the target."""

    def __init__(self, budget: Budget, minimum: float, min_keep: float | None = None) -> None:
        floor = f" (every layer at its minimum of {min_keep:.0%} of its channels)" if min_keep else ""
        super().__init__(
            f"target {budget.describe()} is below the smallest reachable {budget.describe(minimum)}{floor}",
            hint=f"ask for at least {budget.describe(minimum)}, or lower --min-keep",
        )
        self.minimum = minimum


def check_normalizer(how: str) -> None:
    if how not in NORMALIZERS:
        raise EdgepruneError(f"unknown normalisation '{how}'", hint=f"choose one of {', '.join(NORMALIZERS)}")


def normalize(scores: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    """Per-group normalisation of channel scores before a global ranking.

    'mean' divides each group's scores by their mean (Torch-Pruning's default normaliser; the criteria already
    average a coupled group's members), so every group's channels compete on relative importance; 'none'
    leaves the scales to the ranking (LeGR's alpha learns them). The order within a group never changes."""
    check_normalizer(how)
    if how == "none":
        return scores
    means = group_means(scores)
    return {name: values / means[name] for name, values in scores.items()}


def group_means(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each group's mean score, the 'mean' normaliser (floored, so a group of zeros stays finite)."""
    return {name: max(float(values.double().mean()), 1e-12) for name, values in scores.items()}


def round_up(count: int, size: int, step: int) -> int:
    """The smallest count on the grid (multiples of `step`, or the full size) that is >= `count`."""
    if count >= size:
        return size
    return min(size, max(step, math.ceil(count / step) * step))


def minimum_counts(sizes: Counts, steps: Counts, min_keep: float, original: Counts | None = None) -> Counts:
    """Per-group floor: `min_keep` of the group's original size (at least one channel), on the grid."""
    if not 0.0 < min_keep <= 1.0:
        raise EdgepruneError(f"--min-keep must be in (0, 1], got {min_keep}")
    original = original or sizes
    return {
        name: min(size, round_up(max(1, math.ceil(min_keep * original.get(name, size))), size, steps.get(name, 1)))
        for name, size in sizes.items()
    }


def smallest_reachable(budget: Budget, min_keep: float) -> float:
    """The floor's cost: every group at `min_keep` of its channels, on the budget's grid. No plan of any method
    costs less, so `prune` refuses a target below it and `estimate` prints it before anyone asks for one."""
    return budget.cost(minimum_counts(budget.structure.sizes(), budget.steps, min_keep))


def check_reachable(budget: Budget, min_keep: float) -> bool:
    """False when the model already fits (nothing to do); raises when even the floor does not fit."""
    if budget.full() <= budget.target:
        return False
    smallest = smallest_reachable(budget, min_keep)
    if smallest > budget.target:
        raise BudgetUnreachable(budget, smallest, min_keep)
    return True


def _kept(name: str, taken: int, sizes: Counts, budget: Budget) -> int:
    """Group `name`'s channel count with `taken` of its channels removed, rounded up to the group's grid step."""
    return round_up(sizes[name] - taken, sizes[name], budget.steps.get(name, 1))


def _first_within(count: int, counts_at: Callable[[int], Counts], budget: Budget) -> int:
    """Bisection for the first index whose configuration fits (costs fall as the index grows)."""
    if budget.cost(counts_at(count)) > budget.target:
        raise BudgetUnreachable(budget, budget.cost(counts_at(count)))
    low, high = 0, count  # invariant: counts_at(high) fits
    if budget.cost(counts_at(0)) <= budget.target:
        return 0
    while high - low > 1:
        middle = (low + high) // 2
        if budget.cost(counts_at(middle)) <= budget.target:
            high = middle
        else:
            low = middle
    return high


def _fill(removed: np.ndarray, names: list[str], sizes: Counts, budget: Budget) -> Counts:
    """The counts after giving back `removed` (group indices, least important channel first), most important
    first, wherever the budget still holds.

    The bisection stops at the first prefix of the global order that fits, but on the channel grid the next
    channel to give back may cost a whole step of a wide group (a residual chain, 16 channels a step on
    resnet20), and the plan then leaves a share of the target unused: 79-100% of it used, 94% on average, over
    resnet20's latency targets from 0.26x to 0.6x. Walking back over the removed channels, a group gets its
    channels back in their ranked order while the budget holds and is passed over once its next grid step does
    not fit (costs only grow from there): 97-100% used, 99% on average, for about a dozen cost evaluations."""
    taken = np.bincount(removed, minlength=len(names))
    counts = {name: _kept(name, int(taken[i]), sizes, budget) for i, name in enumerate(names)}
    passed: set[int] = set()
    for index in (int(i) for i in removed[::-1]):
        if index in passed:
            continue
        taken[index] -= 1
        name = names[index]
        kept = _kept(name, int(taken[index]), sizes, budget)
        if kept == counts[name]:
            continue  # inside a grid step: the channel comes back with the step's last one
        if budget.cost({**counts, name: kept}) <= budget.target:
            counts[name] = kept
        else:
            passed.add(index)
            taken[index] += 1
    return counts


def keep_highest(scores: dict[str, torch.Tensor], counts: Counts, budget: Budget) -> Plan:
    """Each group keeps its `counts[g]` highest-scoring channels (in index order)."""
    keep = {}
    for name, values in scores.items():
        order = np.argsort(values.double().numpy(), kind="stable")
        keep[name] = sorted(int(i) for i in order[len(order) - counts[name] :])
    return Plan(keep, budget.cost(counts))


def rank(
    scores: dict[str, torch.Tensor],
    budget: Budget,
    floor: Counts,
    alpha: dict[str, float] | None = None,
    kappa: dict[str, float] | None = None,
    fill: bool = True,
) -> Plan:
    """LeGR's global ranking; alpha = 1, kappa = 0 (the defaults) is plain global ranking of the scores. Without
    `fill`, the plan is the first prefix of the global order that fits (tools/bench_budget_use.py compares)."""
    names = list(scores)
    sizes = {name: len(scores[name]) for name in names}
    values, owners = [], []
    for index, name in enumerate(names):
        raw = scores[name].double().numpy()
        removable = np.sort(raw, kind="stable")[: sizes[name] - floor[name]]
        a = 1.0 if alpha is None else float(alpha[name])
        k = 0.0 if kappa is None else float(kappa[name])
        values.append(a * removable + k)
        owners.append(np.full(len(removable), index))
    sequence = np.concatenate(owners)[np.argsort(np.concatenate(values), kind="stable")]

    def counts_at(removed: int) -> Counts:
        taken = np.bincount(sequence[:removed], minlength=len(names))
        return {name: _kept(name, int(taken[i]), sizes, budget) for i, name in enumerate(names)}

    removed = _first_within(len(sequence), counts_at, budget)
    return keep_highest(scores, _fill(sequence[:removed], names, sizes, budget) if fill else counts_at(removed), budget)


def uniform(scores: dict[str, torch.Tensor], budget: Budget, floor: Counts, resolution: int = 1000) -> Plan:
    """The same share of channels removed from every group (within-group choice by score)."""
    sizes = {name: len(values) for name, values in scores.items()}

    def counts_at(index: int) -> Counts:
        share = 1.0 - index / resolution
        return {
            name: max(floor[name], round_up(max(1, math.ceil(size * share)), size, budget.steps.get(name, 1)))
            for name, size in sizes.items()
        }

    return keep_highest(scores, counts_at(_first_within(resolution, counts_at, budget)), budget)
