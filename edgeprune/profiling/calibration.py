"""Calibration: the unpruned network, built as `compile` builds it, measured alone on the device.

`profile` measures it before and after the table's entries, so it shares their period (and the device's load
then); the latency model scales a sum of entries by this network over the sum of its own entries.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.compile import tune
from edgeprune.devices import measure, rpc, toolchain
from edgeprune.devices.profile import DeviceProfile
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle
from edgeprune.profiling.defaults import MIN_REPEAT_MS, NUMBER, REPEAT
from edgeprune.profiling.lut import now
from edgeprune.profiling.signature import Layer

CALIBRATION_ROUNDS = 5  # time_evaluator runs of `repeat` samples each, per measurement of the network


def time_libraries(
    session: Any,
    items: list[tuple[str, Path, np.ndarray]],
    rounds: int,
    number: int,
    repeat: int,
) -> dict[str, list[list[float]]]:
    """Time several libraries on one session in alternation, `rounds` times over; per library, the ms samples
    of each round. A slow change in the device's load then affects all of them alike. Each library is uploaded
    once (a second upload under the same name would crash the server; see EntryBuilder)."""
    import tvm
    from tvm import relax

    dev = session.cpu(0)
    loaded = {}
    for name, path, inputs in items:
        vm = relax.VirtualMachine(measure.load_remote(session, path), dev)
        data = tvm.runtime.tensor(np.ascontiguousarray(inputs, dtype="float32"), dev)
        vm["main"](data)  # warm-up
        timer = vm.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=MIN_REPEAT_MS)
        loaded[name] = (timer, data)
    samples: dict[str, list[list[float]]] = {name: [] for name in loaded}
    for _ in range(rounds):
        this_round: dict[str, list[float]] = {name: [] for name in loaded}
        for name in loaded:
            timer, data = loaded[name]
            this_round[name].extend(float(x) * 1e3 for x in timer(data).results)
        for name, values in this_round.items():
            samples[name].append(values)
    return samples


def network_samples(
    bundle: ModelBundle, device: DeviceProfile, relax_model: Any, number: int = NUMBER, repeat: int = REPEAT
) -> list[float]:
    """The unpruned network, built as `compile` builds it, timed alone on one session (ms samples)."""
    with tempfile.TemporaryDirectory(prefix="edgeprune-calibrate-") as folder:
        network = toolchain.export(tune.build(relax_model.mod, device), Path(folder), device, stem="network")
        try:
            session = rpc.request_session(device)
            items = [("network", network, bundle.example_input().numpy())]
            rounds = time_libraries(session, items, CALIBRATION_ROUNDS, number, repeat)
        except EdgepruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost server surfaces as several TVM/socket types
            raise EdgepruneError(
                f"measuring the whole network on device '{device.name}' failed: {type(exc).__name__}: {exc}",
                hint="check the device (`edgeprune devices check`), then run the same command again to resume",
            ) from exc
    return sum(rounds["network"], [])


def network_record(bundle: ModelBundle, layers: list[Layer], samples: list[float], number: int) -> dict[str, Any]:
    """The table's record of an unpruned network: its measured latency and the layer widths it had."""
    measured = measure.Timing.from_samples(samples, number)
    return {
        "model": bundle.name,
        "input_shape": list(bundle.input_shape),
        "channels": {layer.name: [layer.in_channels, layer.out_channels] for layer in layers},
        "measured_ms": round(measured.median_ms, 6),
        "spread_ms": round(measured.spread_ms, 6),
        "samples": len(samples),
        "measured_at": now(),
    }
