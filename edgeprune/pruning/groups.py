"""Channel groups of a model and what each layer's size depends on, traced channel by channel on its fx graph.

A channel group is a set of interchangeable channel units removed together. A unit is one channel of a
conv with everything tied to it: its BatchNorm, every channel summed with it through residual adds, the
depthwise convs that follow it, the input channels of its consumers. Channels are followed one at a time
through concatenations, slices and splits, so a layer's outputs can belong to several groups (the residual
part and the dense part of a dual-path block's sliced output). A grouped convolution (groups > 1, not
depthwise) takes units of one position in every group, so the group count stays and the groups keep one
width; one with a single input channel per group (a channel multiplier) loses whole groups. A channel
shuffle (view into a (groups, width) grid, transpose, view back) ties position j of every grid row, and the
views' constant sizes are rewritten after surgery like slices and splits. Torch-Pruning's
dependency graph did this analysis before; it maps channels wrongly through slices (indices past the end of
a layer on a dual-path block) and can walk a channel shuffle for minutes, so edgeprune traces it itself.

Each group is named after its root layer (the first member in module order; a second group on the same
layer gets '#2'), which stays stable across pruning, so plans, scores and learned (alpha, kappa) refer to it.
What cannot be pruned correctly (channels through any other reshape of the channel axis, modules we cannot
resize, groups failing the check below) is left out with a warning naming the layers and
the reason, never an error.

Every group is checked before it is offered: channels are silenced, removed by the real surgery, and the
outputs must stay the same (and the predicted FLOPs must match the pruned module's). Groups that fail are
found by bisection and left out; the check stops at a time limit, leaving out what it did not reach.

`Structure` records, per conv / linear layer, which groups set its output width and how many of its input
features each group feeds. That makes FLOPs and params a cheap function of the kept channel counts
(`edgeprune.pruning.cost`), so the ranking can try many thresholds without doing surgery for each.
"""

from __future__ import annotations

import copy
import math
import operator
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import fx, nn

from edgeprune.errors import EdgepruneError
from edgeprune.network import DEPTHWISE, GROUPED, Geometry, inference, is_depthwise, output_layers, sites, widths

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
NORM_TYPES = (nn.BatchNorm2d,)
ANALYSIS_SECONDS = 120.0  # for the checks; groups not checked by then are left out
_METADATA = ("size", "dim", "numel")
_RESHAPES = ("view", "reshape", "flatten", "unflatten", "transpose", "permute", "movedim", "swapaxes", "swapdims")

Shares = tuple[tuple[str, int], ...]  # (group, channels of this layer per unit of the group)


@dataclass(frozen=True)
class Layer:
    """A conv or linear layer: its geometry (`edgeprune.network`), its widths as the module counts them
    (in_features for a linear layer), and which groups set them."""

    name: str
    geometry: Geometry
    in_channels: int
    out_channels: int
    bias: bool
    out_groups: Shares  # (group, output channels per unit)
    in_groups: Shares  # (group, input features per unit)

    @property
    def depthwise(self) -> bool:
        return self.geometry.kind == DEPTHWISE

    @property
    def channelwise(self) -> bool:
        """One input channel per group (depthwise, or with a channel multiplier): groups follow the inputs."""
        return self.depthwise or (self.geometry.kind == GROUPED and self.geometry.groups == self.in_channels)

    def cost(self, width_in: int, width_out: int) -> tuple[int, int]:
        """(MACs, params) at these widths; a channel multiplier's groups shrink with its inputs."""
        geometry = self.geometry
        if self.channelwise and not self.depthwise:
            geometry = replace(geometry, groups=width_in)
        return geometry.macs(width_in, width_out), geometry.params(width_in, width_out, self.bias)


@dataclass(frozen=True)
class Norm:
    name: str
    channels: int
    affine: bool
    groups: Shares


