"""The latency model: a network's latency on a device for any channel configuration, from its table.

prediction = calibration ratio x sum over prunable layers of the table's kernel time at the layer's
           (in, out) channels.
A layer on the grid reads its entry; between grid points the time is interpolated bilinearly in
(in, out) channels (tuned convolution time is close to bilinear in them); below the smallest grid point
it is the smallest point's time (a kernel with fewer channels than a vector still runs whole vectors).
The ratio is the unpruned network, measured alone as `compile` builds it, over the sum of its layers' table
entries: what a sum of single-layer runs does not see (pooling, reshapes, the call overhead each single-layer
run carries, caches that a network's layers share). `profile` measures the network before and after the
entries, so the ratio also corrects the table to the device's load in that period; pruning keeps the graph,
so the ratio carries over to every pruned variant of the same model. On the benchmark's variants a ratio
predicted as well as or better than a constant offset (bench/results/latency_model.md).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgeprune.devices.base import Device
from edgeprune.errors import EdgepruneError
from edgeprune.profiling.lut import LatencyTable, lut_path, remeasure_hint, split_key
from edgeprune.profiling.signature import Layer, LayerExtractor


class MissingEntries(EdgepruneError):
    """The table lacks entries (or the whole-network calibration) for some layers of a model."""

    def __init__(self, device: str, missing: list[str]) -> None:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        super().__init__(
            f"the latency table of device '{device}' lacks {len(missing)} entries for this model: {shown}",
            hint=f"run `edgeprune profile MODEL --device {device}` for this model (it measures only what is missing)",
        )
        self.missing = missing


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    kind: str
    in_channels: int
    out_channels: int
    predicted_ms: float
    macs: int
    exact: bool  # the configuration is a measured grid point

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "predicted_ms": round(self.predicted_ms, 6),
            "macs": self.macs,
            "exact": self.exact,
        }


@dataclass(frozen=True)
class Estimate:
    predicted_ms: float
    layer_sum_ms: float
    ratio: float  # calibration: unpruned network / sum of its layers
    layers: list[LayerEstimate]

    @property
    def calibration_ms(self) -> float:
        """What the calibration adds to the sum of the layers."""
        return self.predicted_ms - self.layer_sum_ms

    @property
    def flops(self) -> int:
        """Multiply-accumulates of the conv and linear layers (the convention `prune` reports)."""
        return sum(row.macs for row in self.layers)


class _FamilyGrid:
    """The measured points of one family: exact lookups and the bracketing points for interpolation."""

    def __init__(self) -> None:
        self.points: dict[tuple[int, int], float] = {}
        self.ins: list[int] = []
        self.outs: list[int] = []

    def add(self, cin: int, cout: int, ms: float) -> None:
        self.points[(cin, cout)] = ms

    def finish(self) -> None:
        self.ins = sorted({c for c, _ in self.points})
        self.outs = sorted({c for _, c in self.points})

    @staticmethod
    def _brackets(values: list[int], x: int) -> list[tuple[int, int]]:
        """Candidate (low, high) grid values around x, tightest first; below the grid clamps to its first."""
        if not values or x > values[-1]:
            return []
        if x <= values[0]:
            return [(values[0], values[0])]
        at = bisect.bisect_left(values, x)
        if values[at] == x:
            return [(x, x)]
        return [(values[lo], values[hi]) for lo in range(at - 1, -1, -1) for hi in range(at, len(values))]

    def time(self, cin: int, cout: int, per_input: int | None) -> tuple[float, bool] | None:
        """(ms, exact) at the configuration, or None when the grid does not cover it. `per_input`: the fixed
        out/in ratio of a layer whose widths move together (`Geometry.outputs_per_input`)."""
        if (cin, cout) in self.points:
            return self.points[(cin, cout)], True
        if per_input:  # depthwise, a channel multiplier: the points (c, per_input x c), a 1-D grid
            for lo, hi in self._brackets(self.ins, cin):
                low, high = (lo, per_input * lo), (hi, per_input * hi)
                if low in self.points and high in self.points:
                    return _lerp(cin, lo, hi, self.points[low], self.points[high]), False
            return None
        for i0, i1 in self._brackets(self.ins, cin):
            for o0, o1 in self._brackets(self.outs, cout):
                corners = [(i0, o0), (i0, o1), (i1, o0), (i1, o1)]
                if all(c in self.points for c in corners):
                    low = _lerp(cout, o0, o1, self.points[(i0, o0)], self.points[(i0, o1)])
                    high = _lerp(cout, o0, o1, self.points[(i1, o0)], self.points[(i1, o1)])
                    return _lerp(cin, i0, i1, low, high), False
        return None


def _lerp(x: int, x0: int, x1: int, y0: float, y1: float) -> float:
    if x1 == x0:
        return y0
    return y0 + (y1 - y0) * (min(max(x, x0), x1) - x0) / (x1 - x0)


class LatencyModel:
    """Predicts latency (ms) on one device from its lookup table; cheap enough to call inside a search."""

    def __init__(self, table: LatencyTable) -> None:
        self.table = table
        self.device = table.device
        self._extractor = LayerExtractor()
        self._grids: dict[str, _FamilyGrid] = {}
        for key, entry in table.entries.items():
            family, cin, cout = split_key(key)
            self._grids.setdefault(family, _FamilyGrid()).add(cin, cout, float(entry["median_ms"]))
        for grid in self._grids.values():
            grid.finish()
        self._ratios: dict[str, float] = {}

    @classmethod
    def for_device(cls, device: Device) -> LatencyModel:
        """The device's model; EdgepruneError when the device has no table yet (or an unusable one)."""
        table = LatencyTable.load(device)
        if table is None:
            raise EdgepruneError(
                f"device '{device.name}' has no latency table yet ({lut_path(device)})",
                hint=f"measure one: `edgeprune profile MODEL --device {device.name}`",
            )
        return cls(table)

    def _layer_time(self, layer: Layer) -> tuple[float, bool] | None:
        grid = self._grids.get(layer.family.key)
        if grid is None:
            return None
        return grid.time(layer.in_channels, layer.out_channels, layer.family.outputs_per_input)

    def _ratio(self, structure: str, layers: list[Layer]) -> float | None:
        """Measured unpruned network / sum of its entries (None if it was never measured or lacks entries)."""
        if structure not in self._ratios:
            network = self.table.networks.get(structure)
            if network is None:
                return None
            total = 0.0
            for layer in layers:
                if layer.name not in network["channels"]:
                    raise EdgepruneError(
                        f"latency table {self.table.path} is malformed: its record of network {structure} "
                        f"lacks layer {layer.name}",
                        hint=remeasure_hint(self.table.path, self.table.device),
                    )
                cin, cout = network["channels"][layer.name]
                point = self._layer_time(Layer(layer.slot, cin, cout))
                if point is None:
                    return None
                total += point[0]
            self._ratios[structure] = float(network["measured_ms"]) / total
        return self._ratios[structure]

    def estimate(
        self,
        module: nn.Module,
        input_shape: tuple[int, int, int],
        channels: dict[str, tuple[int, int]] | None = None,
    ) -> Estimate:
        """Per-layer breakdown and total; MissingEntries when the table does not cover the model.

        `channels` maps layer names to (in, out) counts to predict instead of the module's own.
        """
        layers, structure = self._extractor.extract(module, input_shape)
        if channels:
            layers = [Layer(x.slot, *channels[x.name]) if x.name in channels else x for x in layers]
        return self._estimate(layers, structure)

    def network(self, module: nn.Module, input_shape: tuple[int, int, int]) -> NetworkLatency:
        """This model bound to one network: predicts any channel choice of it without building a module."""
        layers, structure = self._extractor.extract(module, input_shape)
        return NetworkLatency(self, layers, structure)

    def _estimate(self, layers: list[Layer], structure: str) -> Estimate:
        """The estimate of a network of `structure` whose layers have the given channels."""
        rows: list[LayerEstimate] = []
        missing: list[str] = []
        for layer in layers:
            point = self._layer_time(layer)
            if point is None:
                missing.append(f"{layer.name} ({layer.key})")
                continue
            rows.append(
                LayerEstimate(
                    layer.name,
                    layer.family.kind,
                    layer.in_channels,
                    layer.out_channels,
                    point[0],
                    layer.macs,
                    point[1],
                )
            )
        ratio = None if missing else self._ratio(structure, layers)
        if ratio is None and not missing:
            missing.append("the whole-network measurement of this model (calibration)")
        if missing or ratio is None:
            raise MissingEntries(self.device, missing)
        layer_sum = sum(r.predicted_ms for r in rows)
        return Estimate(layer_sum * ratio, layer_sum, ratio, rows)

    def predict_ms(self, module: nn.Module, input_shape: tuple[int, int, int]) -> float:
        """Predicted latency of `module` on the device, in ms."""
        return self.estimate(module, input_shape).predicted_ms

    def channel_steps(self, module: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
        """Per prunable layer (output not fixed by the class count): the table's out-channel grid step.

        Kept counts that are multiples of the step (up to the unpruned width) are measured points.
        """
        steps: dict[str, int] = {}
        missing: list[str] = []
        for layer in self._extractor.layers(module, input_shape):
            if layer.slot.out_fixed:
                continue
            grid = self._grids.get(layer.family.key)
            step = _grid_step(grid.outs if grid else [], layer.out_channels)
            if step is None:
                missing.append(f"{layer.name} ({layer.key})")
            else:
                steps[layer.name] = step
        if missing:
            raise MissingEntries(self.device, missing)
        return steps


class NetworkLatency:
    """A latency model bound to one network's layers (found once): a budget query during pruning is a lookup per
    layer, where building and tracing a resized copy of the module cost milliseconds each."""

    def __init__(self, model: LatencyModel, layers: list[Layer], structure: str) -> None:
        self.model = model
        self.layers = layers
        self.structure = structure

    def predict_ms(self, widths: dict[str, tuple[int, int]]) -> float:
        """Predicted latency with each named layer at its (in, out) widths as the module counts them (a linear
        layer's `in_features`); layers not named keep their own. MissingEntries when the table lacks one."""
        resized = [layer.resized(*widths[layer.name]) if layer.name in widths else layer for layer in self.layers]
        return self.model._estimate(resized, self.structure).predicted_ms


def _grid_step(values: list[int], channels: int) -> int | None:
    """The smallest step whose multiples up to `channels` are all grid values (the full width always is)."""
    present = set(values)
    if channels not in present:
        return None
    for step in sorted(v for v in present if v <= channels):
        if all(m in present for m in range(step, channels + 1, step)):
            return step
    return channels
