"""`edgeprune sweep`: one LeGR search shared by every target, a sub-folder per target, resume, and the report.

The logic runs on the fake device (fast): real LeGR pruning on digits, latency by formula. The real sweep (local
farm, TVM compile and measurement, 2 targets) is marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edgeprune.data import Dataset
from edgeprune.devices.base import Device
from edgeprune.errors import EdgepruneError
from edgeprune.loop import Measured
from edgeprune.models.io import ModelBundle, load_model
from edgeprune.pipeline import Run, RunConfig, _RunRounds
from edgeprune.sweeping import SweepConfig, open_sweep_folder, parse_targets, sweep_targets, target_folder
from tests.fake_device import FakeDevice, FakePredictor, fake_measured
from tests.test_loop import fake_device

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeRounds(_RunRounds):
    """`run`'s rounds over a sweep target's folder, with the fake device's formula instead of compile + measure."""

    def measure(self, index: int, candidate: ModelBundle) -> Measured:
        device = self.lut.device
        unpruned_ms = device.latency_ms(self.bundle.module, self.bundle.input_shape)
        return fake_measured(device, candidate.module, candidate.input_shape, unpruned_ms)


def settings(device: FakeDevice, targets: tuple[str, ...], **changed: object) -> SweepConfig:
    run = RunConfig(
        model="resnet20",
        device=str(device.name),
        target=targets[0],
        data="digits",
        input_shape=(1, 8, 8),
        width=0.5,
        finetune_epochs=0,
        search_minutes=0.5,
        generations=2,
        population=3,
        search_steps=2,
        max_rounds=3,
    )
    return SweepConfig(replace(run, **changed), targets)


@pytest.fixture(scope="module")
def model() -> ModelBundle:
    return load_model("resnet20", (1, 8, 8), 10, width=0.5)


def run_sweep(
    folder: Path, device: FakeDevice, model: ModelBundle, digits: Dataset, targets: tuple[str, ...], **changed: object
) -> list:
    factor = changed.pop("factor", 1.0)
    rounds: type[FakeRounds] = changed.pop("rounds", FakeRounds)  # type: ignore[assignment]
    config = settings(device, targets, **changed)
    folder.mkdir(exist_ok=True)
    shared = Run(config.shared, folder, device)

    def steps(run: Run, target_ms: float) -> FakeRounds:
        return rounds(run, model, digits, FakePredictor(device, bias=0.8), target_ms)

    return sweep_targets(shared, config, device.latency_ms(model.module, model.input_shape), steps, factor)


def test_one_search_serves_every_target_and_a_rerun_resumes(
    tmp_path: Path, model: ModelBundle, digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = fake_device(tmp_path)
    folder = tmp_path / "sweep"
    points = run_sweep(folder, device, model, digits, ("0.7x", "0.5x", "0.04x"))
    learned = json.loads((folder / "learned-legr.json").read_text())
    assert learned["evaluations"] > 0
    first, second, third = points
    # the search ran once, in the first target's first round; the second reused its file
    prune1 = json.loads((folder / "target-0.7x" / "round-1" / "prune.json").read_text())
    prune2 = json.loads((folder / "target-0.5x" / "round-1" / "prune.json").read_text())
    assert prune1["search_evaluations"] > 0 and prune1["reused_search"] is None
    assert prune2["search_evaluations"] == 0 and prune2["reused_search"] == str(folder / "learned-legr.json")
    # a table predicting 20% too little is corrected per target by the fake device's 'measurement'
    for point in (first, second):
        assert point["meets_target"] and point["measured_ms"] <= point["target_ms"]
        assert point["flops"] < device.latency_ms(model.module, model.input_shape) / 0.4 * 1e6
        assert point["speedup"] > 1 and point["rounds"][0]["scale"] == 1.0
    assert second["measured_ms"] < first["measured_ms"] and second["flops"] < first["flops"]
    assert "unreachable" in third and "smallest reachable" in third["unreachable"]  # recorded; the sweep went on
    assert json.loads((folder / "target-0.5x" / "point.json").read_text()) == second
    # a rerun with one more target reuses every pruned network and prunes only the new one
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("target-*/round-*/pruned.pt")}
    pruned_in: list[str] = []
    prune = FakeRounds.prune

    def recorded(self: FakeRounds, index: int, scale: float) -> ModelBundle:
        pruned_in.append(self.run.folder.name)
        return prune(self, index, scale)

    monkeypatch.setattr(FakeRounds, "prune", recorded)
    again = run_sweep(folder, device, model, digits, ("0.7x", "0.5x", "0.04x", "0.6x"))
    assert again[:3] == points
    assert "target-0.04x" not in pruned_in and "target-0.6x" in pruned_in  # out of reach is recorded, not redone
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (folder / "target-0.6x" / "round-1" / "pruned.pt").is_file()