@dataclass(frozen=True)
class ChannelGroup:
    """Channel units removed together; `layers` lose outputs, `consumers` lose inputs, `norms` lose channels.

    `index[member][unit]` are the output channels of a layer or norm that unit `unit` covers (one channel in
    most groups; one per group of a grouped conv, or several when a flatten feeds a linear layer).
    """

    name: str
    size: int
    layers: tuple[str, ...]
    consumers: tuple[str, ...]
    norms: tuple[str, ...]
    index: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict, compare=False)
    inputs: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict, compare=False)

    def channels(self, member: str, units: list[int] | range, inputs: bool = False) -> list[int]:
        """The output (or, for a consumer, input) channels of `member` that `units` cover."""
        table = self.inputs if inputs else self.index
        return [channel for unit in units for channel in table[member][unit]]


@dataclass(frozen=True)
class Structure:
    input_shape: tuple[int, int, int]
    groups: dict[str, ChannelGroup]
    layers: dict[str, Layer]
    norms: dict[str, Norm]
    other_params: int  # parameters outside conv / linear / BN (constant under pruning)
    classifier: tuple[str, ...]  # layers producing the logits: never lose outputs
    excluded: tuple[tuple[str, str], ...] = ()  # (layer, why its outputs are not pruned)

    def sizes(self) -> dict[str, int]:
        return {name: group.size for name, group in self.groups.items()}

    def signature(self) -> list[list]:
        """Group names and sizes: what a learned (alpha, kappa) file must match to be reused."""
        return [[name, group.size] for name, group in self.groups.items()]

    def describe_excluded(self) -> list[str]:
        """One line per reason, naming the layers it keeps unpruned (the classifier's outputs go unsaid)."""
        by_reason: dict[str, list[str]] = {}
        for layer, reason in self.excluded:
            if reason != "model output":
                by_reason.setdefault(reason, []).append(layer)
        return [f"not pruned ({reason}): {', '.join(layers)}" for reason, layers in by_reason.items()]


def classifier_layers(module: nn.Module) -> list[str]:
    """The conv / linear layers whose outputs reach the model output without another such layer between."""
    if not isinstance(module, fx.GraphModule):
        raise EdgepruneError("the model must be a torch.fx GraphModule (load it with edgeprune.models.io)")
    return output_layers(module)


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
        target = _op_name(n)
        inputs = self._inputs(n)
        if target in _METADATA or (target == "getattr" and n.args[1:2] in (("shape",), ("dtype",), ("device",))):
            return None  # reads sizes, not channels
        if target == "getitem":
            return self._getitem(n, out)
        if not isinstance(out, (torch.Tensor, tuple, list)) or not inputs:
            for _, ids in inputs:
                self._block(ids, f"'{_op_name(n)}' turns the channels into a non-tensor")
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
            why = f"'{_op_name(n)}' reshapes or mixes the channel axis"
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
        dim = _axis(n)
        return dim % out.dim() if dim is not None else -1

    def _getitem(self, n: fx.Node, out: Any) -> Any:
        source_node, index = n.args[0], n.args[1]
        source = self.ids.get(source_node)  # type: ignore[arg-type]
        if source is None:
            return None
        if source and isinstance(source[0], list):
            return source[index]  # a piece of a split
        if _channel_indexing(n):
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
        if isinstance(layer, PRUNABLE_TYPES):
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
class _Draft:
    """Groups before the check: units (lists of slots) per group, and why layers were left out."""

    units: dict[str, list[list[Slot]]]
    excluded: dict[str, str]


def _draft_groups(module: fx.GraphModule, input_shape: tuple[int, int, int]) -> _Draft:
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
        outputs = {n for n, space, _ in slots if space == "out" and isinstance(modules.get(n), PRUNABLE_TYPES)}
        if root in reasons:
            for layer in outputs:
                excluded.setdefault(layer, reasons[root])
            continue
        kinds = tuple(sorted(Counter((n, space) for n, space, _ in slots).items()))
        units.setdefault(kinds, []).append(sorted(slots))
    order = {name: index for index, name in enumerate(modules)}
    named: dict[str, list[list[Slot]]] = {}
    for kinds, members in sorted(units.items(), key=lambda item: min(item[1])):
        outputs = [n for (n, space), _ in kinds if space == "out" and isinstance(modules.get(n), PRUNABLE_TYPES)]
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
    return _Draft(named, excluded)


