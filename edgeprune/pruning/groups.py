"""Channel groups of a model and what each layer's size depends on, from Torch-Pruning's dependency graph.

A channel group is a set of output channels that must be removed together (a conv, its BatchNorm, every
conv summed with it through residual adds, depthwise convs that follow it). Each group is named after its
root layer, which stays stable across pruning, so plans, scores and learned (alpha, kappa) refer to it.

`Structure` records, per conv / linear layer, which group sets its output width and how many of its input
features each group feeds. That makes FLOPs and params a cheap function of the kept channel counts
(`edgeprune.pruning.cost`), so the ranking can try many thresholds without doing surgery for each.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import fx, nn

from edgeprune.errors import EdgepruneError

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
NORM_TYPES = (nn.BatchNorm2d,)


@dataclass(frozen=True)
class Layer:
    """A conv or linear layer: its shape, output pixels, and which groups set its widths."""

    name: str
    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel: int  # kh * kw; 1 for linear
    groups: int
    pixels: int  # output height * width; 1 for linear
    bias: bool
    out_group: str | None
    in_groups: tuple[tuple[str, int], ...]  # (group, input features per group channel)

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels


@dataclass(frozen=True)
class Norm:
    name: str
    channels: int
    affine: bool
    group: str | None


@dataclass(frozen=True)
class ChannelGroup:
    """Channels removed together; `layers` lose outputs, `consumers` lose inputs, `norms` lose channels."""

    name: str
    size: int
    layers: tuple[str, ...]
    consumers: tuple[str, ...]
    norms: tuple[str, ...]


@dataclass(frozen=True)
class Structure:
    input_shape: tuple[int, int, int]
    groups: dict[str, ChannelGroup]
    layers: dict[str, Layer]
    norms: dict[str, Norm]
    other_params: int  # parameters outside conv / linear / BN (constant under pruning)
    classifier: tuple[str, ...]  # layers producing the logits: never lose outputs

    def sizes(self) -> dict[str, int]:
        return {name: group.size for name, group in self.groups.items()}

    def signature(self) -> list[list]:
        """Group names and sizes: what a learned (alpha, kappa) file must match to be reused."""
        return [[name, group.size] for name, group in self.groups.items()]


@contextlib.contextmanager
def _keep_mode(module: nn.Module) -> Iterator[None]:
    """Torch-Pruning's tracing switches the model to eval(); put the caller's mode back."""
    was_training = module.training
    try:
        yield
    finally:
        module.train(was_training)


def dependency_graph(module: nn.Module, input_shape: tuple[int, int, int]) -> tp.DependencyGraph:
    with _keep_mode(module), torch.enable_grad():
        try:
            return tp.DependencyGraph().build_dependency(
                module, example_inputs=torch.zeros(1, *input_shape), verbose=False
            )
        except Exception as exc:  # noqa: BLE001 - tracing a foreign model can fail in many ways
            raise EdgepruneError(
                f"cannot trace the model's channel dependencies: {type(exc).__name__}: {exc}",
                hint="the model must run on an input of shape 1x" + "x".join(map(str, input_shape)),
            ) from exc


def classifier_layers(module: nn.Module) -> list[str]:
    """The conv / linear layers whose outputs reach the model output without another such layer between."""
    if not isinstance(module, fx.GraphModule):
        raise EdgepruneError("the model must be a torch.fx GraphModule (load it with edgeprune.models.io)")
    modules = dict(module.named_modules())
    output = next(n for n in module.graph.nodes if n.op == "output")
    found: list[str] = []
    stack, seen = list(output.all_input_nodes), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), PRUNABLE_TYPES):
            found.append(str(node.target))
        else:
            stack.extend(node.all_input_nodes)
    return sorted(found)


def _output_pixels(module: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    pixels: dict[str, int] = {}
    hooks = []
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Conv2d):
            hooks.append(
                layer.register_forward_hook(
                    lambda _m, _i, out, n=name: pixels.__setitem__(n, out.shape[-2] * out.shape[-1])
                )
            )
    try:
        with _keep_mode(module), torch.no_grad():
            module.eval()
            module(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return pixels


def _irregular(layer: nn.Module) -> bool:
    """Grouped (not depthwise) convs: Torch-Pruning cannot keep their group structure consistent."""
    if not isinstance(layer, nn.Conv2d) or layer.groups == 1:
        return False
    return not (layer.groups == layer.in_channels == layer.out_channels)


def analyze(module: nn.Module, input_shape: tuple[int, int, int]) -> Structure:
    """Find the channel groups of `module` and the size model of every layer; raises if nothing is prunable."""
    graph = dependency_graph(module, input_shape)
    names = {id(m): n for n, m in module.named_modules()}
    modules = dict(module.named_modules())
    classifier = classifier_layers(module)
    irregular = [m for m in modules.values() if _irregular(m)]
    ignored = [modules[n] for n in classifier] + irregular
    supported = (*PRUNABLE_TYPES, *NORM_TYPES)

    groups: dict[str, ChannelGroup] = {}
    out_group: dict[str, str] = {}
    in_groups: dict[str, list[tuple[str, int]]] = {}
    norm_group: dict[str, str] = {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE_TYPES):
        root = names[id(group[0].dep.target.module)]
        size = len(group[0].idxs)
        layers, consumers, norms = [], [], []
        usable = size > 1
        for dep, idxs in group:
            target = dep.target.module
            if id(target) not in names:
                continue  # Torch-Pruning's stand-ins for adds, reshapes, activations: no parameters
            if any(True for _ in target.parameters(recurse=False)) and (
                not isinstance(target, supported) or target in irregular
            ):
                usable = False  # a parameterised layer we cannot size: leave the whole group alone
                break
            name = names[id(target)]
            if isinstance(target, NORM_TYPES):
                norms.append(name)
            elif graph.is_out_channel_pruning_fn(dep.handler):
                layers.append(name)
            elif isinstance(target, PRUNABLE_TYPES) and graph.is_in_channel_pruning_fn(dep.handler):
                if len(idxs) % size:
                    usable = False
                    break
                consumers.append((name, len(idxs) // size))
        if not usable:
            continue
        groups[root] = ChannelGroup(root, size, tuple(layers), tuple(n for n, _ in consumers), tuple(norms))
        for name in layers:
            out_group[name] = root
        for name, factor in consumers:
            in_groups.setdefault(name, []).append((root, factor))
        for name in norms:
            norm_group[name] = root
    if not groups:
        raise EdgepruneError(
            "the model has no prunable channels (no conv / linear layer whose outputs can be removed)",
            hint="pruning needs at least one hidden Conv2d or Linear layer before the classifier",
        )

    order = {name: index for index, name in enumerate(modules)}
    groups = dict(sorted(groups.items(), key=lambda item: order[item[0]]))
    pixels = _output_pixels(module, input_shape)
    layers_info: dict[str, Layer] = {}
    norms_info: dict[str, Norm] = {}
    sized = 0
    for name, layer in modules.items():
        if isinstance(layer, nn.Conv2d):
            kernel = math.prod(layer.kernel_size)
            info = Layer(
                name,
                "conv",
                layer.in_channels,
                layer.out_channels,
                kernel,
                layer.groups,
                pixels.get(name, 0),
                layer.bias is not None,
                out_group.get(name),
                tuple(in_groups.get(name, ())),
            )
        elif isinstance(layer, nn.Linear):
            info = Layer(
                name,
                "linear",
                layer.in_features,
                layer.out_features,
                1,
                1,
                1,
                layer.bias is not None,
                out_group.get(name),
                tuple(in_groups.get(name, ())),
            )
        elif isinstance(layer, NORM_TYPES):
            norms_info[name] = Norm(name, layer.num_features, layer.affine, norm_group.get(name))
            sized += sum(p.numel() for p in layer.parameters(recurse=False))
            continue
        else:
            continue
        layers_info[name] = info
        sized += sum(p.numel() for p in layer.parameters(recurse=False))
    other = sum(p.numel() for p in module.parameters()) - sized
    return Structure(input_shape, groups, layers_info, norms_info, other, tuple(classifier))


def pruner_groups(module: nn.Module, structure: Structure) -> dict[str, tp.Group]:
    """Torch-Pruning's full-index group for each of our groups on `module` (for importance criteria)."""
    graph = dependency_graph(module, structure.input_shape)
    modules = dict(module.named_modules())
    found = {}
    for name, group in structure.groups.items():
        root = modules[name]
        pruner = graph.get_pruner_of_module(root)
        found[name] = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(group.size)))
    return found


