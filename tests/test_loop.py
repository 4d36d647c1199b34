"""The closed loop on the fake device (fast tier): a wrong latency table is corrected by what the device
measures, both ways (a miss prunes more, slack under the target prunes less), the most accurate round that
meets is kept, every way the loop ends says why, a loop interrupted mid-round resumes to the same result, and
a new device kind plugs in by registry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from edgeprune.confidence import Interval
from edgeprune.data import Dataset
from edgeprune.devices.profile import list_devices, load_profile
from edgeprune.errors import EdgepruneError
from edgeprune.loop import (
    FLOOR_REACH,
    MIN_STEP,
    Measured,
    Round,
    ScaledPredictor,
    next_scale,
    prune_to_measured_target,
)
from edgeprune.models.io import ModelBundle, load_model
from edgeprune.pruning import PruneSettings, TrainSettings, parse_target, prune_bundle
from edgeprune.pruning.finetune import evaluate
from edgeprune.pruning.ranking import BudgetUnreachable
from tests.fake_device import FakeDevice, FakePredictor, fake_measured

pytestmark = pytest.mark.usefixtures("one_thread")

FAKE_PROFILE = """
name = "{name}"
kind = "fake"
[target]
kind = "llvm"
[tracker]
host = "127.0.0.1"
port = 9190
key = "fake"
[timing]
repeat = 3
"""


def fake_device(folder: Path, name: str = "bench-fake") -> FakeDevice:
    path = folder / f"{name}.toml"
    path.write_text(FAKE_PROFILE.format(name=name))
    device = load_profile(path)
    assert isinstance(device, FakeDevice)
    return device


def test_a_new_kind_loads_from_its_profile_by_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_PROFILES_DIR", str(tmp_path))
    device = fake_device(tmp_path)
    assert device.kind == "fake" and device.timing.repeat == 3 and device.timings_are_real is False
    assert device.to_json()["kind"] == "fake" and device.lut_dir == tmp_path / "bench-fake"
    assert [d.kind for d in list_devices(tmp_path)[0]] == ["local", "fake"]


@dataclass
class FakeRounds:
    """The loop's steps over the fake device: prune with `global` (no fine-tuning), measure by formula, score on
    the validation split; each can be bent per round to make the case a test needs."""

    device: FakeDevice
    bundle: ModelBundle
    data: Dataset
    predictor: FakePredictor
    target_ms: float
    baseline_ms: float
    unreachable_after: int | None = None  # from this round on the table predicts 1000x: no network is fast enough
    unreachable_above: float | None = None  # a factor above this puts the target out of reach
    frozen_after: int | None = None  # from this round on prune with round 1's factor: the same network again
    slower: dict[int, float] = field(default_factory=dict)  # round -> factor on what the device "measures"
    accuracies: dict[int, float] = field(default_factory=dict)  # round -> the accuracy reported instead
    scales: list[float] = field(default_factory=list)

    def prune(self, index: int, scale: float) -> ModelBundle:
        self.scales.append(scale)
        if self.unreachable_above is not None and scale > self.unreachable_above:
            scale *= 1000
        if self.unreachable_after is not None and index > self.unreachable_after:
            scale *= 1000
        if self.frozen_after is not None and index > self.frozen_after:
            scale = self.scales[0]
        settings = PruneSettings(method="global", finetune=TrainSettings(epochs=0))
        target = parse_target("ms", self.target_ms)
        pruned, _ = prune_bundle(self.bundle, self.data, target, settings, ScaledPredictor(self.predictor, scale))
        return pruned

    def pruned_with(self, index: int, scale: float) -> float:
        return scale

    def predicted_ms(self, index: int, candidate: ModelBundle) -> float:
        return self.predictor.predict_ms(candidate.module, candidate.input_shape)

    def measure(self, index: int, candidate: ModelBundle) -> Measured:
        measured = fake_measured(self.device, candidate.module, candidate.input_shape, self.baseline_ms)
        measured.ms *= self.slower.get(index, 1.0)
        return measured

    def accuracy(self, index: int, candidate: ModelBundle) -> float:
        return self.accuracies.get(index) or evaluate(candidate.module, self.data, self.data.val)[1]


@pytest.fixture(scope="module")
def model() -> ModelBundle:
    return load_model("resnet20", (1, 8, 8), 10, width=0.5)


def rounds_for(tmp_path: Path, model: ModelBundle, digits: Dataset, bias: float, fraction: float) -> FakeRounds:
    device = fake_device(tmp_path)
    original = device.latency_ms(model.module, model.input_shape)
    return FakeRounds(device, model, digits, FakePredictor(device, bias), fraction * original, original)


def test_a_table_that_predicts_too_little_is_corrected(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=0.6, fraction=0.6)
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)
    first, kept = result.rounds[0], result.chosen
    assert not first.meets_target and first.measured_ms > steps.target_ms  # believed the table
    assert first.correction == pytest.approx(first.measured_ms / first.predicted_ms, rel=1e-6)  # no spread
    assert kept.meets_target and kept.measured_ms <= steps.target_ms and len(result.rounds) >= 2
    assert steps.scales[1] == first.correction and not first.chosen and kept.chosen


def test_a_right_table_meets_in_one_round(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.0, fraction=0.6)
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)
    assert len(result.rounds) == 1 and result.chosen.meets_target and result.chosen.correction is None
    # what slack the round leaves is the pruner's own (the table is exact): a smaller factor would miss
    assert result.chosen.used >= 0.97 or "does not show the table over-predicting" in result.stopped


def test_a_relative_target_holds_still_and_is_judged_on_the_paired_ratio(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.0, fraction=0.6)
    reference = steps.baseline_ms
    steps.baseline_ms *= 2  # the machine got twice as slow for both networks since the reference was taken
    steps.slower = {1: 2.0}
    result = prune_to_measured_target(steps, reference, steps.target_ms, max_rounds=1, relative=0.6)
    kept = result.chosen
    assert kept.target_ms == pytest.approx(0.6 * reference)  # the target did not move with the load
    assert kept.measured_ms > kept.target_ms and kept.meets_target  # the paired ratio, which the load left alone
    assert kept.ratio == pytest.approx(kept.measured_ms / kept.baseline_ms) and kept.ratio <= 0.6
    assert kept.used == pytest.approx(kept.ratio / 0.6)


def noisy(steps: FakeRounds) -> FakeRounds:
    """The fake's measurements with a paired ratio whose 95% interval reaches 5% above its median."""
    inner = steps.measure

    def measure(index: int, candidate: ModelBundle) -> Measured:
        done = inner(index, candidate)
        r = done.ms / done.baseline_ms
        return replace(done, ratio=Interval(r, r * 0.97, r * 1.05, 0.95, 10))

    steps.measure = measure  # type: ignore[method-assign]
    return steps


