"""ONNX Runtime on the artifact's own `model.onnx`: what the compile bought, next to the TVM measurement.

A user compiles with edgeprune rather than run ONNX Runtime only if the compiled model is faster, so `verify`
shows both, measured alike: ORT runs in this process, which is only the device's machine when the device's
libraries run on this host; there the TVM server's thread count is asked for, and ORT given the same.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.devices.base import Device, TimingSettings


def available(device: Device) -> bool:
    """ONNX Runtime can stand beside the device's measurement: importable here, and here is the device."""
    return device.runs_on_host and importlib.util.find_spec("onnxruntime") is not None


def remote_threads(session: Any) -> int:
    """The threads the device's TVM runtime runs a model with (TVM_NUM_THREADS, else its own default)."""
    return int(session.get_function("runtime.NumThreads")())


class HostTimer:
    """A callable timed in this process as `time_evaluator` times on the device: `warmup` runs, then each
    sample is the mean of `number` runs, `number` raised until a sample lasts `min_repeat_ms`; `repeat`
    samples a call, like `RemoteTimer.samples_ms`."""

    def __init__(self, run: Callable[[], Any], settings: TimingSettings) -> None:
        self.run = run
        self.repeat = settings.repeat
        for _ in range(max(settings.warmup, 1)):
            run()
        self.number = settings.number
        while self._sample_ms() * self.number < settings.min_repeat_ms:
            self.number *= 2

    def _sample_ms(self) -> float:
        start = time.perf_counter()
        for _ in range(self.number):
            self.run()
        return (time.perf_counter() - start) * 1e3 / self.number

    def samples_ms(self) -> list[float]:
        return [self._sample_ms() for _ in range(self.repeat)]


def session(onnx_file: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session on `threads` intra-op threads (one inter-op: a CNN is one chain)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


def timer(onnx_file: Path, inputs: np.ndarray, threads: int, settings: TimingSettings) -> HostTimer:
    """A warmed-up timer of ORT on `onnx_file` with `inputs` as its only input."""
    ort_session = session(onnx_file, threads)
    feed = {ort_session.get_inputs()[0].name: np.ascontiguousarray(inputs, dtype="float32")}
    return HostTimer(lambda: ort_session.run(None, feed), settings)
