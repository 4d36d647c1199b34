"""An iterative schedule for the one-shot methods: prune in K steps toward the target, fine-tuning between.

HALP and NNCF approach a latency target in steps under an exponentially decaying target, training between them,
so that each cut starts from a network that has recovered from the previous one. Step k of K aims at
full * (target / full) ** (k / K): the same share of the cost goes at every step, and the last step's target is
the target itself. The training is the one-shot method's, split across the steps (`split_epochs`), so a
scheduled run trains no more than a one-shot run: the comparison between them is at the same budget.
"""

from __future__ import annotations

from edgeprune.errors import EdgepruneError


def check_steps(steps: int) -> None:
    if steps < 1:
        raise EdgepruneError(f"--steps must be >= 1, got {steps}")


def targets(full: float, target: float, steps: int) -> list[float]:
    """Each step's target, decaying exponentially from `full` (the unpruned cost) to `target`; the last is
    `target` exactly (no rounding may leave it a hair above)."""
    check_steps(steps)
    return [full * (target / full) ** (k / steps) for k in range(1, steps)] + [target]


def split_epochs(total: int, steps: int) -> list[int]:
    """`total` fine-tune epochs over `steps`: an equal share between steps, the remainder after the last, which
    ends at the target and so is the network that ships (5 over 3 steps: 1, 1, 3)."""
    check_steps(steps)
    share = total // steps
    return [share] * (steps - 1) + [total - share * (steps - 1)]