def test_a_margin_that_puts_the_target_out_of_reach_is_dropped_once(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    probe = noisy(rounds_for(tmp_path, model, digits, bias=0.6, fraction=0.6))
    margined = prune_to_measured_target(probe, probe.baseline_ms, probe.target_ms, 1, relative=0.6).rounds[0].correction
    assert margined is not None
    steps = noisy(rounds_for(tmp_path, model, digits, bias=0.6, fraction=0.6))
    steps.unreachable_above = margined / 1.02  # the margin's 5% below the target is out of reach, the target is not
    said: list[str] = []
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, 2, relative=0.6, say=said.append)
    first, second = result.rounds
    assert steps.scales == [1.0, pytest.approx(margined), pytest.approx(margined / 1.05)]
    assert second.scale == first.correction == pytest.approx(margined / 1.05)
    assert any("aiming at it without the margin" in line for line in said)


def test_the_margin_and_the_verdict_come_from_the_judged_interval(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    ms, ratio = Interval(1.0, 0.9, 1.2, 0.95, 10), Interval(0.5, 0.49, 0.52, 0.95, 10)
    measured = Measured(1.0, 0.05, 2.0, ms, ratio)
    assert measured.margin(1.1, 0.55) == pytest.approx(0.04) and measured.margin(1.1, None) == pytest.approx(0.2)
    assert Measured(1.0, 0.05, 2.0).margin(1.1, None) == pytest.approx(0.1)  # no samples: twice the spread
    steps = noisy(rounds_for(tmp_path, model, digits, bias=1.0, fraction=0.6))
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=1, relative=0.6)
    first = result.rounds[0]
    assert first.margin == pytest.approx(0.05) and first.verdict in {"MEETS", "TOO CLOSE TO CALL"}
    assert (first.verdict == "MEETS") == (first.ratio * 1.05 <= 0.6)


