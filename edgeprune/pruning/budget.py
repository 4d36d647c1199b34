"""Budgets: what a channel configuration costs (ms on the device, FLOPs or params) and the grid it lives on.

Each budget kind is a `Cost` class registered in `COSTS` by the kind's name (`Target.kind`); `bind` makes the
one a target names and wraps it in a caching `Budget`.

FLOPs and params are predicted from channel counts (exact, see `cost`), with a channel step of 1.
Milliseconds come from the device's latency table through `edgeprune.profiling.latency.LatencyModel`; by default
its channel steps put every kept count on the table's grid, so a predicted latency is a measured point. A
`channel_step` of its own (1: any count) trades that for finer choices, predicted by interpolating the table:
a 16-channel layer on an 8-lane grid can then keep 12, not only 8 or 16.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.pruning import cost
from edgeprune.pruning.groups import Structure, layer_widths, skeleton
from edgeprune.pruning.registry import Registry
from edgeprune.targets import Target, format_cost


class LatencyPredictor:
    """The device's latency model, with the 'LUT lacks entries' case turned into advice or a profiling run."""

    def __init__(
        self, device: Any, bundle: Any = None, profile_missing: bool = False, model_arg: str | None = None
    ) -> None:
        self.device = device
        self.bundle = bundle
        self.profile_missing = profile_missing
        self.model_arg = model_arg  # what the user called the model, for the hint to profile it
        self.model = self._load()

    def _load(self) -> Any:
        from edgeprune.profiling.latency import LatencyModel
        from edgeprune.profiling.lut import lut_path

        if self.profile_missing and self.bundle is not None and not lut_path(self.device).exists():
            self._profile(self.bundle.module, self.bundle.input_shape)  # no table yet: measure one
        return LatencyModel.for_device(self.device)

    def _profile(self, module: nn.Module, input_shape: tuple[int, int, int]) -> None:
        from edgeprune.models.io import ModelBundle
        from edgeprune.profiling.profiler import profile_model

        profile_model(ModelBundle(module, input_shape, self.bundle.num_classes, dict(self.bundle.meta)), self.device)

    def _missing(self, exc: Exception) -> EdgepruneError:
        model = shlex.quote(self.model_arg) if self.model_arg else "MODEL"
        return EdgepruneError(
            getattr(exc, "message", str(exc)),
            hint=f"run `edgeprune profile {model} --device {self.device.name}` first (it measures only what is "
            "missing), or pass --profile-missing",
        )

    def _call(self, method: str, module: nn.Module, input_shape: tuple[int, int, int]) -> Any:
        from edgeprune.profiling.latency import MissingEntries

        try:
            return getattr(self.model, method)(module, input_shape)
        except MissingEntries as exc:
            if not self.profile_missing or self.bundle is None:
                raise self._missing(exc) from exc
            # the network asked about: an iterative method's partly pruned network has widths the input lacks
            self._profile(module, input_shape)
            self.model = self._load()
            try:
                return getattr(self.model, method)(module, input_shape)
            except MissingEntries as again:
                raise self._missing(again) from again

    def predict_ms(self, module: nn.Module, input_shape: tuple[int, int, int]) -> float:
        return float(self._call("predict_ms", module, input_shape))

    def network(self, module: nn.Module, input_shape: tuple[int, int, int]) -> Any:
        """The latency model bound to `module`'s layers (`NetworkLatency`): predicts from layer widths."""
        return self.model.network(module, input_shape)

    def channel_steps(self, module: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
        return dict(self._call("channel_steps", module, input_shape))


class Cost:
    """What channel configurations of one model cost in one budget kind; registered in `COSTS` by the kind's
    name. `layer_steps` is each layer's channel grid (kept counts are multiples of it, or the full width)."""

    name: str
    layer_steps: dict[str, int]
    # seconds spent filling the latency table's missing entries on the device (the table's work, see Budget)
    profiling_seconds = 0.0

    def __init__(
        self, module: nn.Module, structure: Structure, predictor: LatencyPredictor | None, channel_step: int | None
    ) -> None:
        self.structure = structure

    def evaluate(self, counts: dict[str, int]) -> float:
        raise NotImplementedError


COSTS: Registry[Cost] = Registry("budget kind")


class _Counted(Cost):
    """FLOPs or params, counted exactly from the channel counts (`cost.predict`); any count by default."""

    position: int  # in cost.predict's (flops, params)

    def __init__(
        self, module: nn.Module, structure: Structure, predictor: LatencyPredictor | None, channel_step: int | None
    ) -> None:
        super().__init__(module, structure, predictor, channel_step)
        self.layer_steps = {layer: channel_step or 1 for group in structure.groups.values() for layer in group.layers}

    def evaluate(self, counts: dict[str, int]) -> float:
        return float(cost.predict(self.structure, counts)[self.position])


@COSTS.register("flops")
class Flops(_Counted):
    """Multiply-accumulates of the conv and linear layers (the pruning literature's FLOPs)."""

    position = 0


@COSTS.register("params")
class Params(_Counted):
    """Every parameter of the model."""

    position = 1


@COSTS.register("ms")
class Latency(Cost):
    """Milliseconds on the device, predicted by its latency table; by default on the table's grid."""

    def __init__(
        self, module: nn.Module, structure: Structure, predictor: LatencyPredictor | None, channel_step: int | None
    ) -> None:
        super().__init__(module, structure, predictor, channel_step)
        if predictor is None:
            raise EdgepruneError("a latency target needs a device with a latency table", hint="pass --device")
        self.module, self.predictor = module, predictor
        layer_steps = predictor.channel_steps(module, structure.input_shape)  # also: does the table cover it
        if channel_step is not None:
            layer_steps = dict.fromkeys(layer_steps, channel_step)
        self.layer_steps = layer_steps
        self.network = predictor.network(module, structure.input_shape)  # predicts from layer widths

    def evaluate(self, counts: dict[str, int]) -> float:
        from edgeprune.profiling.latency import MissingEntries

        try:
            return float(self.network.predict_ms(layer_widths(self.structure, counts)))
        except MissingEntries:
            pass  # the module path profiles what is missing (or says how), then the model is bound anew
        started = time.monotonic()
        try:
            value = self.predictor.predict_ms(skeleton(self.module, self.structure, counts), self.structure.input_shape)
            self.network = self.predictor.network(self.module, self.structure.input_shape)
        finally:
            self.profiling_seconds += time.monotonic() - started
        return value


@dataclass
class Budget:
    """Cost of channel configurations of one model (a `Structure`), in the unit of `kind`, with a cache."""

    kind: str
    target: float
    structure: Structure
    steps: dict[str, int]
    model: Cost
    # seconds spent filling the table's missing entries on the device: the table's work, not the caller's (a
    # search's time box leaves it out, or one profiling run can use up the box before a second candidate)
    profiling_seconds: float = 0.0
    _cache: dict[tuple[int, ...], float] = field(default_factory=dict, repr=False)

    def cost(self, counts: dict[str, int]) -> float:
        key = tuple(counts.get(name, group.size) for name, group in self.structure.groups.items())
        if key not in self._cache:
            profiled = self.model.profiling_seconds
            self._cache[key] = self.model.evaluate(counts)
            self.profiling_seconds += self.model.profiling_seconds - profiled
        return self._cache[key]

    def full(self) -> float:
        return self.cost(self.structure.sizes())

    def describe(self, value: float | None = None) -> str:
        return format_cost(self.kind, self.target if value is None else value)


def group_steps(structure: Structure, layer_steps: dict[str, int]) -> dict[str, int]:
    """A group's step in units: every layer of the group stays on its grid (a unit may be several channels
    of a layer, one per group of a grouped conv)."""
    steps = {}
    for name, group in structure.groups.items():
        step = 1
        for layer in group.layers:
            channel_step = max(1, int(layer_steps.get(layer, 1)))
            per_unit = len(group.index[layer][0])
            step = math.lcm(step, channel_step // math.gcd(channel_step, per_unit))
        steps[name] = step
    return steps


def check_channel_step(step: int | None) -> None:
    if step is not None and step < 1:
        raise EdgepruneError(f"--channel-step must be >= 1, got {step}")


def bind(
    target: Target,
    module: nn.Module,
    structure: Structure,
    predictor: LatencyPredictor | None = None,
    original: float | None = None,
    channel_step: int | None = None,
) -> Budget:
    """A budget for `module`; relative targets resolve against `original` (default: this module's cost).
    `channel_step`: kept channel counts are multiples of it (or a layer's full width); None: the latency table's
    grid for ms, any count for FLOPs and params."""
    model = COSTS.get(target.kind)
    check_channel_step(channel_step)
    cost_model = model(module, structure, predictor, channel_step)
    budget = Budget(target.kind, 0.0, structure, group_steps(structure, cost_model.layer_steps), cost_model)
    budget.target = target.resolve(original if original is not None else budget.full())
    return budget
