"""Tracing a model's channels through its fx graph, one channel at a time, into draft channel groups.

A channel group is a set of interchangeable channel units removed together. A unit is one channel of a
conv with everything tied to it: its BatchNorm, every channel summed with it through residual adds, the
depthwise convs that follow it, the input channels of its consumers. Channels are followed one at a time
through concatenations, slices and splits, so a layer's outputs can belong to several groups (the residual
part and the dense part of a dual-path block's sliced output). A grouped convolution (groups > 1, not
depthwise) takes units of one position in every group, so the group count stays and the groups keep one
width; one with a single input channel per group (a channel multiplier) loses whole groups. A channel
shuffle (view into a (groups, width) grid, transpose, view back) ties position j of every grid row, and the
views' constant sizes are rewritten after surgery like slices and splits (`surgery`). Torch-Pruning's
dependency graph did this analysis before; it maps channels wrongly through slices (indices past the end of
a layer on a dual-path block) and can walk a channel shuffle for minutes, so edgeprune traces it itself.

What cannot be pruned correctly (channels through any other reshape of the channel axis, modules we cannot
resize) is left out with the reason, never an error; `check` then tests what is offered.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from edgeprune.network import inference, is_depthwise, is_prunable, sites, widths
from edgeprune.pruning.groups.structure import (
    NORM_TYPES,
    ChannelGroup,
    GroupedLayer,
    Norm,
    Structure,
    classifier_layers,
)

_METADATA = ("size", "dim", "numel")
_RESHAPES = ("view", "reshape", "flatten", "unflatten", "transpose", "permute", "movedim", "swapaxes", "swapdims")


class _Sets:
    """Union-find over hashable items."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, item: Any) -> Any:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        while item != root:
            item, self.parent[item] = self.parent[item], root
        return root

    def union(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)


def _grouped(layer: nn.Module) -> bool:
    """Grouped, not depthwise: channels go in units of one position in each group."""
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and not is_depthwise(layer)


Slot = tuple[str, str, int]  # (module, "out" | "in", channel): norms and depthwise convs have "out" only
_INPUT = "<input>"


class _Grid(list):
    """Channel ids of a 5-d view (batch, groups, width, h, w) of a feature map: one list per group."""


def _dims(node: fx.Node) -> tuple[int, int] | None:
    """The two axes a transpose swaps, when given as constants."""
    axes = [a for a in node.args[1:3] if isinstance(a, int)]
    return (min(axes), max(axes)) if len(axes) == 2 else None


