"""Calibration: the unpruned network, built as `compile` builds it, measured alone on the device.

`profile` measures it before and after the table's entries, so it shares their period (and the device's load
then); the latency model scales a sum of entries by this network over the sum of its own entries.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeprune.devices.base import Device, TimingSettings
from edgeprune.devices.timing import Timing, time_alternating
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle
from edgeprune.profiling.lut import now
from edgeprune.profiling.signature import Layer
from edgeprune.tvmx import tune

CALIBRATION_ROUNDS = 5  # evaluator calls of `repeat` samples each, per measurement of the network


def network_samples(bundle: ModelBundle, device: Device, relax_model: Any, settings: TimingSettings) -> list[float]:
    """The unpruned network, built as `compile` builds it, timed alone on one session (ms samples)."""
    with tempfile.TemporaryDirectory(prefix="edgeprune-calibrate-") as folder:
        network = device.export(tune.build(relax_model.mod, device), Path(folder), stem="network")
        try:
            session = device.request_session()
            items = [("network", network, bundle.example_input().numpy())]
            rounds = time_alternating(session, device, items, CALIBRATION_ROUNDS, settings)
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
    measured = Timing.from_samples(samples, number)
    return {
        "model": bundle.name,
        "input_shape": list(bundle.input_shape),
        "channels": {layer.name: [layer.in_channels, layer.out_channels] for layer in layers},
        "measured_ms": round(measured.median_ms, 6),
        "spread_ms": round(measured.spread_ms, 6),
        "samples": len(samples),
        "measured_at": now(),
    }