def prune(module: nn.Module, structure: Structure, keep: dict[str, list[int]]) -> nn.Module:
    """Physical surgery on a copy: each group keeps the channel indices in `keep`; returns a dense module."""
    import copy

    pruned = copy.deepcopy(module)
    graph = dependency_graph(pruned, structure.input_shape)
    modules = dict(pruned.named_modules())
    for name, kept in keep.items():
        group = structure.groups[name]
        if not kept:
            raise EdgepruneError(f"a plan may not remove every channel of group '{name}'")
        removed = sorted(set(range(group.size)) - set(kept))
        if not removed:
            continue
        root = modules[name]
        pruner = graph.get_pruner_of_module(root)
        graph.get_pruning_group(root, pruner.prune_out_channels, removed).prune()
    return pruned


def _widths(layer: Layer, counts: dict[str, int], structure: Structure) -> tuple[int, int]:
    """(input, output) width of a layer when each group keeps `counts[group]` channels."""
    out = counts.get(layer.out_group, layer.out_channels) if layer.out_group else layer.out_channels
    if layer.depthwise:
        return out, out
    width = layer.in_channels
    for group, factor in layer.in_groups:
        width -= factor * (structure.groups[group].size - counts.get(group, structure.groups[group].size))
    return width, out


def layer_widths(structure: Structure, counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {name: _widths(layer, counts, structure) for name, layer in structure.layers.items()}


def skeleton(module: nn.Module, structure: Structure, counts: dict[str, int]) -> nn.Module:
    """A copy with every layer resized to `counts`, weights left uninitialised: only its shapes are meaningful.

    Latency models need a module to look at; building one this way costs milliseconds, where real surgery
    through the dependency graph costs up to seconds, and the ranking tries a dozen sizes per plan.
    """
    import copy

    shell = copy.deepcopy(module)
    widths = layer_widths(structure, counts)
    for name, layer in structure.layers.items():
        width_in, width_out = widths[name]
        if (width_in, width_out) == (layer.in_channels, layer.out_channels):
            continue
        old = shell.get_submodule(name)
        if isinstance(old, nn.Conv2d):
            groups = width_out if layer.depthwise else old.groups
            new: nn.Module = nn.utils.skip_init(
                nn.Conv2d,
                width_in,
                width_out,
                old.kernel_size,
                old.stride,
                old.padding,
                old.dilation,
                groups,
                old.bias is not None,
                old.padding_mode,
            )
        else:
            new = nn.utils.skip_init(nn.Linear, width_in, width_out, old.bias is not None)
        _replace(shell, name, new)
    for name, norm in structure.norms.items():
        if norm.group and counts.get(norm.group, norm.channels) != norm.channels:
            old = shell.get_submodule(name)
            _replace(
                shell, name, type(old)(counts[norm.group], old.eps, old.momentum, old.affine, old.track_running_stats)
            )
    return shell


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