def _structure(
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
        layers = tuple(n for n in modules if (n, "out") in counts and isinstance(modules[n], PRUNABLE_TYPES))
        consumers = tuple(n for n in modules if (n, "in") in counts)
        norms = tuple(n for n in modules if (n, "out") in counts and isinstance(modules[n], NORM_TYPES))
        index, inputs = ({k: tuple(v) for k, v in tables[space].items()} for space in ("out", "in"))
        groups[name] = ChannelGroup(name, len(members), layers, consumers, norms, index, inputs)
    order = {name: index for index, name in enumerate(modules)}
    groups = dict(sorted(groups.items(), key=lambda item: (order[item[0].split("#")[0]], item[0])))
    geometry = {site.name: site.geometry for site in sites(module, input_shape)}
    layers_info: dict[str, Layer] = {}
    norms_info: dict[str, Norm] = {}
    sized = 0
    for name, layer in modules.items():
        outs, ins = tuple(shares.get((name, "out"), ())), tuple(shares.get((name, "in"), ()))
        if name in geometry:
            layers_info[name] = Layer(name, geometry[name], *widths(layer), layer.bias is not None, outs, ins)
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


def _passes_check(module: nn.Module, structure: Structure, names: list[str], seed: int) -> bool:
    """Silence a random third of the units of `names`, remove them by surgery: outputs and FLOPs must hold."""
    from edgeprune.pruning import cost  # cost sizes layers from a Structure: imported here to avoid a cycle

    rng = torch.Generator().manual_seed(seed)
    work = copy.deepcopy(module).eval()
    keep: dict[str, list[int]] = {}
    with torch.no_grad():
        for name in names:
            group = structure.groups[name]
            order = torch.randperm(group.size, generator=rng).tolist()
            removed = order[: max(1, group.size // 3)]
            keep[name] = sorted(order[len(removed) :])
            for member in (*group.layers, *group.norms):
                layer = work.get_submodule(member)
                channels = torch.tensor(group.channels(member, removed))
                for tensor in (layer.weight, getattr(layer, "bias", None)):
                    if tensor is not None:
                        tensor.index_fill_(0, channels, 0.0)
        inputs = torch.randn(2, *structure.input_shape, generator=rng)
        try:
            before = work(inputs)
            pruned = prune(work, structure, keep).eval()
            after = pruned(inputs)
        except Exception:  # noqa: BLE001 - a failed surgery or forward is what the check looks for
            return False
    counts = {name: len(kept) for name, kept in keep.items()}
    if cost.predict(structure, counts) != cost.measure(pruned, structure.input_shape):
        return False
    scale = float(before.abs().max()) or 1.0
    return after.shape == before.shape and bool(torch.allclose(after, before, rtol=1e-4, atol=1e-5 * scale))


def _checked(module: nn.Module, structure: Structure, deadline: float) -> dict[str, str]:
    """Groups that fail the check, found by bisection (one surgery when every group is sound)."""
    failed: dict[str, str] = {}

    def visit(names: list[str], seed: int) -> None:
        if time.monotonic() > deadline:
            failed.update({name: "analysis time limit reached" for name in names})
        elif not _passes_check(module, structure, names, seed):
            if len(names) == 1:
                failed[names[0]] = "removing its channels changes the outputs (an op the surgery cannot follow)"
            else:
                half = len(names) // 2
                visit(names[:half], seed + 1)
                visit(names[half:], seed + 2)

    visit(list(structure.groups), 0)
    return failed


def analyze(module: nn.Module, input_shape: tuple[int, int, int], time_limit: float = ANALYSIS_SECONDS) -> Structure:
    """Find the channel groups of `module` and the size model of every layer; raises if nothing is prunable.

    What cannot be pruned is left out with a warning (and listed in `Structure.excluded`), never an error.
    """
    if not isinstance(module, fx.GraphModule):
        raise EdgepruneError("the model must be a torch.fx GraphModule (load it with edgeprune.models.io)")
    deadline = time.monotonic() + time_limit
    draft = _draft_groups(module, input_shape)
    structure = _structure(module, input_shape, draft.units, draft.excluded)
    failed = _checked(module, structure, deadline) if structure.groups else {}
    if failed:
        for name in failed:
            for layer in structure.groups[name].layers:
                draft.excluded.setdefault(layer, failed[name])
        kept = {name: units for name, units in draft.units.items() if name not in failed}
        structure = _structure(module, input_shape, kept, draft.excluded)
    if not structure.groups:
        raise EdgepruneError(
            "the model has no prunable channels (no conv / linear layer whose outputs can be removed)",
            hint="pruning needs at least one hidden Conv2d or Linear layer before the classifier"
            + "".join(f"; {line}" for line in structure.describe_excluded()),
        )
    if structure.describe_excluded():
        warnings.warn("; ".join(structure.describe_excluded()), stacklevel=2)
    return structure


def root_layer(group: ChannelGroup) -> str:
    """The layer a group is named after (names of second groups on one layer carry a '#n' suffix)."""
    return group.name.split("#")[0]


def unit_scores(
    values: torch.Tensor, group: ChannelGroup, member: str | None = None, inputs: bool = False
) -> torch.Tensor:
    """Per-channel scores of a member (default: the root layer's outputs) averaged over each unit's channels."""
    channels = group.channels(member or root_layer(group), range(group.size), inputs)
    return values[channels].reshape(group.size, -1).mean(dim=1)


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
        if isinstance(layer, PRUNABLE_TYPES):
            mask = torch.zeros(out.shape[1])
            mask[self.alive.get(str(target), list(range(out.shape[1])))] = 1.0
            out = mask.view(1, -1, *([1] * (out.dim() - 2))).expand_as(out).clone()
        return out

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if _is_view(n):
            self.views[n.name] = (self.env[n.all_input_nodes[0]], out)
        elif _channel_indexing(n):
            source = self.env[n.all_input_nodes[0]]
            mask = source.abs().transpose(0, 1).reshape(source.shape[1], -1).sum(dim=1) > 0
            self.masks[n.name] = (mask.tolist(), out)
        return out


def _op_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _axis(node: fx.Node) -> int | None:
    """The `dim` of a cat / split / chunk node (cat takes it second, split and chunk third)."""
    position = 1 if _op_name(node) in ("cat", "concat", "concatenate") else 2
    dim = node.kwargs.get("dim", node.args[position] if len(node.args) > position else 0)
    return dim if isinstance(dim, int) else None


def _is_view(node: fx.Node) -> bool:
    """A view / reshape whose target shape may hold constant channel counts (from tracing with example shapes)."""
    return node.op in ("call_method", "call_function") and _op_name(node) in ("view", "reshape")


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


def _channel_indexing(node: fx.Node) -> bool:
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
    splits = node.op in ("call_function", "call_method") and _op_name(node) in ("split", "chunk")
    return splits and _axis(node) in (1, -3)


def _rewrite_channel_constants(
    original: fx.GraphModule, pruned: fx.GraphModule, alive: dict[str, list[int]], input_shape: tuple[int, int, int]
) -> None:
    if not any(_channel_indexing(n) or _is_view(n) for n in original.graph.nodes):
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


def _removed(shares: Shares, counts: dict[str, int], structure: Structure) -> int:
    """Channels a layer or norm loses when each group keeps `counts[group]` of its units."""
    return sum(
        per_unit * (structure.groups[group].size - counts.get(group, structure.groups[group].size))
        for group, per_unit in shares
    )


def _widths(layer: Layer, counts: dict[str, int], structure: Structure) -> tuple[int, int]:
    """(input, output) width of a layer when each group keeps `counts[group]` units."""
    out = layer.out_channels - _removed(layer.out_groups, counts, structure)
    if layer.depthwise:
        return out, out
    return layer.in_channels - _removed(layer.in_groups, counts, structure), out


def norm_width(norm: Norm, counts: dict[str, int], structure: Structure) -> int:
    return norm.channels - _removed(norm.groups, counts, structure)


def layer_widths(structure: Structure, counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {name: _widths(layer, counts, structure) for name, layer in structure.layers.items()}


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
