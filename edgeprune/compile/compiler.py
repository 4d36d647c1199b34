"""The compile stage: a model to an artifact folder tuned on the device.

The cheap checks that can fail (output folder, cross compiler, the Relax import checked against PyTorch on
this host) run before the minutes spent tuning on the device, so a mistake costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgeprune.compile import artifacts
from edgeprune.devices.base import Device
from edgeprune.devices.local import host_target
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle, file_sha256
from edgeprune.tvmx import export, tune


@dataclass
class CompileResult:
    artifact: artifacts.Artifact
    tuning: tune.TuneReport
    max_abs_diff: float  # Relax vs PyTorch on this host (the shipped build itself when the device is `local`)
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "artifacts": str(self.artifact.folder),
            "device": self.artifact.device,
            "target": self.artifact.target,
            "library": self.artifact.manifest["library"],
            "trials": self.tuning.trials,
            "failed_trials": self.tuning.failed,
            "tasks": self.tuning.tasks,
            "tasks_reused": self.tuning.tasks_reused,
            "tasks_transplanted": self.tuning.tasks_transplanted,
            "tuning_seconds": round(self.tuning.seconds, 2),
            "tuning_out_of_time": self.tuning.out_of_time,
            "database": self.artifact.manifest["tuning"]["database"],
            "max_abs_diff": self.max_abs_diff,
            "seconds": round(self.seconds, 2),
        }


def _weights_sha256(bundle: ModelBundle) -> str:
    """A digest of the weights, for models that are not a file (zoo names, file.py:factory)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(bundle.module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def source_model(spec: str | None, bundle: ModelBundle) -> dict[str, str]:
    """Where the model came from: a saved file and its sha256, or its spec (e.g. `zoo:resnet20`) and a digest
    of its weights."""
    if spec and Path(spec).is_file():
        return {"path": str(Path(spec).resolve()), "sha256": file_sha256(spec)}
    return {"path": str(bundle.meta.get("source", spec or bundle.name)), "sha256": _weights_sha256(bundle)}


def _pruning_summary(bundle: ModelBundle) -> tuple[dict[str, Any] | None, float | None]:
    """The pruner's summary from the model's meta (JSON-safe) and the latency it predicted, if any."""
    pruning = bundle.meta.get("pruning")
    if not isinstance(pruning, dict):
        return None, None
    pruning = json.loads(json.dumps(pruning, default=str))
    predicted = pruning.get("predicted_ms", bundle.meta.get("predicted_ms"))
    is_number = isinstance(predicted, (int, float)) and not isinstance(predicted, bool)
    return pruning, float(predicted) if is_number else None


def _build_for_host(mod: Any) -> Any:
    import tvm

    return tvm.compile(mod, target=tvm.target.Target(host_target()))


def compile_model(
    bundle: ModelBundle,
    device: Device,
    out: Path,
    trials_per_task: int | None = None,
    db_dir: Path | None = None,
    source: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_tuning_start: Callable[[int, int], None] | None = None,
    on_trials: Callable[[int, int, float | None], None] | None = None,
    tuning: TuningConfig | None = None,
) -> CompileResult:
    """Export, check against PyTorch, tune on the device, build for the device and write the artifact
    folder `out`.

    Tuning follows `tuning` (default: the device's `[tuning]`), with `trials_per_task` where given: tasks the
    device's database holds are reused, new shapes of a tuned family get its schedule transplanted where
    `transplant` is on, the rest are tuned with that many trials each; 0 builds the untuned default schedules.

    `source` is the MODEL argument (a saved file is hashed). `on_stage(name)` announces each step;
    `on_tuning_start(tasks, tasks_reused)` and `on_trials(done, total, best_ms)` report tuning (see `tune.tune`).
    """
    import tvm

    start = time.perf_counter()
    stage = on_stage or (lambda _name: None)
    if trials_per_task is not None and trials_per_task < 0:
        raise EdgepruneError(f"--trials must be 0 (untuned) or more, got {trials_per_task}")
    config = (tuning or device.tuning).with_changes(trials=trials_per_task)
    out = Path(out)
    artifacts.check_output_folder(out)
    device.check_toolchain()
    db_dir = Path(db_dir or tune.tuning_db_dir(device))
    input_shape = (1, *bundle.input_shape)

    stage("export")
    relax_model = export.to_relax(bundle.module, input_shape, config.conv_layout(device.target, device.channel_step))
    stage("check")
    host_lib = _build_for_host(relax_model.mod)
    diff = export.check_against_torch(host_lib, bundle.module, input_shape)

    if config.trials > 0:
        stage("tune")
        with device.serving():
            report = tune.tune(
                relax_model.mod, device, None, db_dir, on_progress=on_trials, on_start=on_tuning_start, config=config
            )
        stage("build")
        lib = tune.build(relax_model.mod, device, db_dir)
        if device.runs_on_host:
            diff = export.check_against_torch(lib, bundle.module, input_shape)
    else:
        report = tune.TuneReport(len(tune.extract_tasks(relax_model.mod, device, config)), 0, 0, 0.0)
        stage("build")
        lib = host_lib if device.runs_on_host else tvm.compile(relax_model.mod, target=device.tvm_target())

    stage("write")
    reference_input = bundle.example_input().numpy()
    with torch.no_grad():
        reference_output = bundle.module.eval()(bundle.example_input()).numpy()
    pruning, predicted_ms = _pruning_summary(bundle)
    fields = {
        "target": dict(device.target),
        "device": device.name,
        "tvm_version": str(tvm.__version__),
        "tuning": {
            "trials": report.trials,
            "tasks": report.tasks,
            "tasks_reused": report.tasks_reused,
            "tasks_transplanted": report.tasks_transplanted,
            "database": str(db_dir.resolve()) if config.trials > 0 else "",
            "config": config.to_json(),
            "layout": config.conv_layout(device.target, device.channel_step),  # what the convolutions were compiled in
        },
        "source_model": source_model(source, bundle),
        "pruning": pruning,
        "predicted_ms": predicted_ms,
    }
    artifact = artifacts.write_artifact(
        out,
        lambda folder: device.export(lib, folder),
        relax_model.onnx_bytes,
        reference_input,
        reference_output,
        fields,
    )
    return CompileResult(artifact, report, diff, time.perf_counter() - start)
