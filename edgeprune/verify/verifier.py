"""The verify stage: run an artifact on the device and hold it to its budget, its baseline and PyTorch.

Latency is measured the way every edgeprune number is (`devices.timing`: upload over RPC, a warm-up run,
then `time_evaluator` repeats; median and half the interquartile range). Outputs are compared with the
PyTorch output stored at compile time for the same input, within RTOL/ATOL.

The verdict comes with its confidence (`verify.confidence`): MEETS when the median's 95% interval lies at or
below the target, MISSES when above, and TOO CLOSE TO CALL when the target lies inside it, after more samples (up
to MORE_SAMPLES x --repeat) did not settle it. A relative target (`target_ratio`) is judged on the paired
pruned/baseline ratio, an absolute one on the measured ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import atomic
from edgeprune.compile.artifacts import VERIFY_FILE, Artifact, load_artifact
from edgeprune.confidence import TOO_CLOSE, Interval, median_interval, ratio_interval, verdict
from edgeprune.devices import health
from edgeprune.devices.base import Device
from edgeprune.devices.timing import RemoteTimer, Sampler, Timing, sample_in_turn
from edgeprune.errors import EdgepruneError
from edgeprune.targets import parse_target
from edgeprune.verify import ort
from edgeprune.verify.defaults import ATOL, MORE_SAMPLES, RTOL


@dataclass
class VerifyResult:
    artifact: Path
    device: str
    timing: Timing
    max_abs_diff: float
    outputs_match: bool
    target_ms: float | None
    target_source: str | None  # "--target-ms", "pruning budget" or "0.5x of the baseline"
    baseline: Path | None = None
    baseline_timing: Timing | None = None
    predicted_ms: float | None = None
    timings_are_real: bool = True  # False on an emulated board: its times are the emulator's
    ort_timing: Timing | None = None  # ONNX Runtime on the same model.onnx, same threads (device on this host)
    ort_threads: int | None = None
    ort_error: str | None = None  # why ONNX Runtime could not be timed beside it (TVM's figures stand anyway)
    ort_baseline_timing: Timing | None = None  # ONNX Runtime on the baseline's model.onnx, same threads
    interval: Interval | None = None  # the measured median's 95% interval
    ratio: Interval | None = None  # the paired artifact/baseline ratio's median and interval (with a baseline)
    target_ratio: float | None = None  # a relative target (0.5: half the baseline), judged on `ratio`
    health: dict[str, Any] | None = None  # the board's health before and after the measurement, with warnings

    @property
    def measured_ms(self) -> float:
        return self.timing.median_ms

    @property
    def meets_target(self) -> bool | None:
        """The point estimate against the target (the ratio's for a relative target); `verdict` says whether
        the interval is sure of it."""
        if self.target_ratio is not None and self.ratio is not None:
            return self.ratio.estimate <= self.target_ratio
        return None if self.target_ms is None else self.measured_ms <= self.target_ms

    @property
    def verdict(self) -> str | None:
        """MEETS, MISSES or TOO CLOSE TO CALL; None without a target."""
        judged = _judged(self.interval, self.ratio, self.target_ms, self.target_ratio)
        return None if judged is None else verdict(*judged)

    @property
    def speedup(self) -> float | None:
        return None if self.baseline_timing is None else self.baseline_timing.median_ms / self.measured_ms

    @property
    def prediction_error_pct(self) -> float | None:
        """(predicted - measured) / measured: positive when the latency table was pessimistic."""
        if self.predicted_ms is None:
            return None
        return (self.predicted_ms - self.measured_ms) / self.measured_ms * 100.0

    @property
    def passed(self) -> bool:
        """Outputs match PyTorch and the target (when there is one) holds."""
        return self.outputs_match and self.meets_target is not False

    def to_json(self) -> dict[str, Any]:
        return {
            "measured_ms": self.measured_ms,
            "measured_spread_ms": self.timing.spread_ms,
            "target_ms": self.target_ms,
            "target_source": self.target_source,
            "meets_target": self.meets_target,
            "verdict": self.verdict,
            "interval": None if self.interval is None else self.interval.to_json(),
            "target_ratio": self.target_ratio,
            "ratio": None if self.ratio is None else self.ratio.to_json(),
            "health": self.health,
            "baseline_ms": None if self.baseline_timing is None else self.baseline_timing.median_ms,
            "baseline_spread_ms": None if self.baseline_timing is None else self.baseline_timing.spread_ms,
            "speedup": self.speedup,
            "predicted_ms": self.predicted_ms,
            "prediction_error_pct": self.prediction_error_pct,
            "max_abs_diff": self.max_abs_diff,
            "outputs_match": self.outputs_match,
            "tolerance": {"rtol": RTOL, "atol": ATOL},
            "passed": self.passed,
            "artifact": str(self.artifact),
            "baseline": None if self.baseline is None else str(self.baseline),
            "device": self.device,
            "timings_are_real": self.timings_are_real,
            "timing": self.timing.to_json(),
            "baseline_timing": None if self.baseline_timing is None else self.baseline_timing.to_json(),
            "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self._ort_json(),
        }

    def _ort_json(self) -> dict[str, Any]:
        """The ORT keys, present only when ORT was measured (absent: not comparable here)."""
        if self.ort_timing is None:
            return {} if self.ort_error is None else {"ort_error": self.ort_error}
        keys = {
            "ort_ms": self.ort_timing.median_ms,
            "ort_spread_ms": self.ort_timing.spread_ms,
            "ort_threads": self.ort_threads,
        }
        if (base := self.ort_baseline_timing) is not None:
            keys |= {"ort_baseline_ms": base.median_ms, "ort_baseline_spread_ms": base.spread_ms}
        return keys


ORT_KEYS = ("ort_ms", "ort_spread_ms", "ort_threads")  # what verify.json holds when ONNX Runtime was measured


def ort_timing(verified: dict[str, Any] | None) -> dict[str, Any]:
    """ONNX Runtime's timing from a verify.json (`VerifyResult.to_json`), for a run's or sweep's summary: empty
    when it was not measured (onnxruntime not installed, or the device is not this host)."""
    return {k: verified[k] for k in ORT_KEYS if verified and verified.get(k) is not None}


def _normalized(target: dict[str, Any]) -> dict[str, Any]:
    return {k: sorted(v) if isinstance(v, list) else v for k, v in target.items()}


def check_compatible(artifact: Artifact, device: Device) -> None:
    """Refuse an artifact built for another target or architecture than the device: it would crash on the
    board, or run code tuned for another CPU and report a latency that means nothing."""
    hint = f"compile it for this device: edgeprune compile MODEL --device {device.name} -o DIR"
    if _normalized(artifact.target) != _normalized(device.target):
        raise EdgepruneError(
            f"{artifact.folder} was compiled for device '{artifact.device}' (target {artifact.target}), "
            f"not for device '{device.name}' (target {device.target})",
            hint=hint,
        )
    mismatch = device.library_mismatch(artifact.library)
    if mismatch:
        raise EdgepruneError(mismatch, hint=hint)


def _judged(
    interval: Interval | None, ratio: Interval | None, target_ms: float | None, target_ratio: float | None
) -> tuple[Interval, float] | None:
    """The interval a target is judged on and the target: the ratio's for a relative target, else the ms'."""
    if target_ratio is not None and ratio is not None:
        return ratio, target_ratio
    if target_ms is not None and interval is not None:
        return interval, target_ms
    return None


@dataclass
class SideBySide:
    """What one verify measured: the artifact (timing and output), and beside it the baseline artifact and
    ONNX Runtime where there were any (or why ORT could not run the model). `samples`: each timer's samples in
    the order taken (the artifact's i-th and the baseline's i-th were taken one after the other: a pair)."""

    timing: Timing
    output: np.ndarray
    baseline: Timing | None
    ort: Timing | None
    ort_threads: int | None
    ort_error: str | None
    samples: dict[str, list[float]]
    ort_baseline: Timing | None = None

    @property
    def interval(self) -> Interval:
        return median_interval(self.samples["artifact"])

    @property
    def ratio(self) -> Interval | None:
        if "baseline" not in self.samples:
            return None
        return ratio_interval(self.samples["artifact"], self.samples["baseline"])


Enough = Callable[[dict[str, list[float]]], bool]


def sample_until(timers: Mapping[str, Sampler], repeat: int, enough: Enough | None = None) -> dict[str, list[float]]:
    """`repeat` rounds of `sample_in_turn`, then `repeat` more while `enough(samples)` says no, up to MORE_SAMPLES x
    `repeat` rounds in all; each timer's samples in the order taken. The first timer's count is the rounds'."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    first = next(iter(timers))
    while not samples[first] or (
        enough is not None and len(samples[first]) < MORE_SAMPLES * repeat and not enough(samples)
    ):
        for name, taken in sample_in_turn(timers, repeat).items():
            samples[name] += sum(taken, [])
    return samples


def measure_side_by_side(
    artifact: Artifact,
    device: Device,
    base: Artifact | None = None,
    repeat: int | None = None,
    enough: Enough | None = None,
) -> SideBySide:
    """The artifact on the device, and with it the baseline artifact and (where `ort.available`) ONNX Runtime
    on the artifact's model.onnx (and the baseline's) with the TVM server's thread count: one sample of each in
    turn, `repeat` times (the device's timing settings otherwise).

    Taken in alternation, load that comes and goes on the device hits all of them alike, so the pruned/baseline
    ratio a relative target is checked against is steadier than two measurements taken one after the other
    (taken so, one quiet run's re-measured baseline ranged 2.01-2.46 ms between rounds).

    While `enough(samples)` says no, another `repeat` rounds are taken, up to MORE_SAMPLES x `repeat` in all."""
    settings = device.timing.with_counts(repeat=repeat)
    one = settings.with_counts(repeat=1)
    reference_input, _ = artifact.reference()
    session = device.request_session()
    tvm_timer = RemoteTimer(session, device, artifact.library, reference_input, one)
    timers: dict[str, Sampler] = {"artifact": tvm_timer}
    if base is not None:
        # its own name on the device: a session keeps what it loaded, and both may be called model.tar
        timers["baseline"] = RemoteTimer(
            session, device, base.library, base.reference()[0], one, f"baseline-{base.library.name}"
        )
    ort_threads = ort_error = None
    if ort.available(device):
        try:
            ort_threads = ort.remote_threads(session)
            ort_timer = ort.timer(artifact.folder / artifact.manifest["onnx"], reference_input, ort_threads, one)
            ort_timer.samples_ms()  # a model ORT cannot run fails here, before any of TVM's samples are taken
            ort_timers: dict[str, Sampler] = {"ort": ort_timer}
            if base is not None:  # the runtime a user would ship the unpruned model with, beside TVM's baseline
                base_onnx = base.folder / base.manifest["onnx"]
                ort_timers["ort-baseline"] = ort.timer(base_onnx, base.reference()[0], ort_threads, one)
            timers |= ort_timers  # both or neither: a failure above leaves TVM's figures alone
        except Exception as exc:  # noqa: BLE001 - ORT reports an op or opset it lacks as several types
            ort_threads, ort_error = None, f"{type(exc).__name__}: {exc}"
    samples = sample_until(timers, settings.repeat, enough)  # a remote failure names its library (RemoteTimer)
    timings = {name: Timing.from_samples(samples[name], timer.number) for name, timer in timers.items()}
    return SideBySide(
        timings["artifact"],
        tvm_timer.output,
        timings.get("baseline"),
        timings.get("ort"),
        ort_threads,
        ort_error,
        samples,
        timings.get("ort-baseline"),
    )


def enough(target_ms: float | None, target_ratio: float | None, precision: float | None) -> Enough:
    """When verify has samples enough: the verdict is decided (not TOO CLOSE TO CALL) and, with `precision`, the
    interval the target is judged on (the paired ratio's for a relative target, else the median's) is within
    +-precision. The closed loop aims below its target by that interval's reach above the median, so a round
    measured with a wide one aims far below (10 pairs reached 4-15% above the median on a quiet machine, 20-80
    pairs 0.2-0.8%: bench/results/budget-measured.md)."""

    def settled(samples: dict[str, list[float]]) -> bool:
        interval = median_interval(samples["artifact"])
        pairs = samples.get("baseline")
        ratio = None if pairs is None else ratio_interval(samples["artifact"], pairs)
        judged = _judged(interval, ratio, target_ms, target_ratio)
        if precision is not None and (interval if judged is None else judged[0]).half_width > precision:
            return False
        return judged is None or verdict(*judged) != TOO_CLOSE

    return settled


def verify_artifact(
    folder: Path,
    device: Device,
    target_ms: float | None = None,
    baseline: Path | None = None,
    repeat: int | None = None,
    target_ratio: float | None = None,
    precision: float | None = None,
) -> VerifyResult:
    """Measure the artifact on the device (with the baseline artifact in alternation, same settings), compare
    outputs with PyTorch's, and write `verify.json` into the artifact folder.

    Without `target_ms` the pruning budget recorded in the manifest is the target, if there is one. Where
    ONNX Runtime is importable and the device runs on this host, ORT is timed on the same model.onnx in the
    same alternation (`ort_ms` in verify.json), and on the baseline's (`ort_baseline_ms`).

    `target_ratio` (with `baseline`: 0.5 for `--target 0.5x`) judges a relative target on the paired ratio of
    artifact to baseline samples (its `target_ms` is that share of the baseline's median, for the record; the
    manifest's pruning budget does not apply). More samples are taken while the verdict is TOO CLOSE TO CALL,
    or, with `precision` (0.01: +-1%), while the interval it is judged on is wider (`enough`): how a run's one
    reference measurement of the unpruned network, and each of its rounds, is taken.
    """
    if target_ms is not None:
        parse_target("ms", target_ms)  # the same check, and message, as every other latency budget
    if repeat is not None and repeat < 3:
        raise EdgepruneError(f"--repeat must be at least 3 for a median and a spread, got {repeat}")
    if target_ratio is not None and not 0 < target_ratio < 1:
        raise EdgepruneError(f"a relative target must be in (0, 1), got {target_ratio}")
    if target_ratio is not None and baseline is None:
        raise EdgepruneError(
            f"a relative target ({target_ratio:g}x) is a fraction of the baseline's latency: give the baseline",
            hint="--baseline DIR: the unpruned model's artifacts, compiled for the same device",
        )
    artifact = load_artifact(folder)
    check_compatible(artifact, device)
    base = load_artifact(baseline) if baseline is not None else None
    if base is not None:
        check_compatible(base, device)
    source = "--target-ms" if target_ms is not None else None
    if target_ms is None and target_ratio is None and artifact.pruning_target_ms is not None:
        target_ms, source = artifact.pruning_target_ms, "pruning budget"

    before = device.health()  # what the board says of its clocks and heat, on either side of the measurement
    with device.serving():
        measured = measure_side_by_side(artifact, device, base, repeat, enough(target_ms, target_ratio, precision))
    after = device.health()

    if target_ms is None and target_ratio is not None and measured.baseline is not None:
        # what the relative target is in ms at this measurement's baseline (it is judged on the ratio)
        target_ms, source = target_ratio * measured.baseline.median_ms, f"{target_ratio:g}x of the baseline"
    _, expected = artifact.reference()
    output = np.asarray(measured.output)
    if output.shape != expected.shape:
        raise EdgepruneError(
            f"the device returned an output of shape {list(output.shape)}; PyTorch's was {list(expected.shape)}"
        )
    result = VerifyResult(
        artifact=artifact.folder,
        device=device.name,
        timing=measured.timing,
        max_abs_diff=float(np.max(np.abs(output - expected))),
        outputs_match=bool(np.allclose(output, expected, rtol=RTOL, atol=ATOL)),
        target_ms=target_ms,
        target_source=source,
        baseline=None if base is None else base.folder,
        baseline_timing=measured.baseline,
        predicted_ms=artifact.predicted_ms,
        timings_are_real=device.timings_are_real,
        ort_timing=measured.ort,
        ort_threads=measured.ort_threads,
        ort_error=measured.ort_error,
        ort_baseline_timing=measured.ort_baseline,
        interval=measured.interval,
        ratio=measured.ratio,
        target_ratio=target_ratio,
        health=health.record(before, after),
    )
    atomic.write_json(artifact.folder / VERIFY_FILE, result.to_json())
    return result
