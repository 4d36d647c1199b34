"""The closed loop: prune -> compile -> measure, correcting the latency model by what the device measured, until
the measured latency meets the target, then using what the target leaves over. One function, used by
`edgeprune run` and by `tools/bench_pruning.py`, so the benchmark's figures come from the loop users get.

A miss makes the next round prune more (the table under-predicted); a round that meets with slack (measured
below `slack` x target) makes the next round prune less (the table over-predicted), and the most accurate
round that meets is kept. The loop knows nothing of run folders or benchmarks: what a round does is given as
`LoopSteps` (prune with a latency factor, the table's prediction for a candidate, a measurement beside the
unpruned network, the candidate's accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from edgeprune.confidence import Interval, verdict
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:  # the CLI imports SLACK for its --help: no torch at its start
    from torch import nn

MAX_MARGIN = 0.10  # the safety margin below the target after a measurement, at most
MIN_STEP = 0.02  # the factor moves at least this much between rounds: a smaller change prunes the same network
SLACK = 0.97  # a round that meets with less than this share of the target measured leaves budget to use
# a round whose table puts the target out of reach by at most this factor measures the smallest network the settings
# allow instead: a small network's layers, timed one by one, can sum 20% above the whole network's time, and a table
# tuned with few trials holds schedules drawn at random
FLOOR_REACH = 1.25

C = TypeVar("C")


@dataclass
class Measured:
    """A candidate measured on the device, with the unpruned network measured again in the same session, in
    alternation: `interval` is the candidate's median's, `ratio` the paired candidate/unpruned ratio's (each
    None where the caller took no samples of its own: the ratio is then that of the medians)."""

    ms: float
    spread_ms: float
    baseline_ms: float
    interval: Interval | None = None
    ratio: Interval | None = None

    @property
    def ratio_estimate(self) -> float:
        return self.ms / self.baseline_ms if self.ratio is None else self.ratio.estimate

    def meets(self, fraction: float) -> bool:
        """Whether this meets a target given as a fraction of the unpruned network's latency (on the paired
        ratio: load that hits both networks alike cancels)."""
        return self.ratio_estimate <= fraction

    def judged(self, target_ms: float, relative: float | None) -> tuple[Interval | None, float]:
        """The interval a target is judged on, and the target in its unit: the ratio's for a relative one."""
        return (self.ratio, relative) if relative else (self.interval, target_ms)

    def margin(self, target_ms: float, relative: float | None) -> float:
        """How far the judged interval reaches above its median, relative to it: an aim that far below the
        target still meets it at the interval's top. Without samples, twice the relative spread."""
        interval, _ = self.judged(target_ms, relative)
        return 2 * self.spread_ms / self.ms if interval is None else interval.upper_margin


@dataclass
class Round:
    round: int
    scale: float  # factor applied to the LUT's predictions in this round
    predicted_ms: float  # the LUT's own prediction (unscaled) for the pruned network
    measured_ms: float
    spread_ms: float
    baseline_ms: float  # the unpruned network, measured again in the same session
    target_ms: float  # fixed for the whole run: a relative target times the run's one reference measurement
    meets_target: bool
    accuracy: float  # what `LoopSteps.accuracy` says of the network: the choice among rounds that meet
    correction: float | None = None  # the scale the next round uses, when the loop wanted one
    chosen: bool = False  # the round the loop returns: the most accurate that meets (else the last)
    target_ratio: float | None = None  # a relative target: judged on the paired ratio, not on the ms
    ratio: float | None = None  # the paired candidate/unpruned ratio's median
    margin: float = 0.0  # how far the judged 95% interval reaches above its median (relative)
    verdict: str | None = None  # MEETS, MISSES or TOO CLOSE TO CALL, from the interval (None: no samples)

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.measured_ms

    @property
    def used(self) -> float:
        """The share of the target the network takes (1.0: all of it): of the ratio for a relative target."""
        if self.target_ratio is not None and self.ratio is not None:
            return self.ratio / self.target_ratio
        return self.measured_ms / self.target_ms


class LoopSteps(Protocol[C]):
    """What one round of the loop does; `prune` raises `BudgetUnreachable` when the target is out of reach.

    `accuracy` (higher is better) chooses among the rounds that meet; it should come from data the final
    report does not use (a validation split), so the choice does not fit the test set."""

    def prune(self, index: int, scale: float) -> C: ...

    def pruned_with(self, index: int, scale: float) -> float:
        """The factor round `index`'s network was pruned with: `scale`, or the one recorded when a resumed run
        found the round pruned already (an earlier round measured again may propose another factor; the
        network is the recorded factor's, and the loop goes on from that, as the interrupted run would have)."""
        ...

    def predicted_ms(self, index: int, candidate: C) -> float: ...

    def measure(self, index: int, candidate: C) -> Measured: ...

    def accuracy(self, index: int, candidate: C) -> float: ...


