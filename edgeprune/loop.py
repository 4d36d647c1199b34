"""The closed loop: prune -> compile -> measure, correcting the latency model by what the device measured, until
the measured latency meets the target. One function, used by `edgeprune run` and by `tools/bench_pruning.py`,
so the benchmark's figures come from the loop users get.

The loop knows nothing of run folders or benchmarks: what a round does is given as `LoopSteps` (prune with a
latency factor, the table's prediction for a candidate, a measurement beside the unpruned network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from torch import nn

from edgeprune.errors import EdgepruneError

MAX_MARGIN = 0.10  # the safety margin below a missed target, at most
MIN_STEP = 0.02  # after a miss the factor grows at least this much: the same factor would prune the same network

C = TypeVar("C")


@dataclass
class Measured:
    """A candidate measured on the device, with the unpruned network measured again in the same session."""

    ms: float
    spread_ms: float
    baseline_ms: float

    def meets(self, fraction: float) -> bool:
        """Whether this meets a target given as a fraction of the unpruned network's latency."""
        return self.ms <= fraction * self.baseline_ms


@dataclass
class Round:
    round: int
    scale: float  # factor applied to the LUT's predictions in this round
    predicted_ms: float  # the LUT's own prediction (unscaled) for the pruned network
    measured_ms: float
    spread_ms: float
    baseline_ms: float  # the unpruned network, measured again in the same session
    target_ms: float
    meets_target: bool
    correction: float | None = None  # the scale the next round uses, when there is one
    stopped: str | None = None  # why the loop ended here without meeting the target

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.measured_ms


class LoopSteps(Protocol[C]):
    """What one round of the loop does; `prune` raises `BudgetUnreachable` when the target is out of reach."""

    def prune(self, index: int, scale: float) -> C: ...

    def predicted_ms(self, index: int, candidate: C) -> float: ...

    def measure(self, index: int, candidate: C) -> Measured: ...


@dataclass
class LoopResult(Generic[C]):
    rounds: list[Round]
    candidate: C  # the last round's network (the one that meets the target, when one does)

    @property
    def final(self) -> Round:
        return self.rounds[-1]


class ScaledPredictor:
    """The LUT's latency model times a factor: how the closed loop corrects it with what the device measured."""

    def __init__(self, inner: Any, scale: float) -> None:
        self.inner = inner
        self.scale = scale

    def predict_ms(self, module: nn.Module, input_shape: tuple[int, int, int]) -> float:
        return float(self.inner.predict_ms(module, input_shape)) * self.scale

    def channel_steps(self, module: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
        return self.inner.channel_steps(module, input_shape)

    def network(self, module: nn.Module, input_shape: tuple[int, int, int]) -> ScaledNetwork:
        return ScaledNetwork(self.inner.network(module, input_shape), self.scale)


@dataclass
class ScaledNetwork:
    """A predictor bound to one network (`NetworkLatency`), times the loop's factor."""

    inner: Any
    scale: float

    def predict_ms(self, widths: dict[str, tuple[int, int]]) -> float:
        return float(self.inner.predict_ms(widths)) * self.scale


def corrected_scale(scale: float, lut_ms: float, measured_ms: float, spread_ms: float, drift: float) -> float:
    """The LUT factor for the next round after a miss: what the device measured over what the LUT predicted.

    `drift` is how much slower the unpruned network measures now than at first; dividing by it compares the
    pruned network as if measured then. The next round aims a little below: by twice the measurement's spread,
    at most MAX_MARGIN (a busy machine can spread 10-30%, and a margin that size over-prunes or puts the target
    out of reach). The factor grows by at least MIN_STEP within the loop: a round missed with it already."""
    margin = 1 + min(2 * spread_ms / measured_ms, MAX_MARGIN)
    return max(scale * (1 + MIN_STEP), measured_ms / drift / lut_ms * margin)


def prune_to_measured_target(
    steps: LoopSteps[C],
    original_ms: float,
    target_ms: float,
    max_rounds: int,
    scale: float = 1.0,
    relative: float | None = None,
    say: Callable[[str], None] = lambda _text: None,
) -> LoopResult[C]:
    """Prune, measure; while the device misses the target, correct the latency factor and prune again.

    The unpruned network is measured again beside every candidate, so a machine that got slower or faster since
    `original_ms` was measured is not mistaken for an error of the table: the correction compares the candidate's
    time, rescaled to the first measurement's conditions, with the table's prediction. A `relative` target (0.5
    for 0.5x) is checked against that fresh baseline; an absolute one as given. Raises `BudgetUnreachable` when
    the first round cannot reach the target; a later round that cannot ends the loop with the reason recorded.
    """
    from edgeprune.pruning.ranking import BudgetUnreachable

    if max_rounds < 1:
        raise EdgepruneError(f"--max-rounds must be at least 1, got {max_rounds}")
    rounds: list[Round] = []
    candidate: C | None = None
    for index in range(1, max_rounds + 1):
        try:
            pruned = steps.prune(index, scale)
        except BudgetUnreachable as error:
            if not rounds:
                raise
            rounds[-1].stopped = f"the corrected target is out of reach: {error.message}"
            say(f"stop: {rounds[-1].stopped}")
            break
        candidate = pruned
        measured = steps.measure(index, pruned)
        lut_ms = steps.predicted_ms(index, pruned)
        round_target = relative * measured.baseline_ms if relative else target_ms
        meets = measured.ms <= round_target
        rounds.append(
            Round(index, scale, lut_ms, measured.ms, measured.spread_ms, measured.baseline_ms, round_target, meets)
        )
        if meets:
            break
        scale = corrected_scale(scale, lut_ms, measured.ms, measured.spread_ms, measured.baseline_ms / original_ms)
        rounds[-1].correction = scale
        say(
            f"round {index}: measured {measured.ms:.3f} ms > target {round_target:.3f} ms (unpruned measures "
            f"{measured.baseline_ms:.3f} ms now); correcting the latency model to x{scale:.3f}"
        )
    assert candidate is not None  # the first round either pruned or raised
    return LoopResult(rounds, candidate)
