"""The closed loop on the fake device (fast tier): a wrong latency table is corrected by what the device
measures, a target out of reach stops the loop with the reason, and a new device kind plugs in by registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeprune.data import Dataset
from edgeprune.devices.profile import list_devices, load_profile
from edgeprune.loop import Measured, ScaledPredictor, prune_to_measured_target
from edgeprune.models.io import ModelBundle, load_model
from edgeprune.pruning import PruneSettings, TrainSettings, parse_target, prune_bundle
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
    """The loop's steps over the fake device: prune with `global` (no fine-tuning), measure by formula."""

    device: FakeDevice
    bundle: ModelBundle
    data: Dataset
    predictor: FakePredictor
    target_ms: float
    baseline_ms: float
    unreachable_after: int | None = None  # from this round on the table predicts 1000x: no network is fast enough
    scales: list[float] = field(default_factory=list)

    def prune(self, index: int, scale: float) -> ModelBundle:
        self.scales.append(scale)
        if self.unreachable_after is not None and index > self.unreachable_after:
            scale *= 1000
        settings = PruneSettings(method="global", finetune=TrainSettings(epochs=0))
        target = parse_target("ms", self.target_ms)
        pruned, _ = prune_bundle(self.bundle, self.data, target, settings, ScaledPredictor(self.predictor, scale))
        return pruned

    def predicted_ms(self, index: int, candidate: ModelBundle) -> float:
        return self.predictor.predict_ms(candidate.module, candidate.input_shape)

    def measure(self, index: int, candidate: ModelBundle) -> Measured:
        return fake_measured(self.device, candidate.module, candidate.input_shape, self.baseline_ms)


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
    first, last = result.rounds[0], result.final
    assert not first.meets_target and first.measured_ms > steps.target_ms  # believed the table
    assert first.correction == pytest.approx(first.measured_ms / first.predicted_ms, rel=1e-6)  # no spread
    assert last.meets_target and last.measured_ms <= steps.target_ms and len(result.rounds) >= 2
    assert steps.scales[1] == first.correction and result.candidate is not None


def test_a_right_table_meets_in_one_round(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.0, fraction=0.6)
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)
    assert len(result.rounds) == 1 and result.final.meets_target and result.final.correction is None


def test_a_relative_target_follows_the_fresh_baseline(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=1.0, fraction=0.6)
    steps.baseline_ms *= 2  # the machine got twice as slow: a 0.6x target is now twice as many ms
    result = prune_to_measured_target(steps, steps.baseline_ms / 2, steps.target_ms, max_rounds=1, relative=0.6)
    assert result.final.target_ms == pytest.approx(0.6 * steps.baseline_ms)


def test_a_target_out_of_reach_stops_with_the_reason(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=0.6, fraction=0.6)
    steps.unreachable_after = 1
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)
    assert len(result.rounds) == 1 and not result.final.meets_target
    assert "out of reach" in (result.final.stopped or "")
    steps.unreachable_after = 0
    with pytest.raises(BudgetUnreachable):  # nothing to fall back on in the first round
        prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=3)


def test_max_rounds_bounds_the_loop(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    steps = rounds_for(tmp_path, model, digits, bias=0.3, fraction=0.6)
    result = prune_to_measured_target(steps, steps.baseline_ms, steps.target_ms, max_rounds=1)
    assert len(result.rounds) == 1 and not result.final.meets_target and result.final.correction is not None