@dataclass
class LoopResult(Generic[C]):
    rounds: list[Round]
    candidate: C  # the chosen round's network
    chosen: Round  # the most accurate round that meets the target; the last round when none does
    stopped: str  # why the loop ended where it did


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


def table_factor(reference_ms: float, predicted_ms: float) -> float:
    """The latency table's factor before any round: the unpruned model as measured whole over the sum of its layers
    the table predicts (`predicted_ms`, the caller's one prediction, which a summary also reports). A whole network
    measures below or above its layers' sum (fused epilogues, one call instead of many, a machine busier when
    profiling than now), so every first round starts from this fit."""
    return reference_ms / float(predicted_ms)


@dataclass
class ScaledNetwork:
    """A predictor bound to one network (`NetworkLatency`), times the loop's factor."""

    inner: Any
    scale: float

    def predict_ms(self, widths: dict[str, tuple[int, int]]) -> float:
        return float(self.inner.predict_ms(widths)) * self.scale


def measured_scale(done: Round, drift: float) -> float:
    """The LUT factor that would have predicted what the device measured, aimed a little below the target.

    `drift` is how much slower the unpruned network measures now than at first; dividing by it compares the
    pruned network as if measured then. The aim is below by the measurement's own uncertainty: how far its 95%
    interval reaches above the median (`Round.margin`), at most MAX_MARGIN (a busy machine can spread 10-30%,
    and a margin that size over-prunes or puts the target out of reach)."""
    margin = 1 + min(done.margin, MAX_MARGIN)
    return done.measured_ms / drift / done.predicted_ms * margin


def next_scale(rounds: list[Round], drift: float, slack: float) -> tuple[float | None, str]:
    """The factor for the next round after the last of `rounds`, or None and why the loop should end.

    A miss raises the factor (by at least MIN_STEP: the same factor would prune the same network); a meeting
    round below `slack` of its target lowers it to what was measured. Larger factors prune more, so the
    smallest factor that met and the largest that missed bracket the answer: a proposal outside the bracket
    is replaced by its midpoint, and a bracket narrower than two steps ends the loop."""
    last = rounds[-1]
    if last.meets_target and last.used >= slack:
        return None, f"meets the target using {last.used:.1%} of it" + (
            f" (>= the slack threshold {slack:.0%})" if slack > 0 else " (slack rounds off)"
        )
    met = [r.scale for r in rounds if r.meets_target]
    missed = [r.scale for r in rounds if not r.meets_target]
    high, low = (min(met) if met else None), (max(missed) if missed else None)
    proposal = measured_scale(last, drift)
    if not last.meets_target:
        proposal = max(last.scale * (1 + MIN_STEP), proposal)
    elif proposal > last.scale * (1 - MIN_STEP):
        return None, (
            f"meets using {last.used:.1%} of the target, but the measurement does not show the table over-predicting "
            f"(it asks for x{proposal:.3f}, drift and interval margin included, against x{last.scale:.3f}): pruning "
            "less could miss"
        )
    if high is not None and low is not None:
        if high <= low * (1 + 2 * MIN_STEP):
            return None, (
                f"converged: the factor that met (x{high:.3f}) and the one that missed (x{low:.3f}) are within "
                f"{2 * MIN_STEP:.0%}: no other network between them"
            )
        if not low * (1 + MIN_STEP) <= proposal <= high * (1 - MIN_STEP):
            proposal = math.sqrt(low * high)
    return proposal, ""


def _prune_within_reach(
    steps: LoopSteps[C], index: int, scale: float, rounds: list[Round], target_ms: float, say: Callable[[str], None]
) -> tuple[C, float]:
    """Prune round `index` with `scale`, and return it with the factor used. Where the table puts the target out
    of reach, two cases are worth a round rather than giving up:

    - after a measurement, the margin below the target may be what put it out of reach: aim at the target itself
      once (the factor without the last round's margin), as long as that still prunes more than a factor that
      missed. A noisy measurement's wide interval then costs the margin, not the round.
    - the table's smallest network may be within FLOOR_REACH of the target, in the first round or after a
      correction: the table is a model, so prune to that smallest network and let the device say whether it
      meets (a later round that would prune it again ends the loop: same network, same prediction).
    """
    from edgeprune.pruning.ranking import BudgetUnreachable

    try:
        return steps.prune(index, scale), scale
    except BudgetUnreachable as error:
        unreachable = error
    last = rounds[-1] if rounds else None
    if last is not None and last.correction == scale and min(last.margin, MAX_MARGIN) > 0:
        bare = scale / (1 + min(last.margin, MAX_MARGIN))
        missed = [r.scale for r in rounds if not r.meets_target]
        if not missed or bare > max(missed) * (1 + MIN_STEP):
            say(
                f"round {index}: x{scale:.3f} puts the target out of reach; "
                f"aiming at it without the margin: x{bare:.3f}"
            )
            last.correction = bare
            try:
                return steps.prune(index, bare), bare
            except BudgetUnreachable as error:
                unreachable, scale = error, bare
    if unreachable.minimum > target_ms * FLOOR_REACH:
        raise unreachable
    floor = scale * target_ms / unreachable.minimum * (1 - 1e-6)
    say(
        f"round {index}: the table's smallest network ({unreachable.minimum:.3f} ms) is above the target "
        f"{target_ms:.3f} ms, by less than {FLOOR_REACH - 1:.0%}: measuring it (x{floor:.3f})"
    )
    if last is not None and last.correction == scale:
        last.correction = floor  # the scale this round uses, as the field says
    return steps.prune(index, floor), floor


