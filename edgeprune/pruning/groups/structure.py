"""The channel groups of a model as data: which units each group removes together, and which groups set each
conv / linear layer's and BatchNorm's widths.

`Structure` records, per conv / linear layer, which groups set its output width and how many of its input
features each group feeds. That makes FLOPs and params a cheap function of the kept channel counts
(`edgeprune.pruning.cost`, `layer_widths`), so the ranking can try many thresholds without doing surgery for
each. Each group is named after its root layer (the first member in module order; a second group on the same
layer gets '#2'), which stays stable across pruning, so plans, scores and learned (alpha, kappa) refer to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import fx, nn

from edgeprune.errors import EdgepruneError
from edgeprune.network import DEPTHWISE, GROUPED, Geometry, output_layers

NORM_TYPES = (nn.BatchNorm2d,)
Shares = tuple[tuple[str, int], ...]  # (group, channels of this layer per unit of the group)


@dataclass(frozen=True)
class GroupedLayer:
    """A conv or linear layer as pruning sees it: its geometry (`edgeprune.network`), its widths as the module
    counts them (in_features for a linear layer), and the channel groups that set them. Profiling's
    `signature.Layer` is the same layer at one set of widths, keyed for the latency table; `layer_widths` gives
    the widths it is read at."""

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
    layers: dict[str, GroupedLayer]
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


def root_layer(group: ChannelGroup) -> str:
    """The layer a group is named after (names of second groups on one layer carry a '#n' suffix)."""
    return group.name.split("#")[0]


def unit_scores(
    values: torch.Tensor, group: ChannelGroup, member: str | None = None, inputs: bool = False
) -> torch.Tensor:
    """Per-channel scores of a member (default: the root layer's outputs) averaged over each unit's channels."""
    channels = group.channels(member or root_layer(group), range(group.size), inputs)
    return values[channels].reshape(group.size, -1).mean(dim=1)


def _removed(shares: Shares, counts: dict[str, int], structure: Structure) -> int:
    """Channels a layer or norm loses when each group keeps `counts[group]` of its units."""
    return sum(
        per_unit * (structure.groups[group].size - counts.get(group, structure.groups[group].size))
        for group, per_unit in shares
    )


def _widths(layer: GroupedLayer, counts: dict[str, int], structure: Structure) -> tuple[int, int]:
    """(input, output) width of a layer when each group keeps `counts[group]` units."""
    out = layer.out_channels - _removed(layer.out_groups, counts, structure)
    if layer.depthwise:
        return out, out
    return layer.in_channels - _removed(layer.in_groups, counts, structure), out


def norm_width(norm: Norm, counts: dict[str, int], structure: Structure) -> int:
    return norm.channels - _removed(norm.groups, counts, structure)


def layer_widths(structure: Structure, counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {name: _widths(layer, counts, structure) for name, layer in structure.layers.items()}
