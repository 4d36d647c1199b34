"""Run a compiled Relax library on a device through RPC: latency with `time_evaluator`, and its outputs.

The same call times a profiling entry, a whole network for `estimate --measure` and an artifact in `verify`,
so every latency number edgeprune reports was taken the same way.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.devices.rpc import request_session
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from tvm.rpc import RPCSession

    from edgeprune.devices.profile import DeviceProfile


@dataclass
class Timing:
    """Per-run latency over `repeat` repeats of `number` runs each (each repeat is one mean)."""

    median_ms: float
    spread_ms: float  # half the interquartile range of the repeats
    min_ms: float
    max_ms: float
    repeats: int
    number: int

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_samples(cls, samples_ms: list[float], number: int) -> Timing:
        ordered = sorted(samples_ms)
        quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
        return cls(
            median_ms=statistics.median(ordered),
            spread_ms=(quartiles[2] - quartiles[0]) / 2,
            min_ms=ordered[0],
            max_ms=ordered[-1],
            repeats=len(ordered),
            number=number,
        )


def load_remote(session: RPCSession, library: Path) -> Any:
    """Upload a library (a `.tar` is linked on the device by its server) and load it there."""
    session.upload(str(library))
    return session.load_module(library.name)


def run_remote(
    session: RPCSession,
    library: Path,
    inputs: np.ndarray,
    number: int = 10,
    repeat: int = 7,
    min_repeat_ms: int = 50,
) -> tuple[Timing, np.ndarray]:
    """Time `main` of a Relax VM library on an open session (warm-up run included); return timing, output."""
    import tvm
    from tvm import relax

    dev = session.cpu(0)
    vm = relax.VirtualMachine(load_remote(session, library), dev)
    data = tvm.runtime.tensor(np.ascontiguousarray(inputs, dtype="float32"), dev)
    output = vm["main"](data)  # warm-up, and the output to compare with PyTorch
    result = vm.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)(data)
    samples = [float(s) * 1e3 for s in result.results]
    out = output.numpy() if hasattr(output, "numpy") else np.asarray(output[0].numpy())
    return Timing.from_samples(samples, number), out


def measure_library(
    device: DeviceProfile,
    library: Path,
    inputs: np.ndarray,
    number: int = 10,
    repeat: int = 7,
    min_repeat_ms: int = 50,
    timeout: float = 30.0,
) -> tuple[Timing, np.ndarray]:
    """Request a session on the device, then `run_remote`; RPC failures become clear errors."""
    if not Path(library).exists():
        raise EdgepruneError(f"library {library} not found")
    session = request_session(device, timeout=timeout)
    try:
        return run_remote(session, Path(library), inputs, number, repeat, min_repeat_ms)
    except EdgepruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM surfaces remote failures as several types
        raise EdgepruneError(
            f"running {Path(library).name} on device '{device.name}' failed: {type(exc).__name__}: {exc}"
        ) from exc
