"""`compile`: real TVM builds, tuning candidates measured through the real local RPC farm, artifact folders."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.compile import artifacts
from edgeprune.compile.compiler import CompileResult, compile_model
from edgeprune.devices.profile import Device, load_device
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle, load_model, save_model

SHAPE = (1, 8, 8)
CROSS_COMPILER = "aarch64-linux-gnu-g++"
MANIFEST_KEYS = {
    "format",
    "version",
    "library",
    "onnx",
    "input",
    "output",
    "target",
    "device",
    "tvm_version",
    "tuning",
    "source_model",
    "pruning",
    "predicted_ms",
    "files",
}


def small_model(width: float = 0.5) -> ModelBundle:
    return load_model("lenet5", SHAPE, 10, width=width)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from edgeprune.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, " ".join(err.split())  # rich wraps lines at the terminal width


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_on_host(library: Path, x: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def elf_e_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    assert header[5] == 1, "expected a little-endian ELF"
    return struct.unpack("<H", header[18:20])[0]


@pytest.fixture(scope="module")
def lenet() -> ModelBundle:
    return small_model()


@pytest.fixture(scope="module")
def untuned(lenet: ModelBundle, local_farm: Device, tmp_path_factory: pytest.TempPathFactory) -> CompileResult:
    return compile_model(lenet, local_farm, tmp_path_factory.mktemp("untuned") / "art", trials_per_task=0)


@pytest.fixture(scope="module")
def tuning_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tuning-db")


@pytest.fixture(scope="module")
def tuned(local_farm: Device, tuning_db: Path, tmp_path_factory: pytest.TempPathFactory) -> CompileResult:
    progress: list[tuple[int, int]] = []
    result = compile_model(
        small_model(),
        local_farm,
        tmp_path_factory.mktemp("tuned") / "art",
        trials_per_task=2,
        db_dir=tuning_db,
        on_trials=lambda done, total, _best: progress.append((done, total)),
    )
    assert progress and progress[-1][0] == progress[-1][1], f"progress never reached its total: {progress}"
    return result


def test_manifest_has_the_agreed_shape(untuned: CompileResult, local_farm: Device) -> None:
    import tvm

    folder = untuned.artifact.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest) == MANIFEST_KEYS
    assert (manifest["format"], manifest["version"]) == ("edgeprune-artifact", 1)
    assert manifest["library"] == "model.so" and manifest["onnx"] == "model.onnx"
    assert manifest["input"] == {"name": "input", "shape": [1, *SHAPE], "dtype": "float32"}
    assert manifest["output"] == {"shape": [1, 10], "dtype": "float32"}
    assert manifest["target"] == local_farm.target and manifest["device"] == "local"
    assert manifest["tvm_version"] == tvm.__version__
    assert manifest["tuning"]["trials"] == 0 and manifest["tuning"]["tasks"] > 0
    assert manifest["source_model"]["path"] == "zoo:lenet5" and len(manifest["source_model"]["sha256"]) == 64
    assert manifest["pruning"] is None and manifest["predicted_ms"] is None
    assert {name: sha256(folder / name) for name in manifest["files"]} == manifest["files"]
    assert "model.so" in manifest["files"] and "model.onnx" in manifest["files"]


def test_untuned_library_matches_pytorch(untuned: CompileResult, lenet: ModelBundle) -> None:
    folder = untuned.artifact.folder
    x = np.random.default_rng(1).standard_normal((1, *SHAPE)).astype("float32")
    with torch.no_grad():
        expected = lenet.module.eval()(torch.from_numpy(x)).numpy()
    assert np.allclose(run_on_host(folder / "model.so", x), expected, rtol=1e-4, atol=1e-5)
    reference_input, reference_output = untuned.artifact.reference()
    assert np.allclose(run_on_host(folder / "model.so", reference_input), reference_output, rtol=1e-4, atol=1e-5)


def test_source_digest_of_a_zoo_model_identifies_its_weights(untuned: CompileResult, lenet: ModelBundle) -> None:
    from edgeprune.compile.compiler import source_model

    assert source_model("lenet5", lenet) == untuned.artifact.manifest["source_model"]
    with torch.no_grad():
        next(lenet.module.parameters())[0].add_(1.0)
    try:
        assert source_model("lenet5", lenet)["sha256"] != untuned.artifact.manifest["source_model"]["sha256"]
    finally:
        with torch.no_grad():
            next(lenet.module.parameters())[0].sub_(1.0)


def test_tuning_measures_candidates_on_the_device(tuned: CompileResult, tuning_db: Path, local_farm: Device) -> None:
    report = tuned.tuning
    assert report.tasks > 0 and report.tasks_reused == 0
    assert report.trials == 2 * report.tasks and report.failed < report.trials
    assert tuned.artifact.manifest["tuning"] == {
        "trials": report.trials,
        "tasks": report.tasks,
        "tasks_reused": 0,
        "tasks_transplanted": 0,
        "database": str(tuning_db.resolve()),
        "config": TuningConfig(trials=2).to_json(),
        "layout": TuningConfig().conv_layout(local_farm.target, local_farm.channel_step),
    }
    records = (tuning_db / "database_tuning_record.json").read_text().splitlines()
    assert len(records) >= report.trials - report.failed
    reference_input, reference_output = tuned.artifact.reference()
    got = run_on_host(tuned.artifact.library, reference_input)
    assert np.allclose(got, reference_output, rtol=1e-4, atol=1e-5)


def test_second_compile_reuses_the_tuning_database(
    tuned: CompileResult, tuning_db: Path, local_farm: Device, tmp_path: Path
) -> None:
    started: list[tuple[int, int]] = []
    again = compile_model(
        small_model(), local_farm, tmp_path / "again", 2, tuning_db, on_tuning_start=lambda *a: started.append(a)
    )
    assert started == [(tuned.tuning.tasks, tuned.tuning.tasks)]
    assert (again.tuning.tasks_reused, again.tuning.trials) == (tuned.tuning.tasks, 0)
    assert again.artifact.manifest["tuning"]["tasks_reused"] == tuned.tuning.tasks


def test_a_narrower_variant_gets_its_familys_schedules_transplanted(
    tuned: CompileResult, tuning_db: Path, local_farm: Device, tmp_path: Path
) -> None:
    db = tmp_path / "db"
    shutil.copytree(tuning_db, db)
    config = TuningConfig(trials=2, transplant=True)
    narrower = compile_model(small_model(0.25), local_farm, tmp_path / "narrow", db_dir=db, tuning=config)
    report = narrower.tuning
    assert report.tasks_transplanted > 0 and report.tasks_reused + report.tasks_transplanted <= report.tasks
    assert report.trials == 2 * (report.tasks - report.tasks_reused - report.tasks_transplanted)
    reference_input, reference_output = narrower.artifact.reference()
    assert np.allclose(run_on_host(narrower.artifact.library, reference_input), reference_output, atol=1e-5)
    again = compile_model(small_model(0.25), local_farm, tmp_path / "again", 2, db)  # transplants were committed
    assert (again.tuning.tasks_reused, again.tuning.trials) == (again.tuning.tasks, 0)


def test_the_time_budget_stops_tuning_and_keeps_what_it_measured(
    local_farm: Device, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Also where MetaSchedule's output goes: its tuning table is in the log a command attaches, and nothing of
    it on the terminal (file descriptors 1 and 2, so TVM's C++ side is watched too)."""
    from edgeprune.logs import tvm_log
    from edgeprune.tvmx import export, tune

    # one conv, one task: the budget stops it after its first batch (lenet5's 5 tasks cost a batch each)
    one_conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
    mod = export.to_relax(one_conv, (1, *SHAPE)).mod
    capfd.readouterr()
    with tvm_log(tmp_path / "logs" / "tvm.log") as log:
        report = tune.tune(mod, local_farm, 64, tmp_path / "db", config=TuningConfig(minutes=0.01))
    assert report.tasks == 1 and report.out_of_time and 0 < report.trials <= 16  # one round of a batch
    out, err = capfd.readouterr()
    assert "Total trials" not in out + err and "task_scheduler" not in out + err, (out + err)[-2000:]
    assert "Total trials" in log.read_text() and " ID |" in log.read_text()
    assert tune.tune(mod, local_farm, 64, tmp_path / "db").tasks_reused == report.tasks  # its records are kept