def test_the_factor_measured_on_the_unpruned_network_saves_the_correcting_round(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    device = fake_device(tmp_path)
    # the table predicts 20% too little; the unpruned network measured / predicted = 1 / 0.8 says so up front
    (point,) = run_sweep(tmp_path / "s", device, model, digits, ("0.6x",), method="global", factor=1 / 0.8)
    assert len(point["rounds"]) == 1 and point["meets_target"] and point["rounds"][0]["scale"] == 1 / 0.8


class LoadedRounds(FakeRounds):
    """The machine got 1.5x slower for both networks alike since the sweep's reference was measured."""

    def measure(self, index: int, candidate: ModelBundle) -> Measured:
        measured = super().measure(index, candidate)
        return replace(measured, ms=measured.ms * 1.5, baseline_ms=measured.baseline_ms * 1.5)


def test_the_reference_holds_still_and_rounds_are_judged_on_the_paired_ratio(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    device = fake_device(tmp_path)
    unpruned = device.latency_ms(model.module, model.input_shape)
    points = run_sweep(tmp_path / "s", device, model, digits, ("0.7x", "0.5x"), rounds=LoadedRounds)
    for point, fraction in zip(points, (0.7, 0.5), strict=True):
        rounds = point["rounds"]
        # every round of every target is held to the one reference's target, not to the loaded baseline's
        assert all(r["target_ms"] == pytest.approx(fraction * unpruned) for r in rounds)
        assert all(r["baseline_ms"] == pytest.approx(1.5 * unpruned) for r in rounds)
        assert point["meets_target"] and point["ratio"] <= fraction and point["target_ratio"] == fraction
        assert point["measured_ms"] > point["target_ms"]  # the load made the ms miss; the paired ratio meets


def test_targets_may_be_reordered_or_added_in_front_but_settings_stay(tmp_path: Path) -> None:
    device = fake_device(tmp_path)
    folder = tmp_path / "sweep"
    open_sweep_folder(settings(device, ("0.7x", "0.5x")), folder)
    (folder / "baseline").mkdir()  # work done: from here on the recorded settings hold
    open_sweep_folder(settings(device, ("0.9x", "0.5x", "0.7x")), folder)
    with pytest.raises(EdgepruneError, match=r"other settings \(finetune_epochs\)"):
        open_sweep_folder(settings(device, ("0.7x", "0.5x"), finetune_epochs=1), folder)


def test_a_target_folder_refuses_other_settings(tmp_path: Path, model: ModelBundle, digits: Dataset) -> None:
    device = fake_device(tmp_path)
    folder = tmp_path / "sweep"
    run_sweep(folder, device, model, digits, ("0.7x",))
    with pytest.raises(EdgepruneError, match=r"other settings \(finetune_epochs\)"):
        run_sweep(folder, device, model, digits, ("0.7x",), finetune_epochs=1)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ((), "at least one target"),
        (("0.5x", "0.5x"), "names a target twice"),
        (("0.5x", "1.5x"), "below 1x"),
        (("0.5x", "fast"), "not a number"),
    ],
)
def test_bad_targets_are_refused_up_front(tmp_path: Path, targets: tuple[str, ...], message: str) -> None:
    config = SweepConfig(RunConfig("resnet20", "local", "0.5x"), targets)
    with pytest.raises(EdgepruneError, match=message):
        config.check()


