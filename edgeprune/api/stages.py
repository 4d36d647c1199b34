"""The single-model stages: profile, latency model, compile, verify, deploy (`edgeprune profile` ... `deploy`).

Each takes the model as `models.bundle` does (a module and an example input, or a MODEL string with the
CLI's --input-shape, --classes and --width) and calls the library function the CLI command calls; the
progress callbacks are what the CLI draws its bars from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.api.models import Shape, bundle, need_device
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeprune.compile.compiler import CompileResult
    from edgeprune.devices.base import Device
    from edgeprune.models.io import ModelBundle
    from edgeprune.profiling.profiler import ProfileReport
    from edgeprune.pruning.budget import LatencyPredictor
    from edgeprune.verify.verifier import VerifyResult


def profile(
    model: nn.Module | str,
    example_input: torch.Tensor | None = None,
    device: Device | None = None,
    *,
    input_shape: Shape | None = None,
    classes: int | None = None,
    width: float = 1.0,
    parallel: bool = False,
    trials: int | None = None,
    tuning_minutes: float | None = None,
    grid: int | None = None,
    repeat: int | None = None,
    number: int | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> ProfileReport:
    """Measure the latency-table entries `model` needs on `device` (`edgeprune profile`): resumable, and
    entries already measured for other models are reused. Returns what was measured and where it is stored.

    `repeat` and `number` override the device's timing, `trials` and `tuning_minutes` its `[tuning]`;
    `on_progress(phase, done, total)` reports each phase (tuning, network, entries)."""
    from edgeprune.profiling.profiler import profile_model

    dev = need_device(device, "profile")
    net = bundle(model, example_input, input_shape=input_shape, classes=classes, width=width)
    return profile_model(
        net,
        dev,
        grid=grid,
        settings=dev.timing.with_counts(number=number, repeat=repeat),
        parallel=parallel,
        trials=trials,
        on_progress=on_progress,
        tuning=dev.tuning.with_changes(minutes=tuning_minutes),
    )


@dataclass
class LatencyModel:
    """A device's latency model for one network and its input size: `predict_ms(model)` for the network or any
    pruned variant of it, `estimate()` for the per-layer breakdown `edgeprune estimate` prints."""

    predictor: LatencyPredictor
    network: ModelBundle

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.network.input_shape

    def predict_ms(self, model: nn.Module) -> float:
        """Predicted milliseconds of one inference on the device, from its latency table."""
        return self.predictor.predict_ms(model, self.input_shape)

    def estimate(self, *, min_keep: float = 0.1, measure: bool = False, trials: int | None = None) -> dict[str, Any]:
        """The network's predicted latency per layer, and the smallest latency pruning can reach on the table's
        grid with every layer at `min_keep` of its channels (what `prune` refuses targets under): `edgeprune
        estimate --json`. With `measure`, the network is also compiled as `compile` does (`trials` per new task)
        and measured on the device, beside the prediction's error."""
        from edgeprune.profiling.profiler import measure_network
        from edgeprune.pruning.budget import Target, bind
        from edgeprune.pruning.groups import analyze
        from edgeprune.pruning.ranking import smallest_reachable

        net, device = self.network, self.predictor.device
        predicted = self.predictor.model.estimate(net.module, net.input_shape)
        budget = bind(
            Target("ms", 1.0, relative=True), net.module, analyze(net.module, net.input_shape), self.predictor
        )
        result: dict[str, Any] = {
            "model": net.name,
            "device": device.name,
            "timings_are_real": device.timings_are_real,
            "input_shape": list(net.input_shape),
            "predicted_ms": round(predicted.predicted_ms, 6),
            "min_reachable_ms": round(smallest_reachable(budget, min_keep), 6),
            "min_keep": min_keep,
            "layer_sum_ms": round(predicted.layer_sum_ms, 6),
            "calibration_ratio": round(predicted.ratio, 6),
            "calibration_ms": round(predicted.calibration_ms, 6),
            "flops": predicted.flops,
            "params": sum(p.numel() for p in net.module.parameters()),
            "layers": [row.to_json() for row in predicted.layers],
        }
        if measure:
            timing, tuning = measure_network(net, device, trials)
            result["measured_ms"] = round(timing.median_ms, 6)
            result["measured_spread_ms"] = round(timing.spread_ms, 6)
            result["error_pct"] = round(100.0 * (predicted.predicted_ms - timing.median_ms) / timing.median_ms, 3)
            result["tasks_tuned"] = tuning.tasks - tuning.tasks_reused
        return result


def latency_model(
    device: Device,
    model: nn.Module | str,
    example_input: torch.Tensor | None = None,
    *,
    profile_missing: bool = True,
    input_shape: Shape | None = None,
    classes: int | None = None,
    width: float = 1.0,
) -> LatencyModel:
    """The device's latency model for `model` (what `edgeprune estimate` predicts with); with `profile_missing`,
    entries the model lacks are measured first (a one-off cost on a new device; later calls reuse the table),
    else a missing entry is an error that says how to profile it."""
    from edgeprune.pruning.budget import LatencyPredictor

    net = bundle(model, example_input, input_shape=input_shape, classes=classes, width=width)
    named = model if isinstance(model, str) else None  # how a hint names the model to profile
    return LatencyModel(LatencyPredictor(device, net, profile_missing, named), net)


