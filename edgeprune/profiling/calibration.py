"""Calibration: the unpruned network measured in alternation with its layers' kernels on one session."""

from __future__ import annotations

import statistics
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
from edgeprune.profiling.entries import EntryBuilder
from edgeprune.profiling.grid import PlannedEntry
from edgeprune.profiling.lut import now
from edgeprune.profiling.signature import Layer

CALIBRATION_ROUNDS = 5  # alternations of the network and its layers


def time_libraries(
    session: Any,
    items: list[tuple[str, Path, np.ndarray]],
    rounds: int,
    number: int,
    repeat: int,
    order: list[str] | None = None,
) -> dict[str, list[list[float]]]:
    """Time several libraries on one session in alternation, `rounds` times over; per library, the ms samples
    of each round. A slow change in the device's load then affects all of them alike. `order` is the
    sequence timed in each round (names may repeat; default: `items` in order). Each library is uploaded
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
        for name in order or list(loaded):
            timer, data = loaded[name]
            this_round[name].extend(float(x) * 1e3 for x in timer(data).results)
        for name, values in this_round.items():
            samples[name].append(values)
    return samples


def calibrate(
    bundle: ModelBundle,
    device: DeviceProfile,
    layers: list[Layer],
    relax_model: Any,
    builder: EntryBuilder,
    number: int = NUMBER,
    repeat: int = REPEAT,
) -> dict[str, Any]:
    """The unpruned network and its layers' kernels measured in alternation on one session. The ratio
    network / sum of its layers is what the latency model applies (see `latency`); the constant offset
    network - sum is kept for comparison."""
    unique = {layer.key: PlannedEntry(layer.family, layer.in_channels, layer.out_channels) for layer in layers}
    with tempfile.TemporaryDirectory(prefix="edgeprune-calibrate-") as folder:
        network = toolchain.export(tune.build(relax_model.mod, device), Path(folder), device, stem="network")
        items = [("network", network, bundle.example_input().numpy())]
        for key, entry in unique.items():
            built = builder.build(entry, Path(folder))
            items.append((key, built.library, built.inputs))
        try:
            # the network before and after its layers in every round: the round's load is seen on both sides
            order = ["network", *unique, "network"]
            session = rpc.request_session(device)
            rounds = time_libraries(session, items, CALIBRATION_ROUNDS, number, repeat, order)
        except EdgepruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost server surfaces as several TVM/socket types
            raise EdgepruneError(
                f"measuring the whole network on device '{device.name}' failed: {type(exc).__name__}: {exc}",
                hint="check the device (`edgeprune devices check`), then run the same command again to resume",
            ) from exc
    per_round = [
        {
            "network_ms": statistics.median(rounds["network"][r]),
            "layer_sum_ms": sum(statistics.median(rounds[layer.key][r]) for layer in layers),
        }
        for r in range(CALIBRATION_ROUNDS)
    ]
    measured = measure.Timing.from_samples(sum(rounds["network"], []), number)
    return {
        "model": bundle.name,
        "input_shape": list(bundle.input_shape),
        "channels": {layer.name: [layer.in_channels, layer.out_channels] for layer in layers},
        "measured_ms": round(measured.median_ms, 6),
        "spread_ms": round(measured.spread_ms, 6),
        "layer_sum_ms": round(statistics.median(r["layer_sum_ms"] for r in per_round), 6),
        # per round, so a change of load between rounds cancels; the median over rounds drops an outlier
        "offset_ms": round(statistics.median(r["network_ms"] - r["layer_sum_ms"] for r in per_round), 6),
        "ratio": round(statistics.median(r["network_ms"] / r["layer_sum_ms"] for r in per_round), 6),
        "rounds": [{k: round(v, 6) for k, v in r.items()} for r in per_round],
        "measured_at": now(),
    }