def test_a_sweep_measures_its_own_latency_factor() -> None:
    config = SweepConfig(RunConfig("resnet20", "local", "0.5x", latency_scale=2.0), ("0.5x",))
    with pytest.raises(EdgepruneError, match="--latency-scale does not apply"):
        config.check()


def test_targets_parse_and_name_their_folders() -> None:
    assert parse_targets(" 0.8x, 0.5x,2.5 ,") == ("0.8x", "0.5x", "2.5")
    assert [target_folder(t) for t in ("0.5x", "2.5")] == ["target-0.5x", "target-2.5ms"]
    with pytest.raises(EdgepruneError, match="empty"):
        parse_targets(" , ")


def test_a_millisecond_target_the_unpruned_model_meets_is_refused_before_pruning(
    tmp_path: Path, model: ModelBundle, digits: Dataset
) -> None:
    device = fake_device(tmp_path)
    unpruned = device.latency_ms(model.module, model.input_shape)
    with pytest.raises(EdgepruneError, match="already runs in"):
        run_sweep(tmp_path / "s", device, model, digits, ("0.5x", f"{unpruned * 2:.3f}"))
    assert not (tmp_path / "s" / "target-0.5x").exists()


def test_the_api_and_the_cli_have_the_sweep() -> None:
    import edgeprune as ep
    import edgeprune.sweeping  # noqa: F401 - the library module must not rebind ep.sweep

    assert callable(ep.sweep) and "sweep" in ep.__all__
    with pytest.raises(EdgepruneError, match="fine_tune_epochs"):
        ep.sweep("resnet20", "local", ["0.5x"], fine_tune_epochs=3)
    with pytest.raises(EdgepruneError, match="targets is empty"):
        ep.sweep("resnet20", "local", [])
    shown = subprocess.run([sys.executable, "-m", "edgeprune", "sweep", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--targets" in shown.stdout and "Pareto" in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "edgeprune", "sweep", "resnet20", "-d", "local", "--targets", "0.5x,2x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "below 1x" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_real_sweep_measures_every_target_on_the_local_farm(local_farm: Device, tmp_path: Path) -> None:
    args = [
        "resnet20", "--device", "local", "--data", "digits", "--input-shape", "1x32x32", "--width", "0.5",
        "--targets", "0.9x,0.75x", "--train-epochs", "2", "--finetune-epochs", "1", "--search-minutes", "0.2",
        "--generations", "2", "--population", "3", "--trials", "2", "--max-rounds", "2", "--limit", "600",
    ]  # fmt: skip
    # not 0.6x or below: at this size fixed costs put the 10% floor near it (a loaded machine's table once had its
    # smallest reachable at 0.617 ms against 0.5x = 0.589 ms; with one reference measurement, the quieter unpruned
    # latency put it at 0.67x: the loop then measures the smallest network, which misses, or records the point
    # unreachable when the table's floor is further than loop.FLOOR_REACH away)
    folder = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "edgeprune", "sweep", *args, "--sweep-dir", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert [p["target"] for p in summary["points"]] == ["0.9x", "0.75x"]
    for point in summary["points"]:
        verified = json.loads((Path(point["artifacts"]) / "verify.json").read_text())
        assert verified["outputs_match"] and verified["measured_ms"] == point["measured_ms"]  # measured there
        assert point["flops"] < summary["original"]["flops"] and 0 <= point["accuracy"] <= 1
    assert summary["search"]["evaluations"] > 0
    reused = json.loads((folder / "target-0.75x" / "round-1" / "prune.json").read_text())["reused_search"]
    assert reused == str(folder / "learned-legr.json")
    report = (folder / "report.html").read_text()
    assert "pareto.png" in report and (folder / "pareto.png").stat().st_size > 5000
    assert json.loads((folder / "sweep.json").read_text())["points"] == summary["points"]