def test_a_target_out_of_reach_stops_with_the_reason(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=0.6, fraction=0.6)
    steps.unreachable_after = 1
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)
    assert len(result.rounds) == 1 and not result.chosen.meets_target
    assert "round 2: the corrected target is out of reach" in result.stopped
    steps.unreachable_after = 0
    with pytest.raises(BudgetUnreachable):  # nothing to fall back on in the first round
        prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)


def test_a_first_round_just_out_of_reach_measures_the_smallest_network(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.0, fraction=0.01)
    with pytest.raises(BudgetUnreachable) as caught:
        steps.prune(1, 1.0)
    floor = caught.value.minimum
    steps.target_ms, steps.scales = floor / 1.1, []  # 10% below the table's smallest network: within FLOOR_REACH
    said: list[str] = []
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=1, say=said.append)
    assert steps.scales == [1.0, pytest.approx(1 / 1.1, rel=1e-4)] and result.rounds[0].scale == steps.scales[1]
    assert result.rounds[0].predicted_ms == pytest.approx(floor)  # the smallest network, measured
    assert any("smallest network" in line and "measuring it" in line for line in said)
    steps.target_ms = floor / (FLOOR_REACH * 1.05)  # further than FLOOR_REACH: out of reach, said at once
    with pytest.raises(BudgetUnreachable):
        prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=1)


def test_a_corrected_round_just_out_of_reach_measures_the_smallest_network(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    """After round 1's measurement corrects the table, the target may sit just below the corrected table's smallest
    network (a 2-trial table put it 2% above, in test_pipeline): the device measures that network, not nothing."""
    steps = rounds_for(tmp_path, model, digits, bias=1.0, fraction=0.01)
    with pytest.raises(BudgetUnreachable) as caught:
        steps.prune(1, 1.0)
    floor = caught.value.minimum
    steps.target_ms, steps.scales = floor / 1.1, []
    said: list[str] = []
    result = prune_to_measured_target(
        steps, steps.baseline_ms, steps.target_ms, max_rounds=3, scale=0.5, say=said.append
    )
    first, second = result.rounds[:2]
    assert first.scale == 0.5 and not first.meets_target and first.correction is not None
    assert second.predicted_ms == pytest.approx(floor)  # the smallest network, measured after the correction
    assert first.correction == second.scale  # round 1 records the scale round 2 used, not the one out of reach
    assert any(line.startswith("round 2: the table's smallest network") for line in said), said
    assert "same network" in result.stopped or len(result.rounds) == 2


def test_max_rounds_bounds_the_loop(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=0.3, fraction=0.6)
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=1)
    assert len(result.rounds) == 1 and not result.chosen.meets_target and result.chosen.correction is not None
    assert result.stopped == "1 round(s), the most allowed"
    steps = rounds_for(tmp_path, model, digits, bias=2.0, fraction=0.6)  # meets with slack: would prune again
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=1)
    assert result.chosen.meets_target and result.chosen.used < 0.97 and result.chosen.correction is not None
    assert result.stopped == "1 round(s), the most allowed"