class _ChannelTracer(fx.Interpreter):
    """Follows every channel through the graph, one at a time, and ties the channels that must go together.

    Each tensor carries, per channel, the slot it was born in (a layer's output channel, or an input image
    channel). Channel-preserving ops (BatchNorm, activations, pooling, adds) tie their inputs' channels
    position by position; concatenations, slices and splits of the channel axis move them; a flatten into
    a linear layer spreads a channel over its features; a conv or linear layer ties its input channels to
    its input slots and starts new output slots (a depthwise conv passes its channels through). Anything
    else that touches the channel axis (a reshape such as a channel shuffle, an unknown module with
    parameters, the model output) blocks the channels it sees, with the reason.
    """

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.modules = dict(module.named_modules())
        self.sets = _Sets()
        self.blocked: dict[Slot, str] = {}
        self.ids: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.ids[n] = self._channels(n, out)
        return out

    def _tie(self, *slots: Slot) -> None:
        for slot in slots[1:]:
            self.sets.union(slots[0], slot)

    def _block(self, ids: Any, why: str) -> None:
        if isinstance(ids, list) and ids and isinstance(ids[0], list):
            for part in ids:
                self._block(part, why)
        elif isinstance(ids, list):
            for slot in ids:
                self.blocked.setdefault(slot, why)

    def _inputs(self, n: fx.Node) -> list[tuple[fx.Node, list[Slot]]]:
        return [(a, self.ids[a]) for a in n.all_input_nodes if isinstance(self.ids.get(a), list)]

    def _fresh(self, name: str, out: torch.Tensor, why: str | None = None) -> list[Slot]:
        slots = [(name, "out", c) for c in range(out.shape[1])]
        for slot in slots:
            self.sets.find(slot)
        if why:
            self._block(slots, why)
        return slots

    def _channels(self, n: fx.Node, out: Any) -> Any:
        if n.op == "placeholder":
            return self._fresh(_INPUT, out, "the network input") if isinstance(out, torch.Tensor) else None
        if n.op == "output":
            for _, ids in self._inputs(n):
                self._block(ids, "model output")
            return None
        if n.op == "call_module":
            return self._module(n, out)
        if n.op == "get_attr":
            return None
        target = op_name(n)
        inputs = self._inputs(n)
        if target in _METADATA or (target == "getattr" and n.args[1:2] in (("shape",), ("dtype",), ("device",))):
            return None  # reads sizes, not channels
        if target == "getitem":
            return self._getitem(n, out)
        if not isinstance(out, (torch.Tensor, tuple, list)) or not inputs:
            for _, ids in inputs:
                self._block(ids, f"'{op_name(n)}' turns the channels into a non-tensor")
            return None
        if target in ("cat", "concat", "concatenate") and self._dim(n, out) == 1:
            return [slot for _, ids in inputs for slot in ids]
        if target in ("split", "chunk") and isinstance(out, (tuple, list)):
            if self._dim(n, out[0]) == 1:
                source, parts, start = inputs[0][1], [], 0
                for piece in out:
                    parts.append(source[start : start + piece.shape[1]])
                    start += piece.shape[1]
                return parts
            return [list(inputs[0][1]) for _ in out]
        if target in _RESHAPES and self._flatten(inputs[0], out) is not None:
            return self._flatten(inputs[0], out)
        if target in _RESHAPES or isinstance(inputs[0][1], _Grid):
            shuffled = self._shuffle_step(target, n, inputs[0], out)
            if shuffled is not None:
                return shuffled
        width = out.shape[1] if isinstance(out, torch.Tensor) and out.dim() >= 2 else None
        moved = target in _RESHAPES and tuple(getattr(out, "shape", ())) != tuple(self.env[inputs[0][0]].shape)
        if moved:
            width = None  # the channel axis is reshaped or moved: which channel lands where is lost
        matching = [ids for _, ids in inputs if len(ids) == width]
        if width is None or not matching or any(len(ids) not in (width, 1) for _, ids in inputs):
            why = f"'{op_name(n)}' reshapes or mixes the channel axis"
            for _, ids in inputs:
                self._block(ids, why)
            return self._fresh(n.name, out, why) if isinstance(out, torch.Tensor) and out.dim() >= 2 else None
        for position in range(width):
            self._tie(*(ids[position] for ids in matching))
        return list(matching[0])

    def _flatten(self, source: tuple[fx.Node, list[Slot]], out: Any) -> list[Slot] | None:
        """Channel ids of the features when `out` flattens the source map (C, H, W) to C*H*W features."""
        node, ids = source
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or not ids:
            return None
        spread = out.shape[1] // len(ids)
        if spread * len(ids) != out.shape[1] or out.shape[1] != self.env[node][0].numel():
            return None
        return [slot for slot in ids for _ in range(spread)]

    def _shuffle_step(self, target: str, n: fx.Node, source: tuple[fx.Node, list], out: Any) -> list | None:
        """The steps of a channel shuffle: a view splitting the channels into a (groups, width) grid, a
        transpose of the grid, a view merging it back. Position j of every row of the grid is tied, so each
        row keeps the same positions and the pruned shuffle interleaves what the original did."""
        node, ids = source
        before = self.env[node]
        if not isinstance(out, torch.Tensor) or not isinstance(before, torch.Tensor):
            return None
        if isinstance(ids, _Grid):
            if target == "contiguous":
                return ids
            if target in ("transpose", "swapaxes", "swapdims") and _dims(n) == (1, 2):
                return _Grid([list(column) for column in zip(*ids, strict=True)])
            if target in ("view", "reshape") and out.dim() == 4 and out.shape[2:] == before.shape[3:]:
                return [slot for row in ids for slot in row]
            return None
        if target in ("view", "reshape") and before.dim() == 4 and out.dim() == 5 and out.shape[3:] == before.shape[2:]:
            rows, width = int(out.shape[1]), int(out.shape[2])
            grid = _Grid([ids[row * width : (row + 1) * width] for row in range(rows)])
            for position in range(width):
                self._tie(*(row[position] for row in grid))
            return grid
        return None

    @staticmethod
    def _dim(n: fx.Node, out: torch.Tensor) -> int:
        dim = channel_axis(n)
        return dim % out.dim() if dim is not None else -1

    def _getitem(self, n: fx.Node, out: Any) -> Any:
        source_node, index = n.args[0], n.args[1]
        source = self.ids.get(source_node)  # type: ignore[arg-type]
        if source is None:
            return None
        if source and isinstance(source[0], list):
            return source[index]  # a piece of a split
        if channel_indexing(n):
            return source[index[1]]
        spatial = isinstance(index, tuple) and len(index) >= 2 and index[0] == index[1] == slice(None)
        if spatial and isinstance(out, torch.Tensor) and out.shape[1] == len(source):
            return list(source)  # indexing the spatial axes only
        why = "the channel axis is indexed other than by a constant slice"
        self._block(source, why)
        return self._fresh(n.name, out, why) if isinstance(out, torch.Tensor) and out.dim() >= 2 else None

    def _module(self, n: fx.Node, out: Any) -> Any:
        name = str(n.target)
        layer = self.modules[name]
        inputs = self._inputs(n)
        source = inputs[0][1] if inputs else []
        if isinstance(layer, nn.Conv2d) and is_depthwise(layer) or isinstance(layer, NORM_TYPES):
            for position, slot in enumerate(source):
                self._tie(slot, (name, "out", position))
            return list(source)
        if is_prunable(layer):
            for position, slot in enumerate(source):
                self._tie(slot, (name, "in", position))
            return self._fresh(name, out)
        parameterised = any(True for _ in layer.parameters(recurse=False))
        if not parameterised and isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[1] == len(source):
            return list(source)
        if not parameterised and inputs and self._flatten(inputs[0], out) is not None:
            return self._flatten(inputs[0], out)
        why = f"{type(layer).__name__} '{name}' cannot be resized"
        for _, ids in inputs:
            self._block(ids, why)
        return self._fresh(name, out, why) if isinstance(out, torch.Tensor) and out.dim() >= 2 else None