def compile(  # shadows the builtin inside this module only: ep.compile reads as the stage it is
    model: nn.Module | str,
    example_input: torch.Tensor | None = None,
    device: Device | None = None,
    out: str | Path = "artifacts",
    *,
    input_shape: Shape | None = None,
    classes: int | None = None,
    width: float = 1.0,
    trials: int | None = None,
    tuning_minutes: float | None = None,
    tuning_db: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_tuning_start: Callable[[int, int], None] | None = None,
    on_trials: Callable[[int, int, float | None], None] | None = None,
) -> CompileResult:
    """Export, tune on the device (`trials` per task its tuning database lacks, by default the device's
    `[tuning]` setting; 0: untuned; `tuning_minutes` at most), build, and write the artifact folder `out`
    (`edgeprune compile`); verify and deploy take the result or the folder.

    `tuning_db` is another tuning database folder than the device's. `on_stage(name)` names each step (export,
    check, tune, build, write), `on_tuning_start(tasks, reused)` and `on_trials(done, total, best_ms)` report
    the tuning."""
    from edgeprune.compile.compiler import compile_model

    dev = need_device(device, "compile")
    net = bundle(model, example_input, input_shape=input_shape, classes=classes, width=width)
    return compile_model(
        net,
        dev,
        Path(out),
        trials,
        tuning=dev.tuning.with_changes(minutes=tuning_minutes),
        db_dir=Path(tuning_db) if tuning_db is not None else None,
        source=model if isinstance(model, str) else None,  # a saved file is hashed into the manifest
        on_stage=on_stage,
        on_tuning_start=on_tuning_start,
        on_trials=on_trials,
    )


def _folder(artifacts: str | Path | CompileResult) -> Path:
    """An artifact folder given as a path or as what `compile` returned."""
    return Path(artifacts) if isinstance(artifacts, (str, Path)) else artifacts.artifact.folder


def verify(
    artifacts: str | Path | CompileResult,
    device: Device,
    *,
    target_ms: float | None = None,
    target: str | None = None,
    baseline: str | Path | None = None,
    repeat: int | None = None,
) -> VerifyResult:
    """Measure the compiled model on the device and check its outputs against PyTorch (`edgeprune verify`);
    `result.passed`, `result.measured_ms`, `result.meets_target`, `result.verdict` (MEETS, MISSES or TOO CLOSE
    TO CALL, from the 95% interval). Writes `verify.json` into the folder.

    The target is `target_ms`, or `target="0.5x"`: a fraction of `baseline`'s latency, judged on the paired
    ratio of the two measured in alternation (`result.ratio`), as `run` judges its rounds."""
    from edgeprune.targets import parse_relative
    from edgeprune.verify.verifier import verify_artifact

    if target_ms is not None and target is not None:
        raise EdgepruneError("give one target: --target-ms T (ms) or --target 0.5x (of --baseline's latency)")
    return verify_artifact(
        _folder(artifacts),
        device,
        target_ms,
        Path(baseline) if baseline is not None else None,
        repeat,
        target_ratio=None if target is None else parse_relative(target),
    )


@dataclass
class _DeployProgress:
    """The upload's three signals (step, total, bytes sent) as one `on_progress(step, done_bytes, total_bytes)`."""

    report: Callable[[str, int, int], None]
    step: str = "preparing"
    done: int = 0
    total: int = 0

    def stage(self, text: str) -> None:
        self.step = text
        self.report(self.step, self.done, self.total)

    def upload(self, total: int) -> None:
        self.total = total
        self.report(self.step, self.done, self.total)

    def sent(self, count: int) -> None:
        self.done += count
        self.report(self.step, self.done, self.total)


def deploy(
    artifacts: str | Path | CompileResult,
    device: Device,
    *,
    smoke: bool = True,
    ignore_device_mismatch: bool = False,
    name: str | None = None,
    trust_new_host: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Upload the artifact folder to the device over SSH, check it and (with `smoke`) smoke-run it there
    (`edgeprune deploy`); returns where it went and the smoke run's result.

    `on_progress(step, done_bytes, total_bytes)` follows it (total 0 until the upload starts)."""
    from edgeprune.deploy.deployment import deploy_artifact

    shown = _DeployProgress(on_progress) if on_progress is not None else None
    callbacks = {"on_stage": shown.stage, "on_upload": shown.upload, "on_bytes": shown.sent} if shown else {}
    return deploy_artifact(
        _folder(artifacts),
        device,
        name=name,
        trust_new_host=trust_new_host,
        smoke=smoke,
        ignore_device_mismatch=ignore_device_mismatch,
        **callbacks,
    )