def test_slack_under_the_target_is_used(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    """A table that predicts 50% too much makes round 1 prune far below the target; the measurement corrects it."""
    steps = rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6)
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=4)
    first, second = result.rounds[:2]
    assert first.meets_target and first.used < 0.75  # the table's 1.5x leaves a third of the budget unused
    assert first.correction == pytest.approx(first.measured_ms / first.predicted_ms, rel=1e-6) == second.scale
    assert second.scale < first.scale and second.meets_target and second.used > 0.9 and second.used > first.used
    # the untrained network scores alike at any width: a tie goes to the round that uses more of the budget
    kept = max((r for r in result.rounds if r.meets_target), key=lambda r: (r.accuracy, r.measured_ms))
    assert result.chosen is kept and [r.round for r in result.rounds if r.chosen] == [kept.round]
    assert result.candidate.meta["accuracy"] is not None and result.stopped


def test_slack_zero_stops_at_the_first_round_that_meets(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6)
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=4, slack=0)
    assert len(result.rounds) == 1 and result.chosen.used < 0.75 and "slack rounds off" in result.stopped
    with pytest.raises(EdgepruneError, match="--slack must be in"):
        prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=4, slack=1.0)


def test_the_most_accurate_round_that_meets_is_kept(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6)
    steps.accuracies = {1: 0.9, 2: 0.5, 3: 0.5, 4: 0.5}  # the slack round, though larger, scores worse
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=4)
    assert len(result.rounds) >= 2 and all(r.meets_target for r in result.rounds[:2])
    assert result.chosen.round == 1 and result.chosen.accuracy == 0.9
    chosen_ms = steps.device.latency_ms(result.candidate.module, result.candidate.input_shape)
    assert chosen_ms == result.rounds[0].measured_ms  # the network returned is round 1's, not the last one


def test_a_miss_after_a_meeting_round_does_not_replace_it(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6)
    steps.slower = {2: 1.5}  # the slack round measures over the target (a noisy machine)
    steps.accuracies = {1: 0.5, 2: 0.99}  # and would be the most accurate
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)
    first, second, third = result.rounds
    assert first.meets_target and not second.meets_target and second.scale < first.scale
    assert second.scale < third.scale < first.scale  # the next factor stays between the one that missed and met
    assert result.chosen is not second and result.chosen.meets_target


def test_the_same_network_twice_ends_the_loop(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6)
    steps.frozen_after = 1  # the new factor changes nothing the pruner does
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=4)
    assert len(result.rounds) == 1 and len(steps.scales) == 2  # pruned, recognised, not measured
    assert "round 2 pruned the same network as round 1" in result.stopped and result.chosen.round == 1


def made_round(index: int, scale: float, measured_ms: float, meets: bool) -> Round:
    return Round(index, scale, 1.0, measured_ms, 0.0, 1.0, 1.0, meets, 0.5)


def test_the_factor_stays_in_the_bracket_and_a_narrow_bracket_ends() -> None:
    met, missed = made_round(1, 1.0, 0.5, True), made_round(2, 0.5, 1.3, False)
    scale, _ = next_scale([met, missed], drift=1.0, slack=0.97)  # 1.3 would prune more than what already met
    assert scale == pytest.approx((1.0 * 0.5) ** 0.5)
    close = made_round(2, 1.0 / (1 + 1.5 * MIN_STEP), 1.01, False)
    scale, why = next_scale([met, close], drift=1.0, slack=0.97)
    assert scale is None and why.startswith("converged")