@dataclass
class Draft:
    """Groups before the check: units (lists of slots) per group, and why layers were left out."""

    units: dict[str, list[list[Slot]]]
    excluded: dict[str, str]


def draft_groups(module: fx.GraphModule, input_shape: tuple[int, int, int]) -> Draft:
    modules = dict(module.named_modules())
    tracer = _ChannelTracer(module)
    with inference(module):
        tracer.run(torch.zeros(1, *input_shape))
    sets = tracer.sets
    for name, layer in modules.items():
        if not _grouped(layer):
            continue
        per_out = layer.out_channels // layer.groups
        if layer.in_channels == layer.groups:  # one input per group (a channel multiplier): groups go whole
            for block in range(layer.groups):
                for k in range(per_out):
                    sets.union((name, "in", block), (name, "out", block * per_out + k))
            continue
        for space, width in (("in", layer.in_channels), ("out", layer.out_channels)):
            per = width // layer.groups  # position j of every group goes together: all groups keep one width
            for position in range(per):
                for block in range(1, layer.groups):
                    sets.union((name, space, position), (name, space, block * per + position))
    atoms: dict[Any, list[Slot]] = {}
    for slot in list(sets.parent):
        atoms.setdefault(sets.find(slot), []).append(slot)
    reasons = {sets.find(slot): why for slot, why in tracer.blocked.items()}
    excluded: dict[str, str] = {}
    units: dict[tuple, list[list[Slot]]] = {}
    for root, slots in atoms.items():
        outputs = {n for n, space, _ in slots if space == "out" and is_prunable(modules.get(n))}
        if root in reasons:
            for layer in outputs:
                excluded.setdefault(layer, reasons[root])
            continue
        kinds = tuple(sorted(Counter((n, space) for n, space, _ in slots).items()))
        units.setdefault(kinds, []).append(sorted(slots))
    order = {name: index for index, name in enumerate(modules)}
    named: dict[str, list[list[Slot]]] = {}
    for kinds, members in sorted(units.items(), key=lambda item: min(item[1])):
        outputs = [n for (n, space), _ in kinds if space == "out" and is_prunable(modules.get(n))]
        if not outputs:
            continue
        members.sort()
        if len(members) < 2:
            for layer in outputs:
                excluded.setdefault(layer, "its channels can only go all together (one channel per group?)")
            continue
        root = min(outputs, key=lambda n: order[n])
        name, count = root, 1
        while name in named:
            count += 1
            name = f"{root}#{count}"
        named[name] = members
    return Draft(named, excluded)


