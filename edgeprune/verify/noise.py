"""`edgeprune devices bench`: how noisy a device's measurements are, on a fixed kernel.

A user asking for a 2% margin on a board whose samples scatter by 5% is asking for many samples, or for a
quieter board; this says which before an hour of pruning does. The kernel is one naive float32 matmul
(MATMUL x MATMUL, default schedule: no tuning, the same code every time), timed the way every edgeprune number
is (`time_evaluator`, the device's `[timing]`), `samples` times; the answer is the spread of those samples, the
median's 95% interval, and about how many samples a +-1% interval would need (`confidence.samples_for`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeprune.confidence import median_interval, samples_for
from edgeprune.devices import rpc
from edgeprune.devices.base import Device
from edgeprune.devices.timing import Timing, clear_remote_errors
from edgeprune.errors import EdgepruneError

MATMUL = 128  # 2M multiply-adds: a few ms naive on a Pi's core, long enough to time, short enough to repeat
PRECISION = 0.01  # the interval `samples_for_1pct` is about


def check_samples(samples: int) -> None:
    """Refuse too few samples before anything starts (fewer than 6 have no 95% interval on their median)."""
    if samples < 6:
        raise EdgepruneError(f"--samples must be at least 6 for a 95% interval on the median, got {samples}")


def bench(device: Device, samples: int = 30, timeout: float = rpc.DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Time the fixed kernel `samples` times on the device; its spread, interval and the samples +-1% needs."""
    import numpy as np
    import tvm
    from tvm import te

    check_samples(samples)
    n = MATMUL
    a, b = te.placeholder((n, n), name="a"), te.placeholder((n, n), name="b")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    lib = rpc.build_kernel(device, tvm.IRModule({"main": te.create_prim_func([a, b, c])}))
    session = device.request_session(timeout=timeout)
    settings = device.timing.with_counts(repeat=samples)
    with tempfile.TemporaryDirectory() as tmp:
        path = device.export(lib, Path(tmp), stem="edgeprune_bench")
        with clear_remote_errors(device, path):
            session.upload(str(path))
            module = session.load_module(path.name)
            dev = device.runtime_device(session)
            rng = np.random.default_rng(0)
            args = [tvm.runtime.tensor(rng.random((n, n), dtype="float32"), dev) for _ in range(2)]
            args.append(tvm.runtime.tensor(np.zeros((n, n), dtype="float32"), dev))
            evaluator = module.time_evaluator(
                "main", dev, number=settings.number, repeat=samples, min_repeat_ms=settings.min_repeat_ms
            )
            taken = [float(s) * 1e3 for s in evaluator(*args).results]
    timing = Timing.from_samples(taken, settings.number)
    interval = median_interval(taken)
    spread = timing.spread_ms / timing.median_ms
    return {
        "device": device.name,
        "timings_are_real": device.timings_are_real,
        "kernel": f"matmul {n}x{n}x{n} float32, default schedule",
        "samples": samples,
        "number": settings.number,
        "median_ms": timing.median_ms,
        "spread_ms": timing.spread_ms,
        "spread": spread,
        "min_ms": timing.min_ms,
        "max_ms": timing.max_ms,
        "interval": interval.to_json(),
        "interval_half_width": interval.half_width,
        "samples_for_1pct": samples_for(spread, PRECISION),
        "health": device.health(),
    }
