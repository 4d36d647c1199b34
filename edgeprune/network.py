"""One description of a network's layers, read from its fx graph: what each conv / linear layer is, and its cost;
and the tracer that turns a user's module into that fx graph (`to_graph_module`), which saved models hold.

Profiling and pruning look at the same layers: the latency table keys a layer by its geometry (plus the
epilogue TVM fuses into it, `profiling.signature`), and pruning's FLOPs / params targets count the same
layers at other channel counts (`pruning.cost`). Both read a layer's `Geometry` from here and count its
multiply-accumulates and parameters with its `macs` / `params`, so the figures `estimate`, `prune` and the
table report cannot drift apart. Pruning changes channel counts only, never a geometry (but for the groups of a
convolution with one input channel per group, which follow its inputs: `pruning.groups.structure.GroupedLayer.cost`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import fx, nn

from edgeprune.errors import EdgepruneError

CONV, DEPTHWISE, GROUPED, LINEAR = "conv2d", "depthwise", "grouped", "linear"


@dataclass(frozen=True)
class Geometry:
    """What fixes a conv / linear layer apart from its channel counts.

    `height` x `width` is the input feature map (for a linear layer: the map it was flattened from, 1x1 after
    global pooling). `groups` matters only for GROUPED; depthwise ties groups to the channel count. A channel
    multiplier (GROUPED with one input channel per group) ties them to its inputs: pruning removes whole groups,
    each an input and its `multiplier` outputs, so its groups change and its multiplier does not.
    """

    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    height: int
    width: int
    groups: int = 1
    multiplier: int = 1  # outputs per input channel of a channel multiplier (1: not one)

    @property
    def outputs_per_input(self) -> int | None:
        """The fixed out/in channel ratio of a layer whose widths move together (depthwise 1, a channel
        multiplier its multiplier): its entries lie on a line, not a grid. None for the others."""
        if self.kind == DEPTHWISE:
            return 1
        return self.multiplier if self.multiplier > 1 else None

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

    def in_width(self, in_channels: int) -> int:
        """The module's input width for `in_channels` channels of the input map (a linear layer's in_features)."""
        return in_channels * self.height * self.width if self.kind == LINEAR else in_channels

    def _weights_per_output(self, in_width: int) -> int:
        if self.kind == LINEAR:
            return in_width
        per_channel = 1 if self.outputs_per_input else in_width // self.groups
        return self.kernel[0] * self.kernel[1] * per_channel

    def macs(self, in_width: int, out_width: int) -> int:
        """Multiply-accumulates at the module's widths (in_features for a linear layer); the epilogue (bias,
        activation, residual add) is negligible and not counted, as the pruning literature counts FLOPs."""
        out_h, out_w = self.output_size
        return self._weights_per_output(in_width) * out_width * out_h * out_w

    def params(self, in_width: int, out_width: int, bias: bool) -> int:
        """Weights (and bias) at the module's widths."""
        return self._weights_per_output(in_width) * out_width + (out_width if bias else 0)


G = TypeVar("G", bound=Geometry)


@dataclass(frozen=True)
class LayerSite(Generic[G]):
    """A conv / linear layer as the graph places it: its geometry (profiling's signatures carry a `Family`
    here, a geometry with the fused epilogue) and which of its widths the network fixes."""

    name: str
    geometry: G
    in_fixed: bool  # reads the network input: its input channels are the image's
    out_fixed: bool  # its output reaches the network output without another layer: the class count


LAYER_TYPES = (nn.Conv2d, nn.Linear)


def is_prunable(module: object) -> bool:
    """A conv / linear layer: what the latency table keys, FLOPs count and pruning resizes (the one test)."""
    return isinstance(module, LAYER_TYPES)


