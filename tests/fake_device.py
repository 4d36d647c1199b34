"""The `fake` device kind, for tests of logic only: latencies from a formula, no TVM, no processes.

It is added the way any board kind is, one module registered by name, with no edit in profiling, compile,
verify or the pipeline; a profile with `kind = "fake"` loads as a `FakeDevice` once this module is imported.
Its numbers say nothing about any board (`timings_are_real` is False) and no test that claims a board works
may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from edgeprune.devices.base import Device, register
from edgeprune.errors import EdgepruneError
from edgeprune.loop import Measured
from edgeprune.profiling.signature import LayerExtractor

OVERHEAD_MS = 0.05  # a network's fixed cost: call overhead, pooling, the classifier
MS_PER_MMAC = 0.4  # latency per million multiply-accumulates


@register("fake")
class FakeDevice(Device):
    """Deterministic latency: OVERHEAD_MS plus MS_PER_MMAC per million MACs of the network."""

    @property
    def channel_step(self) -> int:
        return 4

    @property
    def timings_are_real(self) -> bool:
        return False

    def runtime_device(self, session: Any) -> Any:
        raise EdgepruneError(f"device '{self.name}' is a fake for tests: it has no RPC runtime")

    def latency_ms(self, module: nn.Module, input_shape: tuple[int, int, int]) -> float:
        return MacsLatency(module, input_shape).predict_ms({})


class MacsLatency:
    """The fake device's formula bound to one network: OVERHEAD_MS + MS_PER_MMAC per million MACs of its conv and
    linear layers, at their own widths or the (in, out) widths given per layer (as the module counts them)."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int], bias: float = 1.0) -> None:
        self.layers = LayerExtractor().layers(module, input_shape)
        self.bias = bias

    def predict_ms(self, widths: dict[str, tuple[int, int]]) -> float:
        layers = [x.resized(*widths[x.name]) if x.name in widths else x for x in self.layers]
        macs = sum(x.macs for x in layers)
        return (OVERHEAD_MS + MS_PER_MMAC * macs / 1e6) * self.bias


@dataclass
class FakePredictor:
    """A latency table for the fake device that is off by `bias` (0.8: predicts 20% too little)."""

    device: FakeDevice
    bias: float = 1.0

    def predict_ms(self, module: nn.Module, input_shape: tuple[int, int, int]) -> float:
        return self.device.latency_ms(module, input_shape) * self.bias

    def channel_steps(self, module: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
        return {}  # every channel count is a grid point

    def network(self, module: nn.Module, input_shape: tuple[int, int, int]) -> MacsLatency:
        return MacsLatency(module, input_shape, self.bias)


def fake_measured(
    device: FakeDevice, module: nn.Module, input_shape: tuple[int, int, int], baseline_ms: float
) -> Measured:
    """What the fake device 'measures': the formula, no spread, beside the given unpruned latency."""
    return Measured(device.latency_ms(module, input_shape), 0.0, baseline_ms)
