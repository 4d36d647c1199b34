"""`verify`: artifacts measured on the real local RPC farm, held to targets computed from the measurement."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeprune.compile.compiler import compile_model
from edgeprune.devices.profile import Device, load_device
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model, save_model
from edgeprune.verify import ort
from edgeprune.verify.defaults import ATOL
from edgeprune.verify.verifier import verify_artifact

SHAPE = (1, 8, 8)
ISSUE_KEYS = {
    "measured_ms",
    "measured_spread_ms",
    "target_ms",
    "meets_target",
    "baseline_ms",
    "speedup",
    "predicted_ms",
    "prediction_error_pct",
    "max_abs_diff",
}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, " ".join(err.split())  # rich wraps lines at the terminal width


def copy_artifact(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to, ignore=shutil.ignore_patterns("verify.json"))
    return to


def edit_manifest(folder: Path, **changes: object) -> None:
    """Change manifest fields, re-signing every file, as if compile had written them so."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    manifest["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in manifest["files"]}
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def artifact(local_farm: Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "small"
    compile_model(load_model("lenet5", SHAPE, 10, width=0.5), local_farm, out, trials_per_task=0)
    return out


@pytest.fixture(scope="module")
def baseline(local_farm: Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "baseline"
    compile_model(load_model("lenet5", SHAPE, 10, width=1.0), local_farm, out, trials_per_task=0)
    return out


def test_target_holds_or_not_by_the_measurement(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "verify", str(artifact), "--device", "local", "--json")
    assert code == 0
    first = json.loads(out)
    assert set(first) >= ISSUE_KEYS
    measured = first["measured_ms"]
    assert measured > 0 and first["measured_spread_ms"] >= 0
    assert first["target_ms"] is None and first["meets_target"] is None and first["outputs_match"] is True
    assert json.loads((artifact / "verify.json").read_text())["measured_ms"] == measured
    assert first["health"]["before"]["read_from"] == "this machine" and "warnings" in first["health"]

    code, out, _ = run_cli(capsys, "verify", str(artifact), "--device", "local", "--target-ms", "1e6", "--json")
    assert code == 0 and json.loads(out)["meets_target"] is True

    code, _, err = run_cli(capsys, "verify", str(artifact), "--device", "local", "--target-ms", "1e-6")
    assert code == 1 and "MISSES" in err and "FAIL" in err and "95% interval" in err
    assert "ONNX Runtime" in err and "TVM/ORT" in err  # onnxruntime is a dependency: the line is there
    saved = json.loads((artifact / "verify.json").read_text())
    assert saved["meets_target"] is False and saved["target_ms"] == pytest.approx(1e-6)
    interval = saved["interval"]
    assert saved["verdict"] == "MISSES" and interval["low"] <= saved["measured_ms"] <= interval["high"]


def test_onnx_runtime_is_timed_on_the_same_onnx_in_alternation(artifact: Path, local_farm: Device) -> None:
    result = verify_artifact(artifact, local_farm, repeat=3)
    saved = json.loads((artifact / "verify.json").read_text())
    assert saved["ort_ms"] == result.ort_timing.median_ms > 0 and saved["ort_spread_ms"] >= 0
    assert saved["ort_threads"] >= 1 and result.ort_timing.repeats == result.timing.repeats == 3
    assert result.outputs_match  # the TVM output of the alternating measurement is the one compared
    assert not {"ort_ms", "ort_spread_ms", "ort_threads"} & set(replace(result, ort_timing=None).to_json())


def test_a_model_onnx_runtime_cannot_run_leaves_the_verify_to_tvm(
    artifact: Path, local_farm: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORT is a side measurement: an op or opset it lacks is recorded, TVM's timing and the check stand."""

    def refuses(*_args: object) -> None:
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation")

    monkeypatch.setattr(ort, "timer", refuses)
    result = verify_artifact(artifact, local_farm, repeat=3)
    saved = json.loads((artifact / "verify.json").read_text())
    assert result.outputs_match and saved["measured_ms"] > 0 and "ort_ms" not in saved
    assert saved["ort_error"].startswith("RuntimeError: [ONNXRuntimeError]")


def test_onnx_runtime_is_not_timed_for_a_board() -> None:
    # ORT would run on this host, not on the board: a comparison that means nothing is left out
    assert not ort.available(load_device("raspberry-pi-4"))


def test_speedup_is_measured_against_the_baseline(artifact: Path, baseline: Path, local_farm: Device) -> None:
    result = verify_artifact(artifact, local_farm, baseline=baseline)
    data = result.to_json()
    assert data["baseline_ms"] > 0 and data["baseline"] == str(baseline)
    assert data["speedup"] == pytest.approx(data["baseline_ms"] / data["measured_ms"])
    assert data["timing"]["repeats"] == data["baseline_timing"]["repeats"]
    # ONNX Runtime (a regular dependency) on each side's own model.onnx, in the same alternation
    assert data["ort_ms"] > 0 and data["ort_baseline_ms"] > 0 and data["ort_baseline_spread_ms"] >= 0
    assert result.ort_baseline_timing.repeats == result.timing.repeats


def test_a_relative_target_is_judged_on_the_measured_paired_ratio(
    artifact: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeprune.confidence import Interval, verdict

    args = ("verify", str(artifact), "--device", "local", "--baseline", str(baseline), "--target", "0.01x")
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "0.01x of the baseline" in err and "MISSES" in err and "pairs measured in turn" in err
    saved = json.loads((artifact / "verify.json").read_text())
    ratio = saved["ratio"]
    assert saved["target_ratio"] == 0.01 and saved["target_ms"] == pytest.approx(0.01 * saved["baseline_ms"])
    assert ratio["low"] <= ratio["estimate"] <= ratio["high"] and ratio["samples"] == saved["timing"]["repeats"]
    assert saved["verdict"] == "MISSES" == verdict(Interval(**ratio), 0.01) and saved["passed"] is False


def test_the_baseline_is_timed_in_alternation_with_the_artifact(
    artifact: Path, baseline: Path, local_farm: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sample for sample in turn (a relative target compares the two: drift between two separate measurements
    would move it), each library loaded under its own name though both files are model.tar."""
    from edgeprune.devices import timing

    order: list[str] = []
    real_init, real_samples = timing.RemoteTimer.__init__, timing.RemoteTimer.samples_ms

    def named(self: timing.RemoteTimer, session: object, device: Device, library: Path, *rest: object) -> None:
        real_init(self, session, device, library, *rest)  # type: ignore[arg-type]
        self.folder = Path(library).parent.name  # the artifact's folder: "small" or "baseline"

    def recorded(self: timing.RemoteTimer) -> list[float]:
        order.append(self.folder)
        return real_samples(self)

    monkeypatch.setattr(timing.RemoteTimer, "__init__", named)
    monkeypatch.setattr(timing.RemoteTimer, "samples_ms", recorded)
    result = verify_artifact(artifact, local_farm, baseline=baseline, repeat=4)
    assert order == ["small", "baseline"] * 4
    assert result.timing.repeats == result.baseline_timing.repeats == 4 and result.outputs_match


def test_outputs_that_differ_from_pytorch_fail(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = copy_artifact(artifact, tmp_path / "wrong")
    reference = np.load(wrong / "reference_output.npy")
    np.save(wrong / "reference_output.npy", reference + np.float32(0.5))
    edit_manifest(wrong)
    code, out, _ = run_cli(capsys, "verify", str(wrong), "--device", "local", "--json")
    result = json.loads(out)
    assert code == 1 and result["outputs_match"] is False and result["passed"] is False
    assert result["max_abs_diff"] == pytest.approx(0.5, abs=ATOL)


def test_changed_files_are_refused(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    changed = copy_artifact(artifact, tmp_path / "changed")
    with open(changed / "model.so", "ab") as fh:
        fh.write(b"\0")
    code, _, err = run_cli(capsys, "verify", str(changed), "--device", "local")
    assert code == 2 and "sha256" in err
    code, _, err = run_cli(capsys, "verify", str(tmp_path), "--device", "local")
    assert code == 2 and "not an artifact folder" in err


def test_artifact_for_another_target_is_refused(
    artifact: Path, tmp_path: Path, local_farm: Device, isolated_env: pytest.MonkeyPatch
) -> None:
    board = load_device("raspberry-pi-4")
    moved = copy_artifact(artifact, tmp_path / "for-pi")
    edit_manifest(moved, target=board.target, device=board.name)
    with pytest.raises(EdgepruneError, match="compiled for device 'raspberry-pi-4'"):
        verify_artifact(moved, local_farm)
    assert not (moved / "verify.json").exists()


def test_library_for_another_architecture_is_refused(
    tmp_path: Path, local_farm: Device, isolated_env: pytest.MonkeyPatch
) -> None:
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64-linux-gnu-g++ is not installed (apt-get install g++-aarch64-linux-gnu)")
    board = load_device("raspberry-pi-4")
    pi = compile_model(load_model("lenet5", SHAPE, 10, width=0.5), board, tmp_path / "pi", 0).artifact.folder
    with pytest.raises(EdgepruneError, match="not for device 'local'"):
        verify_artifact(pi, local_farm)
    edit_manifest(pi, target=local_farm.target, device="local")  # a manifest that lies about its library
    with pytest.raises(EdgepruneError, match="aarch64 code"):
        verify_artifact(pi, local_farm)


def test_prediction_error_and_the_pruning_budget(local_farm: Device, tmp_path: Path) -> None:
    bundle = load_model("lenet5", SHAPE, 10, width=0.5)
    bundle.meta["pruning"] = {"method": "legr", "target_ms": 1000.0, "predicted_ms": 0.05}
    saved = save_model(bundle, tmp_path / "pruned.pt")
    compile_model(load_model(str(saved)), local_farm, tmp_path / "art", 0, source=str(saved))
    result = verify_artifact(tmp_path / "art", local_farm).to_json()
    assert (result["target_ms"], result["target_source"], result["meets_target"]) == (1000.0, "pruning budget", True)
    measured = result["measured_ms"]
    assert result["predicted_ms"] == 0.05
    assert result["prediction_error_pct"] == pytest.approx((0.05 - measured) / measured * 100)


def test_bad_options_exit_2(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "verify", str(artifact), "--device", "local", "--target-ms", "0")
    assert code == 2 and "--target-ms" in err
    code, _, err = run_cli(capsys, "verify", str(artifact), "--device", "local", "--target-ms", "nan")
    assert code == 2 and "a target must be a positive number of milliseconds" in err
    code, _, err = run_cli(capsys, "verify", str(artifact), "--device", "local", "--repeat", "1")
    assert code == 2 and "--repeat" in err
    code, _, err = run_cli(capsys, "verify", str(artifact), "--device", "nosuchboard")
    assert code == 2 and "unknown device" in err