def widths(layer: nn.Module) -> tuple[int, int]:
    """(input, output) width of a conv or linear module, as it counts them."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


def is_depthwise(conv: nn.Conv2d) -> bool:
    """One filter per channel: groups, inputs and outputs all equal (and more than one)."""
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


class Graph:
    """Questions about one fx graph: which nodes are conv / linear layers, their users, what they reach."""

    def __init__(self, module: fx.GraphModule) -> None:
        self.module = module
        self.modules = dict(module.named_modules())

    def target_module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(str(node.target)) if node.op == "call_module" else None

    def is_layer(self, node: fx.Node) -> bool:
        return is_prunable(self.target_module(node))

    def layer_nodes(self) -> list[fx.Node]:
        return [node for node in self.module.graph.nodes if self.is_layer(node)]

    @staticmethod
    def single_user(node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def after_norm(self, node: fx.Node) -> tuple[fx.Node, fx.Node | None]:
        """What follows a layer: (its BatchNorm when that is the layer's only user, else the layer itself;
        that node's only user, if it has one). TVM fuses such a BatchNorm into the layer, and the channels the
        next op sees are its outputs (profiling's fused epilogues, pruning's activation criterion)."""
        user = self.single_user(node)
        if user is not None and isinstance(self.target_module(user), nn.BatchNorm2d):
            return user, self.single_user(user)
        return node, user

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

    def site(self, node: fx.Node, shapes: dict[str, tuple[int, ...]]) -> LayerSite[Geometry]:
        """The layer at `node`, given the graph's recorded shapes (`record_shapes`)."""
        mod = self.target_module(node)
        if isinstance(mod, nn.Conv2d):
            geometry = _conv_geometry(mod, shapes[node.args[0].name])  # type: ignore[union-attr]
        else:
            _, h, w = self._flattened_map(node, shapes)
            geometry = Geometry(LINEAR, (1, 1), (1, 1), (0, 0), (1, 1), h, w)
        return LayerSite(str(node.target), geometry, self.reaches(node, False), self.reaches(node, True))

    def _flattened_map(self, node: fx.Node, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int, int]:
        """(channels, h, w) of the feature map a linear layer's input was flattened from (1x1 if none)."""
        features = shapes[node.args[0].name][-1]  # type: ignore[union-attr]
        current = node.args[0]
        while isinstance(current, fx.Node) and not self.is_layer(current):
            shape = shapes.get(current.name, ())
            if len(shape) == 4 and shape[1] * shape[2] * shape[3] == features:
                return int(shape[1]), int(shape[2]), int(shape[3])
            inputs = current.all_input_nodes
            current = inputs[0] if len(inputs) == 1 else None
        return int(features), 1, 1


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _padding(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Explicit padding; 'valid' is none, and 'same' the symmetric padding it stands for (an even kernel
    would need padding on one side only, which a (height, width) pair cannot say)."""
    if padding == "valid":
        return (0, 0)
    if padding != "same":
        return _pair(padding)
    total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    if any(t % 2 for t in total):
        raise EdgepruneError(
            f"convolution padding 'same' with kernel {kernel} pads one side more than the other; not supported",
            hint="use explicit padding (or an odd kernel)",
        )
    return total[0] // 2, total[1] // 2


def _conv_geometry(mod: nn.Conv2d, in_shape: tuple[int, ...]) -> Geometry:
    multiplier = 1
    if mod.groups == 1:
        kind, groups = CONV, 1
    elif is_depthwise(mod):
        kind, groups = DEPTHWISE, 1
    else:
        kind, groups = GROUPED, mod.groups
        if mod.groups == mod.in_channels:
            multiplier = mod.out_channels // mod.in_channels
    kernel, dilation = _pair(mod.kernel_size), _pair(mod.dilation)
    return Geometry(
        kind=kind,
        kernel=kernel,
        stride=_pair(mod.stride),
        padding=_padding(mod.padding, kernel, dilation),
        dilation=dilation,
        height=int(in_shape[2]),
        width=int(in_shape[3]),
        groups=groups,
        multiplier=multiplier,
    )


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


@contextlib.contextmanager
def inference(module: nn.Module) -> Iterator[None]:
    """The module in eval mode without gradients for the block (BatchNorm statistics must not move while the
    graph is analysed), then back in the caller's mode."""
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def record_shapes(module: fx.GraphModule, input_shape: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
    """Every node's output shape on one zero input in eval mode (the caller's mode is kept)."""
    recorder = _ShapeRecorder(module)
    try:
        with inference(module):
            recorder.run(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        raise EdgepruneError(
            f"the model does not accept input of shape {list(input_shape)}: {str(exc).splitlines()[0]}",
            hint="pass the right --input-shape (CxHxW)",
        ) from exc
    return recorder.shapes


def sites(module: fx.GraphModule, input_shape: tuple[int, int, int]) -> list[LayerSite[Geometry]]:
    """The conv / linear layers of a network in graph order."""
    graph = Graph(module)
    shapes = record_shapes(module, input_shape)
    return [graph.site(node, shapes) for node in graph.layer_nodes()]


def output_layers(module: fx.GraphModule) -> list[str]:
    """The conv / linear layers whose outputs reach the model output without another such layer between (the
    classifier: its outputs are the class count, never pruned)."""
    graph = Graph(module)
    return sorted(str(n.target) for n in graph.layer_nodes() if graph.reaches(n, True))


class _ShapedProxy(fx.Proxy):
    """A proxy that answers shape questions with the example's sizes, except the batch size, which stays a
    graph value: `int(x.size(1) * 0.5)` and `b, c, h, w = x.size()` trace, and the graph still takes any batch."""

    tracer: _ConcreteTracer

    def size(self, dim: int | None = None) -> Any:
        value = self.tracer.values.get(self.node)
        if not isinstance(value, torch.Tensor):
            return self.tracer.create_proxy("call_method", "size", (self,) if dim is None else (self, dim), {})
        if dim is None:
            return tuple(self._extent(index) for index in range(value.dim()))
        return self._extent(dim)

    def _extent(self, dim: int) -> Any:
        value = self.tracer.values[self.node]
        if dim % value.dim() == 0:  # the batch: kept symbolic so the graph runs on any batch size
            return self.tracer.create_proxy("call_method", "size", (self, 0), {})
        return int(value.shape[dim])

    @property
    def shape(self) -> Any:
        return self.size()

    def dim(self) -> Any:
        value = self.tracer.values.get(self.node)
        return (
            value.dim()
            if isinstance(value, torch.Tensor)
            else self.tracer.create_proxy("call_method", "dim", (self,), {})
        )


class _ConcreteTracer(fx.Tracer):
    """fx tracing that runs every traced op on an example input, so Python code computing with channel counts
    (split sizes, views of a channel shuffle) sees real numbers; those numbers become graph constants."""

    def __init__(self, example: torch.Tensor) -> None:
        super().__init__()
        self.example = example
        self.values: dict[fx.Node, Any] = {}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapedProxy(node, self)

    def create_proxy(self, kind: str, target: Any, args: Any, kwargs: Any, *rest: Any, **more: Any) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **more)
        self.values[proxy.node] = self._evaluate(kind, target, args, kwargs)
        return proxy

    def _evaluate(self, kind: str, target: Any, args: Any, kwargs: Any) -> Any:
        def concrete(value: Any) -> Any:
            if isinstance(value, fx.Proxy):
                return self.values[value.node]
            if isinstance(value, fx.Node):
                return self.values[value]
            return value

        args = fx.node.map_aggregate(args, concrete)
        kwargs = fx.node.map_aggregate(kwargs, concrete)
        if kind == "placeholder":
            return self.example
        if kind == "get_attr":
            return _attribute(self.root, target)
        if kind == "call_module":
            with _unpatched_modules():
                return self.root.get_submodule(target)(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if kind == "call_function":
            return target(*args, **kwargs)
        return None


_MODULE_CALL, _MODULE_GETATTR = nn.Module.__call__, nn.Module.__getattr__


@contextlib.contextmanager
def _unpatched_modules() -> Iterator[None]:
    """fx patches Module.__call__ / __getattr__ while tracing; running a leaf module for its value needs the
    originals, or its own weights would come back as proxies and be traced again, without end."""
    patched = nn.Module.__call__, nn.Module.__getattr__
    nn.Module.__call__, nn.Module.__getattr__ = _MODULE_CALL, _MODULE_GETATTR  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = patched  # type: ignore[method-assign]


def _attribute(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _trace_concrete(module: nn.Module, input_shape: tuple[int, int, int]) -> fx.GraphModule:
    """Trace with example shapes; the result is checked against the module on a batch of another size."""
    with torch.no_grad():
        tracer = _ConcreteTracer(torch.zeros(1, *input_shape))
        graph = tracer.trace(module)
        graph._tracer_cls = None  # the pickle re-traces with the recorded tracer: plain fx's, needing no example
        graph_module = fx.GraphModule(tracer.root, graph, type(module).__name__)
        probe = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(0))
        expected, got = module(probe), graph_module(probe)
    if not (isinstance(got, torch.Tensor) and torch.allclose(got, expected, rtol=1e-4, atol=1e-5)):
        raise EdgepruneError("the traced graph computes something else than the model (data-dependent code?)")
    return graph_module


def to_graph_module(module: nn.Module, input_shape: tuple[int, int, int] | None = None) -> fx.GraphModule:
    """Trace to an fx GraphModule so the saved file needs no user code; a clear error when tracing fails.

    Symbolic tracing comes first (sizes stay graph values). When the forward turns a size into a Python
    number (`int(x.size(1) * 0.5)`), it cannot be traced symbolically; given `input_shape`, the model is then
    traced on an example input with its sizes as constants. Pruning rewrites the channel constants of slices
    and splits (`edgeprune.pruning.groups.surgery`), so the saved graph stays correct after surgery.
    """
    if isinstance(module, fx.GraphModule):
        return module
    was_training = module.training
    module.eval()
    try:
        graph_module = fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - fx raises many types for untraceable code
        if input_shape is None:
            raise EdgepruneError(
                f"cannot trace model {type(module).__name__} with torch.fx: {exc}",
                hint="models need a forward without data-dependent Python control flow",
            ) from exc
        try:
            graph_module = _trace_concrete(module, input_shape)
        except Exception as again:  # noqa: BLE001 - the user's forward may raise anything on proxies
            raise EdgepruneError(
                f"cannot trace model {type(module).__name__} with torch.fx ({exc}), nor with example shapes "
                f"({type(again).__name__}: {again})",
                hint="models need a forward without data-dependent Python control flow",
            ) from again
        finally:
            module.train(was_training)
    for node in graph_module.graph.nodes:
        node.type = None  # postponed annotations are strings, which the GraphModule pickle cannot import
    graph_module.recompile()
    graph_module.train(was_training)
    module.train(was_training)
    return graph_module
