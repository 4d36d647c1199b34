"""The prunable layers of a model and the signature that fixes their latency on a device.

A layer's kernel, as TVM compiles it, is one fused TIR function: the convolution (or matmul) plus the
element-wise ops TVM fuses after it (folded BatchNorm as a bias add, a residual add, ReLU/ReLU6). Everything
but the channel counts forms the layer's `Family` (one grid of the lookup table); a family plus
(in, out) channels is a signature, the key of one table entry.

Pruning changes channel counts only, never the graph, so the graph analysis (feature-map sizes, fused
epilogues) is done once per graph and cached by `LayerExtractor`; reading a pruned module's channels is cheap.
"""

from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from edgeprune.errors import EdgepruneError

CONV, DEPTHWISE, GROUPED, LINEAR = "conv2d", "depthwise", "grouped", "linear"

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
_PASS_MODULES = (nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class Family:
    """What fixes a layer's kernel apart from its channels: op kind, geometry, input size, fused epilogue.

    `height` x `width` is the input feature map (for a linear layer: the map it was flattened from, 1x1 after
    global pooling). `epilogue` lists the fused ops in order: 'bias', 'add' (residual on the right), 'radd'
    (residual on the left: TVM's kernel differs with operand order), 'relu', 'relu6'.
    """

    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    height: int
    width: int
    epilogue: tuple[str, ...]
    groups: int = 1  # only for GROUPED; depthwise ties groups to the channel count

    @property
    def key(self) -> str:
        epilogue = "+".join(self.epilogue) or "none"
        if self.kind == LINEAR:
            return f"{self.kind}|{self.height}x{self.width}|{epilogue}"
        geometry = "k{}x{}-s{}x{}-p{}x{}-d{}x{}".format(*self.kernel, *self.stride, *self.padding, *self.dilation)
        kind = f"{self.kind}{self.groups}" if self.kind == GROUPED else self.kind
        return f"{kind}|{geometry}|{self.height}x{self.width}|{epilogue}"

    @property
    def output_size(self) -> tuple[int, int]:
        if self.kind == LINEAR:
            return (1, 1)
        sizes = []
        for size, k, s, p, d in zip(
            (self.height, self.width), self.kernel, self.stride, self.padding, self.dilation, strict=True
        ):
            sizes.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return sizes[0], sizes[1]

    def entry_key(self, in_channels: int, out_channels: int) -> str:
        return f"{self.key}|{in_channels}x{out_channels}"

    def macs(self, in_channels: int, out_channels: int) -> int:
        """Multiply-accumulates of the layer (its epilogue is negligible)."""
        if self.kind == LINEAR:
            return in_channels * self.height * self.width * out_channels
        per_output = self.kernel[0] * self.kernel[1] * (1 if self.kind == DEPTHWISE else in_channels // self.groups)
        out_h, out_w = self.output_size
        return per_output * out_channels * out_h * out_w


@dataclass(frozen=True)
class LayerSlot:
    """A prunable layer as the graph places it: which channels can change and the family it belongs to."""

    name: str
    family: Family
    in_fixed: bool  # reads the network input: its input channels are the image's
    out_fixed: bool  # its output reaches the network output without another layer: the class count


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
        return self.slot.family

    @property
    def key(self) -> str:
        return self.family.entry_key(self.in_channels, self.out_channels)

    def resized(self, in_width: int, out_width: int) -> Layer:
        """This layer at the module's own widths (`in_features` for a linear layer, as pruning counts them)."""
        if self.family.kind == LINEAR:
            in_width //= self.family.height * self.family.width
        return Layer(self.slot, in_width, out_width)


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once and keeps each node's output shape, without touching the user's node metadata."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n.name] = tuple(out.shape)
        return out


def _target_name(target: Any) -> str:
    """A node target's name that is the same in every process (reprs of torch functions hold addresses)."""
    if isinstance(target, str):
        return target
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', getattr(target, '__name__', ''))}"


def _graph_module(module: nn.Module) -> fx.GraphModule:
    if isinstance(module, fx.GraphModule):
        return module
    from edgeprune.models.io import to_graph_module

    return to_graph_module(module)


class _Graph:
    """Questions about one fx graph that decide fusion: node kinds, users, residual adds."""

    def __init__(self, module: fx.GraphModule) -> None:
        self.module = module
        self.modules = dict(module.named_modules())

    def target_module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(str(node.target)) if node.op == "call_module" else None

    def is_layer(self, node: fx.Node) -> bool:
        return isinstance(self.target_module(node), (nn.Conv2d, nn.Linear))

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

    @staticmethod
    def single_user(node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

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
        user = self.single_user(node)
        if user is not None and isinstance(self.target_module(user), nn.BatchNorm2d):
            ops = ["bias"]  # the exporter folds BN into the convolution's bias
            node, user = user, self.single_user(user)
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

    def reaches(self, node: fx.Node, want_output: bool) -> bool:
        """Whether `node` reaches (down: the output / up: a placeholder) without passing another layer."""
        seen: set[str] = set()
        stack = [node]
        while stack:
            current = stack.pop()
            nexts = list(current.users) if want_output else [a for a in current.all_input_nodes]
            for other in nexts:
                if other.name in seen:
                    continue
                seen.add(other.name)
                if (want_output and other.op == "output") or (not want_output and other.op == "placeholder"):
                    return True
                if not self.is_layer(other):
                    stack.append(other)
        return False


def output_layers(module: fx.GraphModule) -> list[str]:
    """The conv / linear layers whose outputs reach the model output without another such layer between (the
    classifier: its outputs are the class count, never pruned)."""
    graph = _Graph(module)
    return sorted(str(n.target) for n in module.graph.nodes if graph.is_layer(n) and graph.reaches(n, True))


def _conv_family(mod: nn.Conv2d, in_shape: tuple[int, ...], epilogue: tuple[str, ...]) -> Family:
    if mod.groups == 1:
        kind, groups = CONV, 1
    elif mod.groups == mod.in_channels == mod.out_channels:
        kind, groups = DEPTHWISE, 1
    else:
        kind, groups = GROUPED, mod.groups
    if not isinstance(mod.padding, (tuple, list)):
        raise EdgepruneError(f"convolution padding '{mod.padding}' is not supported; use explicit padding")
    return Family(
        kind=kind,
        kernel=_pair(mod.kernel_size),
        stride=_pair(mod.stride),
        padding=_pair(mod.padding),
        dilation=_pair(mod.dilation),
        height=int(in_shape[2]),
        width=int(in_shape[3]),
        epilogue=epilogue,
        groups=groups,
    )


def _flattened_map(graph: _Graph, node: fx.Node, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int, int]:
    """(channels, h, w) of the feature map a linear layer's input was flattened from (1x1 if none)."""
    features = shapes[node.args[0].name][-1]  # type: ignore[union-attr]
    current = node.args[0]
    while isinstance(current, fx.Node) and not graph.is_layer(current):
        shape = shapes.get(current.name, ())
        if len(shape) == 4 and shape[1] * shape[2] * shape[3] == features:
            return int(shape[1]), int(shape[2]), int(shape[3])
        inputs = current.all_input_nodes
        current = inputs[0] if len(inputs) == 1 else None
    return int(features), 1, 1


class LayerExtractor:
    """Finds prunable layers; caches the graph analysis per graph structure and input shape."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[tuple[LayerSlot, ...], str]] = {}

    def slots(self, module: nn.Module, input_shape: tuple[int, int, int]) -> tuple[tuple[LayerSlot, ...], str]:
        """The prunable layers in graph order and a key of the graph structure (stable across processes)."""
        graph_module = _graph_module(module)
        fingerprint = self._fingerprint(graph_module, input_shape)
        if fingerprint not in self._cache:
            self._cache[fingerprint] = self._analyse(graph_module, input_shape)
        return self._cache[fingerprint]

    def layers(self, module: nn.Module, input_shape: tuple[int, int, int]) -> list[Layer]:
        """The prunable layers with their current channel counts."""
        return self.extract(module, input_shape)[0]

    def extract(self, module: nn.Module, input_shape: tuple[int, int, int]) -> tuple[list[Layer], str]:
        """The prunable layers with their current channel counts, and the graph's structure key."""
        graph_module = _graph_module(module)
        slots, structure = self.slots(graph_module, input_shape)
        found = []
        for slot in slots:
            mod = graph_module.get_submodule(slot.name)
            if isinstance(mod, nn.Linear):
                area = slot.family.height * slot.family.width
                found.append(Layer(slot, mod.in_features // area, mod.out_features))
            else:
                found.append(Layer(slot, mod.in_channels, mod.out_channels))
        return found, structure

    @staticmethod
    def _fingerprint(module: fx.GraphModule, input_shape: tuple[int, int, int]) -> tuple[Any, ...]:
        """What the analysis depends on: the graph, and each layer's geometry and depthwise-ness."""
        geometry = []
        for name, mod in module.named_modules():
            if isinstance(mod, nn.Conv2d):
                depthwise = mod.groups == mod.in_channels == mod.out_channels and mod.groups > 1
                grouping = "dw" if depthwise else mod.groups
                geometry.append((name, mod.kernel_size, mod.stride, mod.padding, mod.dilation, grouping))
            elif isinstance(mod, nn.Linear):
                geometry.append((name, "linear"))
        return (module.code, tuple(input_shape), tuple(geometry))

    def _analyse(self, module: fx.GraphModule, input_shape: tuple[int, int, int]) -> tuple[tuple[LayerSlot, ...], str]:
        graph = _Graph(module)
        recorder = _ShapeRecorder(module)
        was_training = module.training
        try:
            module.eval()
            with torch.no_grad():
                recorder.run(torch.zeros(1, *input_shape))
        except RuntimeError as exc:
            raise EdgepruneError(
                f"the model does not accept input of shape {list(input_shape)}: {str(exc).splitlines()[0]}",
                hint="pass the right --input-shape (CxHxW)",
            ) from exc
        finally:
            module.train(was_training)
        slots = []
        for node in module.graph.nodes:
            mod = graph.target_module(node)
            if not isinstance(mod, (nn.Conv2d, nn.Linear)):
                continue
            epilogue = graph.epilogue(node)
            if isinstance(mod, nn.Conv2d):
                family = _conv_family(mod, recorder.shapes[node.args[0].name], epilogue)  # type: ignore[union-attr]
            else:
                _, h, w = _flattened_map(graph, node, recorder.shapes)
                family = Family(LINEAR, (1, 1), (1, 1), (0, 0), (1, 1), h, w, epilogue)
            slots.append(LayerSlot(str(node.target), family, graph.reaches(node, False), graph.reaches(node, True)))
        structure = {
            "input": list(input_shape),
            "graph": [[n.op, _target_name(n.target)] for n in module.graph.nodes],
            "layers": [[s.name, s.family.key] for s in slots],
        }
        key = hashlib.sha256(json.dumps(structure).encode()).hexdigest()[:16]
        return tuple(slots), key
