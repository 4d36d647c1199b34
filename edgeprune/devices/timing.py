"""The one timing path: a compiled Relax library run on a device through RPC, timed with `time_evaluator`.

Profile entries, the profile's calibration network, `estimate --measure`, `verify`, `devices check` and tuning
candidates all take their numbers here, with the device's `TimingSettings`, so every latency edgeprune reports
was taken the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from edgeprune.devices.base import TimingSettings
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from tvm.rpc import RPCSession

    from edgeprune.devices.base import Device

CACHE_FLUSH = "cache_flush_cpu_non_first_arg"  # TVM's pre-processing hook that flushes CPU caches per sample
K = TypeVar("K")


@dataclass
class Timing:
    """Per-run latency over `repeats` samples of `number` runs each (each sample is one mean)."""

    median_ms: float
    spread_ms: float  # half the interquartile range of the samples
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


def load_remote(session: RPCSession, library: Path, remote_name: str | None = None) -> Any:
    """Upload a library (a `.tar` is linked on the device by its server) and load it there, as `remote_name`
    where given: a session keeps what it loaded, and overwriting a loaded library by name crashes the server."""
    remote_name = remote_name or library.name
    session.upload(str(library), target=remote_name)
    return session.load_module(remote_name)


class RemoteTimer:
    """One library loaded on a session, warmed up, ready to be timed again and again.

    `output` is the first run's result (what is compared with PyTorch). A failure on the device, while loading
    or timing, is an `EdgepruneError` naming this library: several timers run in turn, and the error says whose."""

    def __init__(
        self,
        session: RPCSession,
        device: Device,
        library: Path,
        inputs: np.ndarray,
        settings: TimingSettings,
        remote_name: str | None = None,
    ) -> None:
        import tvm
        from tvm import relax

        self.device, self.library = device, Path(library)
        with clear_remote_errors(device, self.library):
            dev = device.runtime_device(session)
            vm = relax.VirtualMachine(load_remote(session, self.library, remote_name), dev)
            self.data = tvm.runtime.tensor(np.ascontiguousarray(inputs, dtype="float32"), dev)
            result = vm["main"](self.data)
            self.output = result.numpy() if hasattr(result, "numpy") else np.asarray(result[0].numpy())
            for _ in range(settings.warmup - 1):
                vm["main"](self.data)
            self._timer = vm.time_evaluator(
                "main",
                dev,
                number=settings.number,
                repeat=settings.repeat,
                min_repeat_ms=settings.min_repeat_ms,
                f_preproc=CACHE_FLUSH if settings.cache_flush else "",
            )
        self.settings = settings
        self.number = settings.number

    def samples_ms(self) -> list[float]:
        """One call of the evaluator: `repeat` samples in ms."""
        with clear_remote_errors(self.device, self.library):
            return [float(s) * 1e3 for s in self._timer(self.data).results]


def run_remote(
    session: RPCSession, device: Device, library: Path, inputs: np.ndarray, settings: TimingSettings
) -> tuple[Timing, np.ndarray]:
    """Time `main` of a Relax VM library on an open session; return its timing and output."""
    timer = RemoteTimer(session, device, library, inputs, settings)
    return Timing.from_samples(timer.samples_ms(), settings.number), timer.output


class Sampler(Protocol):
    """Anything timed like `time_evaluator`: each call gives samples, each the mean of `number` runs (a
    `RemoteTimer` on the device, ONNX Runtime's `HostTimer` in this process)."""

    number: int

    def samples_ms(self) -> list[float]: ...


def sample_in_turn(timers: Mapping[K, Sampler], rounds: int) -> dict[K, list[list[float]]]:
    """One call of each timer in turn, `rounds` times over; per timer, the ms samples of each round. A slow
    change in the device's load then affects all of them alike."""
    samples: dict[K, list[list[float]]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(timer.samples_ms())
    return samples


def time_alternating(
    session: RPCSession,
    device: Device,
    items: list[tuple[str, Path, np.ndarray]],
    rounds: int,
    settings: TimingSettings,
) -> dict[str, list[list[float]]]:
    """Time several libraries on one session in alternation (`sample_in_turn`). Each library is uploaded once
    (a second upload under the same name would crash the server)."""
    timers = {name: RemoteTimer(session, device, path, inputs, settings) for name, path, inputs in items}
    return sample_in_turn(timers, rounds)


@contextmanager
def clear_remote_errors(device: Device, library: Path) -> Iterator[None]:
    """TVM surfaces a failure on the device as several types: each becomes one error naming the library and
    the device."""
    try:
        yield
    except EdgepruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM surfaces remote failures as several types
        raise EdgepruneError(
            f"running {Path(library).name} on device '{device.name}' failed: {type(exc).__name__}: {exc}"
        ) from exc


def measure_library(
    device: Device,
    library: Path,
    inputs: np.ndarray,
    settings: TimingSettings | None = None,
    timeout: float = 30.0,
) -> tuple[Timing, np.ndarray]:
    """Request a session on the device, then `run_remote` (whose timer turns RPC failures into clear errors)."""
    if not Path(library).exists():
        raise EdgepruneError(f"library {library} not found")
    session = device.request_session(timeout=timeout)
    return run_remote(session, device, Path(library), inputs, settings or device.timing)