def build_structure(
    module: nn.Module, input_shape: tuple[int, int, int], units: dict[str, list[list[Slot]]], excluded: dict[str, str]
) -> Structure:
    modules = dict(module.named_modules())
    groups: dict[str, ChannelGroup] = {}
    shares: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for name, members in units.items():
        tables: dict[str, dict[str, list[tuple[int, ...]]]] = {"out": {}, "in": {}}
        counts = Counter((n, space) for n, space, _ in members[0])
        for unit in members:
            for member, space in counts:
                found = tuple(c for n, where, c in unit if n == member and where == space)
                tables[space].setdefault(member, []).append(found)
        for (member, space), count in counts.items():
            shares.setdefault((member, space), []).append((name, count))
        layers = tuple(n for n in modules if (n, "out") in counts and is_prunable(modules[n]))
        consumers = tuple(n for n in modules if (n, "in") in counts)
        norms = tuple(n for n in modules if (n, "out") in counts and isinstance(modules[n], NORM_TYPES))
        index, inputs = ({k: tuple(v) for k, v in tables[space].items()} for space in ("out", "in"))
        groups[name] = ChannelGroup(name, len(members), layers, consumers, norms, index, inputs)
    order = {name: index for index, name in enumerate(modules)}
    groups = dict(sorted(groups.items(), key=lambda item: (order[item[0].split("#")[0]], item[0])))
    geometry = {site.name: site.geometry for site in sites(module, input_shape)}
    layers_info: dict[str, GroupedLayer] = {}
    norms_info: dict[str, Norm] = {}
    sized = 0
    for name, layer in modules.items():
        outs, ins = tuple(shares.get((name, "out"), ())), tuple(shares.get((name, "in"), ()))
        if name in geometry:
            layers_info[name] = GroupedLayer(name, geometry[name], *widths(layer), layer.bias is not None, outs, ins)
        elif isinstance(layer, NORM_TYPES):
            norms_info[name] = Norm(name, layer.num_features, layer.affine, outs)
        else:
            continue
        sized += sum(p.numel() for p in layer.parameters(recurse=False))
    other = sum(p.numel() for p in module.parameters()) - sized
    left_out = tuple(sorted(excluded.items(), key=lambda item: order.get(item[0], 0)))
    return Structure(
        input_shape,
        groups,
        layers_info,
        norms_info,
        other,
        tuple(classifier_layers(module)),
        left_out,  # type: ignore[arg-type]
    )


def op_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def channel_axis(node: fx.Node) -> int | None:
    """The `dim` of a cat / split / chunk node (cat takes it second, split and chunk third)."""
    position = 1 if op_name(node) in ("cat", "concat", "concatenate") else 2
    dim = node.kwargs.get("dim", node.args[position] if len(node.args) > position else 0)
    return dim if isinstance(dim, int) else None


def is_view(node: fx.Node) -> bool:
    """A view / reshape whose target shape may hold constant channel counts (from tracing with example shapes)."""
    return node.op in ("call_method", "call_function") and op_name(node) in ("view", "reshape")


def channel_indexing(node: fx.Node) -> bool:
    """A slice of the channel axis (x[:, a:b]) or a split / chunk along it."""
    if node.op == "call_function" and node.target is operator.getitem:
        index = node.args[1]
        return (
            isinstance(index, tuple)
            and len(index) >= 2
            and index[0] == slice(None)
            and isinstance(index[1], slice)
            and index[1].step in (None, 1)
        )
    splits = node.op in ("call_function", "call_method") and op_name(node) in ("split", "chunk")
    return splits and channel_axis(node) in (1, -3)