def test_cli_compile_json_and_replacing_an_artifact(
    untuned: CompileResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-art"
    args = ["compile", "lenet5", "--device", "local", "--input-shape", "1x8x8", "--width", "0.5", "--trials", "0"]
    code, stdout, _ = run_cli(capsys, *args, "-o", str(out), "--json")
    assert code == 0
    result = json.loads(stdout)
    assert {"artifacts", "target", "trials", "tasks", "tasks_reused", "seconds"} <= set(result)
    assert result["artifacts"] == str(out) and result["trials"] == 0
    assert result["tasks"] == untuned.tuning.tasks and result["tasks_reused"] == 0
    first = sha256(out / "manifest.json")
    (out / "stale.txt").write_text("from an earlier compile")
    code, _, _ = run_cli(capsys, *args, "--width", "0.25", "-o", str(out))
    assert code == 0
    assert not (out / "stale.txt").exists() and sha256(out / "manifest.json") != first


def test_saved_pruned_model_carries_its_pruning_summary(local_farm: Device, tmp_path: Path) -> None:
    bundle = small_model()
    bundle.meta["pruning"] = {"method": "legr", "target_ms": 0.5, "predicted_ms": 0.42, "notes": [Path("x")]}
    saved = save_model(bundle, tmp_path / "pruned.pt")
    result = compile_model(load_model(str(saved)), local_farm, tmp_path / "art", 0, source=str(saved))
    manifest = result.artifact.manifest
    assert manifest["source_model"] == {"path": str(saved.resolve()), "sha256": sha256(saved)}
    assert manifest["pruning"]["method"] == "legr" and manifest["pruning"]["notes"] == ["x"]
    assert manifest["predicted_ms"] == 0.42
    assert result.artifact.pruning_target_ms == 0.5


def test_bad_input_is_refused_before_anything_is_written(
    local_farm: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "compile", "nosuchnet", "--device", "local", "-o", str(tmp_path / "a"))
    assert code == 2 and "unknown MODEL" in err and not (tmp_path / "a").exists()
    code, _, err = run_cli(
        capsys, "compile", "lenet5", "--device", "local", "--trials", "-1", "-o", str(tmp_path / "a")
    )
    assert code == 2 and "--trials" in err and not (tmp_path / "a").exists()
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(EdgepruneError, match="refusing to replace"):
        compile_model(small_model(), local_farm, precious, 0)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_tuning_for_a_board_nobody_serves_fails_fast(isolated_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    board = load_device("raspberry-pi-4")
    if shutil.which(CROSS_COMPILER) is None:
        pytest.skip(f"{CROSS_COMPILER} is not installed (apt-get install g++-aarch64-linux-gnu)")
    with pytest.raises(EdgepruneError, match="no RPC server|not reachable"):
        compile_model(small_model(), board, tmp_path / "pi", trials_per_task=2, db_dir=tmp_path / "db")
    assert not (tmp_path / "pi").exists()


def test_cross_compile_for_raspberry_pi_4_is_an_aarch64_shared_object(
    isolated_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if shutil.which(CROSS_COMPILER) is None:
        pytest.skip(f"{CROSS_COMPILER} is not installed (apt-get install g++-aarch64-linux-gnu)")
    board = load_device("raspberry-pi-4")
    result = compile_model(small_model(), board, tmp_path / "pi", trials_per_task=0)
    assert result.artifact.library.name == "model.so"
    assert elf_e_machine(result.artifact.library) == 183  # EM_AARCH64
    assert result.artifact.manifest["target"]["mtriple"] == "aarch64-linux-gnu"


def test_board_without_cross_compiler_gets_a_tar_to_link_itself(
    isolated_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import dataclasses

    board = dataclasses.replace(load_device("raspberry-pi-4"), cross_compiler=None)
    result = compile_model(small_model(), board, tmp_path / "pi-tar", trials_per_task=0)
    assert result.artifact.library.name == "model.tar"
    assert artifacts.load_artifact(tmp_path / "pi-tar").manifest["library"] == "model.tar"


def test_one_tuning_run_per_database_and_a_second_waits_its_turn(
    local_farm: Device, lenet: ModelBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two runs on one shared board take turns on its tuning database: the second says for whom it waits and
    goes on once the first has finished, rather than failing (issue 35: shared boards)."""
    import fcntl
    import logging
    import os
    import threading
    import time

    from edgeprune.tvmx import export, tune

    relax_model = export.to_relax(lenet.module, (1, *SHAPE))
    (tmp_path / "db").mkdir()
    fd = os.open(tmp_path / "db" / ".lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"pid 1 (`edgeprune profile lenet5`) since then")  # who holds it, as a holder records itself
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another process tuning into this database would
    released = threading.Timer(1.5, os.close, (fd,))  # that process finishes 1.5 s later
    started = time.monotonic()
    released.start()
    with caplog.at_level(logging.WARNING, logger="edgeprune.tvmx.measure"):
        report = tune.tune(relax_model.mod, local_farm, 0, tmp_path / "db")
    released.join()
    assert time.monotonic() - started >= 1.4  # it waited for the holder
    assert report.trials == 0
    assert "waiting for pid 1 (`edgeprune profile lenet5`)" in caplog.text and str(tmp_path / "db") in caplog.text


def test_tuning_at_a_seed_draws_the_same_candidates(local_farm: Device, tmp_path: Path) -> None:
    """Two tunings of one network at one seed measure the same schedules: until it has 100 measurements
    MetaSchedule's XGBoost model scores candidates with numpy's global generator, which drew other schedules in
    every run (a 1-2 trial table was a random draw, and tests that read one were flaky)."""

    def traces(name: str) -> list[str]:
        db = tmp_path / name
        compile_model(small_model(), local_farm, tmp_path / f"{name}-out", 2, db)
        records = (db / "database_tuning_record.json").read_text().splitlines()
        return sorted(json.dumps(json.loads(line)[1][0]) for line in records)

    np.random.seed(123)
    first = traces("first")
    np.random.seed(456)  # the caller's own numpy stream does not decide the draw
    assert traces("second") == first