def prune_to_measured_target(
    steps: LoopSteps[C],
    original_ms: float,
    target_ms: float,
    max_rounds: int,
    scale: float = 1.0,
    relative: float | None = None,
    slack: float = SLACK,
    say: Callable[[str], None] = lambda _text: None,
) -> LoopResult[C]:
    """Prune, measure; correct the latency factor and prune again while the device misses the target, or
    meets it below `slack` x target (0: never); return the most accurate round that meets.

    The unpruned network is measured again beside every candidate, so a machine that got slower or faster since
    `original_ms` (the run's one reference measurement) was taken is not mistaken for an error of the table: the
    correction compares the candidate's time, rescaled to the reference's conditions by the paired ratio, with
    the table's prediction. The target does not move: a `relative` one (0.5 for 0.5x; `target_ms` is it times
    the reference) is judged on the paired candidate/unpruned ratio, an absolute one on the ms. Raises
    `BudgetUnreachable` when the first round cannot reach the target (its table's smallest network more than
    FLOOR_REACH above it: a nearer one is measured, in any round); a later round that cannot, or that prunes
    the same network as an earlier one (same prediction: nothing would change), ends the loop with the reason
    recorded.
    """
    from edgeprune.pruning.ranking import BudgetUnreachable

    if max_rounds < 1:
        raise EdgepruneError(f"--max-rounds must be at least 1, got {max_rounds}")
    if not 0 <= slack < 1:
        raise EdgepruneError(f"--slack must be in [0, 1) (0: no slack rounds), got {slack}")
    rounds: list[Round] = []
    networks: list[C] = []
    stopped = f"{max_rounds} round(s), the most allowed"
    for index in range(1, max_rounds + 1):
        try:
            pruned, scale = _prune_within_reach(steps, index, scale, rounds, target_ms, say)
        except BudgetUnreachable as error:
            if not rounds:
                raise
            stopped = f"round {index}: the corrected target is out of reach: {error.message}"
            break
        scale = steps.pruned_with(index, scale)
        lut_ms = steps.predicted_ms(index, pruned)
        if twin := next((r for r in rounds if r.predicted_ms == lut_ms), None):
            stopped = f"round {index} pruned the same network as round {twin.round} (x{scale:.3f} changes nothing)"
            break
        measured = steps.measure(index, pruned)
        interval, judged_target = measured.judged(target_ms, relative)
        done = Round(
            index,
            scale,
            lut_ms,
            measured.ms,
            measured.spread_ms,
            measured.baseline_ms,
            target_ms,
            measured.meets(relative) if relative else measured.ms <= target_ms,
            steps.accuracy(index, pruned),
            target_ratio=relative,
            ratio=measured.ratio_estimate,
            margin=measured.margin(target_ms, relative),
            verdict=None if interval is None else verdict(interval, judged_target),
        )
        rounds.append(done)
        networks.append(pruned)
        # the drift that puts the candidate at the reference's conditions by the paired ratio
        drift = measured.ms / (measured.ratio_estimate * original_ms)
        proposal, why = next_scale(rounds, drift, slack)
        if proposal is None:
            stopped = why
            break
        done.correction = scale = proposal
        said = "misses" if not done.meets_target else f"meets using {done.used:.1%} of"
        say(
            f"round {index}: measured {measured.ms:.3f} ms {said} the target {target_ms:.3f} ms (unpruned "
            f"measures {measured.baseline_ms:.3f} ms now, ratio {measured.ratio_estimate:.3f}); correcting the "
            f"latency model to x{scale:.3f}"
        )
    say(f"stop: {stopped}")
    meeting = [r for r in rounds if r.meets_target]
    chosen = max(meeting, key=lambda r: (r.accuracy, r.measured_ms)) if meeting else rounds[-1]
    chosen.chosen = True
    return LoopResult(rounds, networks[chosen.round - 1], chosen, stopped)
