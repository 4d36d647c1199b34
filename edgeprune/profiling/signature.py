"""The prunable layers of a model and the signature that fixes their latency on a device.

A layer's kernel, as TVM compiles it, is one fused TIR function: the convolution (or matmul) plus the
element-wise ops TVM fuses after it (folded BatchNorm as a bias add, a residual add, ReLU/ReLU6). Everything
but the channel counts forms the layer's `Family` (one grid of the lookup table): its geometry as
`edgeprune.network` describes it for pruning too, plus that epilogue; a family plus (in, out) channels is a
signature, the key of one table entry.

Pruning changes channel counts only, never the graph, so the graph analysis (feature-map sizes, fused
epilogues) is done once per graph and cached by `LayerExtractor`; reading a pruned module's channels is cheap.
"""

from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import fx, nn

from edgeprune.network import (
    GROUPED,
    LINEAR,
    Geometry,
    Graph,
    LayerSite,
    is_depthwise,
    is_prunable,
    record_shapes,
    to_graph_module,
    widths,
)

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_PASS_MODULES = (nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class Family(Geometry):
    """What fixes a layer's kernel apart from its channels: its geometry and its fused epilogue.

    `epilogue` lists the fused ops in order: 'bias', 'add' (residual on the right), 'radd' (residual on the
    left: TVM's kernel differs with operand order), 'relu', 'relu6'.
    """

    epilogue: tuple[str, ...] = ()

    @classmethod
    def of(cls, geometry: Geometry, epilogue: tuple[str, ...]) -> Family:
        return cls(**{f.name: getattr(geometry, f.name) for f in fields(Geometry)}, epilogue=epilogue)

    @property
    def key(self) -> str:
        epilogue = "+".join(self.epilogue) or "none"
        if self.kind == LINEAR:
            return f"{self.kind}|{self.height}x{self.width}|{epilogue}"
        geometry = "k{}x{}-s{}x{}-p{}x{}-d{}x{}".format(*self.kernel, *self.stride, *self.padding, *self.dilation)
        kind = self.kind
        if self.kind == GROUPED:  # a channel multiplier's groups follow its inputs: its multiplier names it
            kind = f"multiplier{self.multiplier}" if self.multiplier > 1 else f"{self.kind}{self.groups}"
        return f"{kind}|{geometry}|{self.height}x{self.width}|{epilogue}"

    def entry_key(self, in_channels: int, out_channels: int) -> str:
        return f"{self.key}|{in_channels}x{out_channels}"


LayerSlot = LayerSite[Family]  # a prunable layer as the graph places it, with the family it belongs to


@dataclass(frozen=True)
class Layer:
    """A prunable layer with its current channel counts (for a linear layer, `in_channels` counts the
    channels of the flattened map, so in_features = in_channels * height * width)."""

    slot: LayerSlot
    in_channels: int
    out_channels: int

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def family(self) -> Family:
        return self.slot.geometry

    @property
    def key(self) -> str:
        return self.family.entry_key(self.in_channels, self.out_channels)

    @property
    def macs(self) -> int:
        return self.family.macs(self.family.in_width(self.in_channels), self.out_channels)

    def resized(self, in_width: int, out_width: int) -> Layer:
        """This layer at the module's own widths (`in_features` for a linear layer, as pruning counts them)."""
        return _at_widths(self.slot, in_width, out_width)


def _at_widths(slot: LayerSlot, in_width: int, out_width: int) -> Layer:
    """The layer in `slot` at the module's widths: a linear layer's in_features over its flattened map's area."""
    return Layer(slot, in_width // slot.geometry.in_width(1), out_width)


def _target_name(target: Any) -> str:
    """A node target's name that is the same in every process (reprs of torch functions hold addresses)."""
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', getattr(target, '__name__', ''))}"


class _FusionGraph(Graph):
    """The questions about a graph that decide what TVM fuses into a layer's kernel: activations, residual adds."""

    def activation(self, node: fx.Node) -> str | None:
        mod = self.target_module(node)
        if isinstance(mod, nn.ReLU6) or (isinstance(mod, nn.Hardtanh) and (mod.min_val, mod.max_val) == (0.0, 6.0)):
            return "relu6"
        if isinstance(mod, nn.ReLU):
            return "relu"
        if node.op == "call_function" and node.target in (torch.relu, nn.functional.relu):
            return "relu"
        if node.op == "call_function" and node.target is nn.functional.relu6:
            return "relu6"
        if node.op == "call_method" and node.target in ("relu", "relu_"):
            return "relu"
        return None

    def is_passthrough(self, node: fx.Node) -> bool:
        return isinstance(self.target_module(node), _PASS_MODULES)

    def is_tensor_add(self, node: fx.Node) -> bool:
        adds = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ADD_METHODS
        )
        return adds and len(node.args) >= 2 and all(isinstance(a, fx.Node) for a in node.args[:2])

    def ends_fusable_chain(self, node: fx.Node) -> bool:
        """True when `node` is a layer followed only by single-use BN/activations (TVM fuses what follows)."""
        while not self.is_layer(node):
            if not (isinstance(self.target_module(node), nn.BatchNorm2d) or self.activation(node)):
                return False
            parent = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
            if parent is None or self.single_user(parent) is not node:
                return False
            node = parent
        return True

    def epilogue(self, node: fx.Node) -> tuple[str, ...]:
        """The element-wise ops TVM fuses into this layer's kernel, following single-use outputs."""
        layer = self.target_module(node)
        ops: list[str] = ["bias"] if getattr(layer, "bias", None) is not None else []
        followed, user = self.after_norm(node)
        if followed is not node:
            ops = ["bias"]  # the exporter folds BN into the convolution's bias
            node = followed
        while user is not None:
            act = self.activation(user)
            if act:
                ops.append(act)
            elif self.is_tensor_add(user):
                lhs, rhs = user.args[0], user.args[1]
                if node is lhs:
                    ops.append("add")
                elif node is rhs and not (self.single_user(lhs) is user and self.ends_fusable_chain(lhs)):
                    ops.append("radd")
                else:
                    break  # the other operand's layer fuses this add
            elif not self.is_passthrough(user):
                break
            node, user = user, self.single_user(user)
        return tuple(ops)


class LayerExtractor:
    """Finds prunable layers; caches the graph analysis per graph structure and input shape."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[tuple[LayerSlot, ...], str]] = {}

    def slots(self, module: nn.Module, input_shape: tuple[int, int, int]) -> tuple[tuple[LayerSlot, ...], str]:
        """The prunable layers in graph order and a key of the graph structure (stable across processes)."""
        graph_module = to_graph_module(module)
        fingerprint = self._fingerprint(graph_module, input_shape)
        if fingerprint not in self._cache:
            self._cache[fingerprint] = self._analyse(graph_module, input_shape)
        return self._cache[fingerprint]

    def layers(self, module: nn.Module, input_shape: tuple[int, int, int]) -> list[Layer]:
        """The prunable layers with their current channel counts."""
        return self.extract(module, input_shape)[0]

    def extract(self, module: nn.Module, input_shape: tuple[int, int, int]) -> tuple[list[Layer], str]:
        """The prunable layers with their current channel counts, and the graph's structure key."""
        graph_module = to_graph_module(module)
        slots, structure = self.slots(graph_module, input_shape)
        return [_at_widths(slot, *widths(graph_module.get_submodule(slot.name))) for slot in slots], structure

    @staticmethod
    def _fingerprint(module: fx.GraphModule, input_shape: tuple[int, int, int]) -> tuple[Any, ...]:
        """What the analysis depends on: the graph, and each layer's geometry and depthwise-ness."""
        geometry = []
        for name, mod in module.named_modules():
            if not is_prunable(mod):
                continue
            if isinstance(mod, nn.Conv2d):
                grouping = "dw" if is_depthwise(mod) else mod.groups
                geometry.append((name, mod.kernel_size, mod.stride, mod.padding, mod.dilation, grouping))
            else:
                geometry.append((name, "linear"))
        return (module.code, tuple(input_shape), tuple(geometry))

    def _analyse(self, module: fx.GraphModule, input_shape: tuple[int, int, int]) -> tuple[tuple[LayerSlot, ...], str]:
        graph = _FusionGraph(module)
        shapes = record_shapes(module, input_shape)
        slots = []
        for node in graph.layer_nodes():
            site = graph.site(node, shapes)
            slots.append(replace(site, geometry=Family.of(site.geometry, graph.epilogue(node))))
        structure = {
            "input": list(input_shape),
            "graph": [[n.op, _target_name(n.target)] for n in module.graph.nodes],
            "layers": [[s.name, s.geometry.key] for s in slots],
        }
        key = hashlib.sha256(json.dumps(structure).encode()).hexdigest()[:16]
        return tuple(slots), key
