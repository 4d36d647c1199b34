"""Latency-aware selection to a budget (after HALP, Shen et al., NeurIPS 2022): a knapsack's greedy form on the
budget's channel grid.

`ranking.rank` removes the least important channels until the budget holds, whatever each one saves. Here an
item is the next grid step of one group (its least important remaining channels, removed together), its value
the importance it takes away (the LeGR-transformed scores, alpha_g * score + kappa_g, summed) and its weight
the cost it saves: the budget's cost now minus the cost with that step removed. That is the latency table's
*marginal* cost for ms (which depends on the neighbouring layers' widths, so it is re-evaluated as they shrink)
and the FLOPs or params saved for those budgets. The step with the least value per unit saved goes first, until
the budget holds; then the removed steps are offered back, the last removed first, wherever the budget still
holds (as `ranking._fill` does for the ranking).

The greedy is lazy: a step's saving is re-evaluated only when it reaches the front of the queue, and taken if it
is still no worse than the next one's older estimate. Savings shrink as neighbours shrink, so an old estimate
is optimistic and the step taken is the one a full re-evaluation would take in the common case, at a few cost
evaluations per step instead of one per group (mobilenetv2 at one channel a step has thousands of steps): on
mobilenetv2 (28x28) at 50% of its FLOPs, 220 cost evaluations for 192 channels removed one at a time, 0.1 s.

Unlike the ranking it has no reason to spread the cuts: with the l2 scores of an untrained mobilenetv2 and alpha = 1
it took the narrow bottleneck groups (each channel feeds a 6x wider expansion) to their floor and left the wide
layers whole, where the ranking cut every group. Whether that costs accuracy on a trained network is the
benchmark's question (issue 31).
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

from edgeprune.pruning.budget import Budget
from edgeprune.pruning.ranking import BudgetUnreachable, Counts, Plan, keep_highest


def transformed(
    scores: dict[str, torch.Tensor], alpha: dict[str, float] | None, kappa: dict[str, float] | None
) -> dict[str, np.ndarray]:
    """Each group's LeGR-transformed scores, ascending, shifted so that none is negative: a learned kappa may
    push a group below zero, and a negative value would make removing its channels look like a gain."""
    values = {
        name: np.sort(
            (1.0 if alpha is None else float(alpha.get(name, 1.0))) * raw.double().numpy()
            + (0.0 if kappa is None else float(kappa.get(name, 0.0))),
            kind="stable",
        )
        for name, raw in scores.items()
    }
    lowest = min((float(v[0]) for v in values.values() if len(v)), default=0.0)
    return {name: v - min(lowest, 0.0) for name, v in values.items()}


def grid(size: int, step: int, floor: int) -> list[int]:
    """The counts a group may keep, from its full size down to its floor: the full width, then the multiples of
    its step below it (`ranking.round_up`'s grid)."""
    counts = [size]
    below = (size - 1) // step * step
    while below >= max(floor, step):
        counts.append(below)
        below -= step
    return counts


def select(
    scores: dict[str, torch.Tensor],
    budget: Budget,
    floor: Counts,
    alpha: dict[str, float] | None = None,
    kappa: dict[str, float] | None = None,
) -> Plan:
    """The channels to keep: grid steps removed by least transformed importance per unit of cost saved until
    the budget holds, then given back where they still fit. Deterministic: ties go to the earlier group."""
    names = list(scores)
    values = transformed(scores, alpha, kappa)
    ladders = {name: grid(len(scores[name]), budget.steps.get(name, 1), floor[name]) for name in names}
    position = dict.fromkeys(names, 0)  # index into the group's ladder: its current count

    def counts() -> Counts:
        return {name: ladders[name][position[name]] for name in names}

    def item(index: int, current: float) -> tuple[float, float, int, int] | None:
        """(value per unit saved, value, group, at) for the group's next step; None at its floor."""
        name = names[index]
        ladder, at = ladders[name], position[name]
        if at + 1 >= len(ladder):
            return None
        kept_now, kept_next = ladder[at], ladder[at + 1]
        size = len(values[name])  # ascending: the step takes the lowest of the channels still kept
        removed = values[name][size - kept_now : size - kept_next]
        lost = float(removed.sum())
        saved = current - budget.cost({**counts(), name: kept_next})
        ratio = lost / saved if saved > 0 else np.inf
        return ratio, lost, index, at

    current = budget.cost(counts())
    queue = [entry for entry in (item(i, current) for i in range(len(names))) if entry is not None]
    heapq.heapify(queue)
    removed: list[int] = []
    while current > budget.target:
        if not queue:
            raise BudgetUnreachable(budget, current)
        _, _, index, at = heapq.heappop(queue)
        if at != position[names[index]]:
            continue  # stale: the group moved on since this entry was made
        fresh = item(index, current)
        if fresh is None:
            continue
        if queue and fresh[:3] > queue[0][:3]:
            heapq.heappush(queue, fresh)  # its estimate grew past the next one's: that one may be better now
            continue
        position[names[index]] += 1
        removed.append(index)
        current = budget.cost(counts())
        following = item(index, current)
        if following is not None:
            heapq.heappush(queue, following)
    passed: set[int] = set()  # a group whose step did not fit: costs only grow as others get steps back
    for index in reversed(removed):  # the last removed, the most valuable per unit saved, comes back first
        name = names[index]
        if index in passed:
            continue
        if budget.cost({**counts(), name: ladders[name][position[name] - 1]}) <= budget.target:
            position[name] -= 1
        else:
            passed.add(index)
    return keep_highest(scores, counts(), budget)