def test_the_correction_and_its_margin() -> None:
    """As far below the target as the 95% interval reaches above the median, at most 10%; a machine 20% slower
    now is not blamed on the table."""
    for margin, drift, expected in ((0.02, 1.0, 1.2 * 1.02), (0.3, 1.0, 1.2 * 1.10), (0.0, 1.2, 1.0)):
        done = Round(1, 0.5, 1.0, 1.2, 0.5, 1.0, 1.0, False, 0.5, margin=margin)
        assert next_scale([done], drift, slack=0.97)[0] == pytest.approx(expected)
    missed = Round(1, 2.0, 1.0, 1.2, 0.0, 1.0, 1.0, False, 0.5)
    assert next_scale([missed], 1.0, 0.97)[0] == pytest.approx(2.0 * (1 + MIN_STEP))  # a missed factor grows


@dataclass
class Interrupted(Exception):
    round: int


@dataclass
class CachedRounds:
    """As a run folder does: each round's network and measurement kept once made, so a rerun reuses them."""

    inner: FakeRounds
    stop_at: int | None = None  # measuring this round is interrupted (Ctrl-C)
    pruned: dict[int, ModelBundle] = field(default_factory=dict)
    measured: dict[int, Measured] = field(default_factory=dict)
    scales: dict[int, float] = field(default_factory=dict)

    def prune(self, index: int, scale: float) -> ModelBundle:
        if index not in self.pruned:
            self.pruned[index] = self.inner.prune(index, scale)
            self.scales[index] = scale
        return self.pruned[index]

    def pruned_with(self, index: int, scale: float) -> float:
        return self.scales[index]

    def predicted_ms(self, index: int, candidate: ModelBundle) -> float:
        return self.inner.predicted_ms(index, candidate)

    def measure(self, index: int, candidate: ModelBundle) -> Measured:
        if index == self.stop_at:
            raise Interrupted(index)
        if index not in self.measured:
            self.measured[index] = self.inner.measure(index, candidate)
        return self.measured[index]

    def accuracy(self, index: int, candidate: ModelBundle) -> float:
        return self.inner.accuracy(index, candidate)


def test_a_loop_interrupted_mid_round_resumes_to_the_same_result(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    whole = rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6)
    expected = prune_to_measured_target(whole, whole.baseline_ms, whole.target_ms, max_rounds=3)
    steps = CachedRounds(rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6), stop_at=2)
    with pytest.raises(Interrupted):
        prune_to_measured_target(steps, steps.inner.baseline_ms, steps.inner.target_ms, max_rounds=3)
    assert sorted(steps.pruned) == [1, 2] and sorted(steps.measured) == [1]
    steps.stop_at = None
    resumed = prune_to_measured_target(steps, steps.inner.baseline_ms, steps.inner.target_ms, max_rounds=3)
    assert len(steps.inner.scales) == len(expected.rounds)  # rounds 1 and 2 were not pruned again
    assert resumed.rounds == expected.rounds and resumed.stopped == expected.stopped


def test_an_earlier_round_measured_again_leaves_the_later_rounds_as_they_were(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    """Resuming after round 1's measurement was lost: it measures differently now, so the loop would propose
    another factor for round 2, but round 2 is pruned already; the loop goes on from the factor it was pruned
    with, and nothing is pruned again."""
    steps = CachedRounds(rounds_for(tmp_path, model, digits, bias=1.5, fraction=0.6))
    first = prune_to_measured_target(steps, steps.inner.baseline_ms, steps.inner.target_ms, max_rounds=3)
    assert len(first.rounds) >= 2
    pruned = len(steps.inner.scales)
    del steps.measured[1]
    steps.inner.slower = {1: 1.1}  # round 1 measures 10% slower this time
    again = prune_to_measured_target(steps, steps.inner.baseline_ms, steps.inner.target_ms, max_rounds=3)
    assert len(steps.inner.scales) == pruned  # no round pruned again
    assert [r.scale for r in again.rounds] == [r.scale for r in first.rounds]
    assert again.rounds[0].correction != first.rounds[0].correction  # the fresh measurement did propose another
    assert again.rounds[1:] == first.rounds[1:] and again.stopped == first.stopped
