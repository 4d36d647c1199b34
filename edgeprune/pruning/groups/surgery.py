"""Surgery: a dense copy of a model without the removed channel units, and skeletons sized to channel counts.

Every removed unit names its channels in each member (filters, BatchNorm channels, consumers' inputs), so the
surgery cuts exactly those; a traced graph's constant channel slices, splits and views are then rewritten to
the surviving channels.
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any

import torch
from torch import fx, nn

from edgeprune.errors import EdgepruneError
from edgeprune.network import inference, is_depthwise, is_prunable, widths
from edgeprune.pruning.groups.structure import NORM_TYPES, Structure, layer_widths, norm_width
from edgeprune.pruning.groups.trace import channel_indexing, is_view


def prune(module: nn.Module, structure: Structure, keep: dict[str, list[int]]) -> nn.Module:
    """Physical surgery on a copy: each group keeps the units in `keep`; returns a dense module.

    Every removed unit names its channels in each member (filters, BatchNorm channels, consumers' inputs),
    so the surgery cuts exactly those. A traced graph's constant channel slices and splits are then
    rewritten to the surviving channels.
    """
    pruned = copy.deepcopy(module)
    gone: dict[tuple[str, bool], set[int]] = {}
    for name, kept in keep.items():
        group = structure.groups[name]
        if not kept:
            raise EdgepruneError(f"a plan may not remove every channel of group '{name}'")
        removed = sorted(set(range(group.size)) - set(kept))
        for member in (*group.layers, *group.norms):
            gone.setdefault((member, False), set()).update(group.channels(member, removed))
        for member in group.consumers:
            gone.setdefault((member, True), set()).update(group.channels(member, removed, inputs=True))
    alive: dict[str, list[int]] = {}
    for (name, inputs), channels in gone.items():
        if not inputs:
            layer = pruned.get_submodule(name)
            width = layer.num_features if isinstance(layer, NORM_TYPES) else widths(layer)[1]
            alive[name] = [c for c in range(width) if c not in channels]
    for name, layer in pruned.named_modules():
        outs = alive.get(name)
        ins = gone.get((name, True))
        if outs is not None or ins:
            _cut(name, layer, outs, ins or set())
    if isinstance(pruned, fx.GraphModule) and isinstance(module, fx.GraphModule):
        _rewrite_channel_constants(module, pruned, alive, structure.input_shape)
    return pruned


@torch.no_grad()
def _cut(name: str, layer: nn.Module, outs: list[int] | None, ins: set[int]) -> None:
    """Keep output channels `outs` (None: all) and drop input channels `ins` of one layer or norm, in place."""

    def take(tensor: torch.Tensor | None, dim: int, index: list[int]) -> torch.Tensor | None:
        return None if tensor is None else tensor.index_select(dim, torch.tensor(index, dtype=torch.long))

    if isinstance(layer, NORM_TYPES):
        assert outs is not None
        layer.num_features = len(outs)
        for attr in ("weight", "bias", "running_mean", "running_var"):
            value = getattr(layer, attr)
            if value is not None:
                new = take(value, 0, outs)
                setattr(layer, attr, nn.Parameter(new) if isinstance(value, nn.Parameter) else new)
        return
    weight = layer.weight
    width_out = widths(layer)[1]
    outs = list(range(width_out)) if outs is None else outs
    if isinstance(layer, nn.Conv2d) and is_depthwise(layer):
        layer.in_channels = layer.out_channels = layer.groups = len(outs)
        layer.weight = nn.Parameter(take(weight, 0, outs))
    elif isinstance(layer, nn.Conv2d) and 1 < layer.groups == layer.in_channels:
        kept_in = [c for c in range(layer.in_channels) if c not in ins]
        if len(outs) != len(kept_in) * (width_out // layer.groups):
            raise EdgepruneError(f"pruning '{name}' would split one of its groups")
        layer.in_channels, layer.out_channels, layer.groups = len(kept_in), len(outs), len(kept_in)
        layer.weight = nn.Parameter(take(weight, 0, outs))
    elif isinstance(layer, nn.Conv2d):
        width_in = layer.in_channels
        per = width_in // layer.groups
        kept_in = [c for c in range(width_in) if c not in ins]
        positions = [c for c in kept_in if c < per]  # the same positions survive in every group
        if len(kept_in) != len(positions) * layer.groups or len(outs) % layer.groups:
            raise EdgepruneError(f"pruning '{name}' would break its {layer.groups} groups")
        layer.in_channels, layer.out_channels = len(kept_in), len(outs)
        layer.weight = nn.Parameter(take(take(weight, 0, outs), 1, positions))
    else:
        kept_in = [c for c in range(layer.in_features) if c not in ins]
        layer.in_features, layer.out_features = len(kept_in), len(outs)
        layer.weight = nn.Parameter(take(take(weight, 0, outs), 1, kept_in))
    if layer.bias is not None:
        layer.bias = nn.Parameter(take(layer.bias, 0, outs))


class _Survivors(fx.Interpreter):
    """Runs the original graph on indicators (1 for a surviving channel, 0 for a removed one) and records the
    channel mask at the input of every slice and split along the channel axis."""

    def __init__(self, module: fx.GraphModule, alive: dict[str, list[int]]) -> None:
        super().__init__(module)
        self.alive = alive
        self.masks: dict[str, tuple[list[bool], Any]] = {}
        self.views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        layer = self.fetch_attr(target)
        if isinstance(layer, NORM_TYPES):
            return args[0]
        out = super().call_module(target, args, kwargs)
        if is_prunable(layer):
            mask = torch.zeros(out.shape[1])
            mask[self.alive.get(str(target), list(range(out.shape[1])))] = 1.0
            out = mask.view(1, -1, *([1] * (out.dim() - 2))).expand_as(out).clone()
        return out

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if is_view(n):
            self.views[n.name] = (self.env[n.all_input_nodes[0]], out)
        elif channel_indexing(n):
            source = self.env[n.all_input_nodes[0]]
            mask = source.abs().transpose(0, 1).reshape(source.shape[1], -1).sum(dim=1) > 0
            self.masks[n.name] = (mask.tolist(), out)
        return out


def _resize_view(node: fx.Node, source: torch.Tensor, out: torch.Tensor) -> None:
    """Give a view the shape of the surviving channels: the last axis made of channels (not a trailing
    spatial axis) absorbs the change, so a shuffle's group count stays."""
    kept = int((source[0] != 0).sum())
    if kept == out[0].numel() or not out.dim() >= 2:
        return
    trailing = 0
    while trailing < min(out.dim(), source.dim()) - 2 and out.shape[-1 - trailing] == source.shape[-1 - trailing]:
        trailing += 1
    axis = out.dim() - 1 - trailing
    others = math.prod(out.shape[1:]) // out.shape[axis]
    packed = len(node.args) == 2 and isinstance(node.args[1], (tuple, list))
    shape = list(node.args[1] if packed else node.args[1:])
    if axis < 1 or len(shape) != out.dim() or kept % others or not isinstance(shape[axis], int):
        raise EdgepruneError(f"cannot resize the view '{node.name}' to the surviving channels")
    if shape[axis] != -1:
        shape[axis] = kept // others
    node.args = (node.args[0], tuple(shape)) if packed else (node.args[0], *shape)


def _rewrite_channel_constants(
    original: fx.GraphModule, pruned: fx.GraphModule, alive: dict[str, list[int]], input_shape: tuple[int, int, int]
) -> None:
    if not any(channel_indexing(n) or is_view(n) for n in original.graph.nodes):
        return
    survivors = _Survivors(original, alive)
    with inference(original):
        survivors.run(torch.ones(1, *input_shape))
    nodes = {n.name: n for n in pruned.graph.nodes}
    for name, (source, out) in survivors.views.items():
        _resize_view(nodes[name], source, out)
    for name, (mask, out) in survivors.masks.items():
        if all(mask):
            continue
        node = nodes[name]
        if node.target is operator.getitem:
            index = node.args[1]
            start, stop, _ = index[1].indices(len(mask))
            new = slice(sum(mask[:start]), sum(mask[:stop]))
            node.args = (node.args[0], (index[0], new, *index[2:]))
        else:
            sizes, offset = [], 0
            for piece in out:
                sizes.append(sum(mask[offset : offset + piece.shape[1]]))
                offset += piece.shape[1]
            node.op, node.target = "call_function", torch.split
            node.args, node.kwargs = (node.args[0], sizes), {"dim": 1}
    pruned.recompile()


def skeleton(module: nn.Module, structure: Structure, counts: dict[str, int]) -> nn.Module:
    """A copy with every layer resized to `counts`, weights left uninitialised: only its shapes are meaningful.

    Latency models need a module to look at; building one this way costs milliseconds, where real surgery
    through the dependency graph costs up to seconds, and the ranking tries a dozen sizes per plan.
    """
    shell = copy.deepcopy(module)
    widths = layer_widths(structure, counts)
    for name, layer in structure.layers.items():
        width_in, width_out = widths[name]
        if (width_in, width_out) == (layer.in_channels, layer.out_channels):
            continue
        old = shell.get_submodule(name)
        if isinstance(old, nn.Conv2d):
            groups = width_in if layer.channelwise else old.groups
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
        width = norm_width(norm, counts, structure)
        if width != norm.channels:
            old = shell.get_submodule(name)
            _replace(shell, name, type(old)(width, old.eps, old.momentum, old.affine, old.track_running_stats))
    if isinstance(module, fx.GraphModule) and isinstance(shell, fx.GraphModule):
        _rewrite_channel_constants(module, shell, _first_units_alive(structure, counts), structure.input_shape)
    return shell


def _first_units_alive(structure: Structure, counts: dict[str, int]) -> dict[str, list[int]]:
    """Surviving output channels of every layer when each group keeps its first `counts[group]` units."""
    gone: dict[str, set[int]] = {}
    for name, group in structure.groups.items():
        dropped = range(counts.get(name, group.size), group.size)
        for layer in group.layers:
            gone.setdefault(layer, set()).update(group.channels(layer, dropped))
    return {
        name: [c for c in range(layer.out_channels) if c not in gone[name]]
        for name, layer in structure.layers.items()
        if name in gone
    }


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
