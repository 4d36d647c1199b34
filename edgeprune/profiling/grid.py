"""The table's grid: which (in, out) channel counts of each layer family a model needs measured.

Steps follow the device's vector width (tuned kernels vectorise over channels), so grid points are the counts
that run well; the unpruned width is always a point, so the unpruned network is predicted from measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.network import DEPTHWISE, LINEAR
from edgeprune.profiling.defaults import MAX_GRID_POINTS
from edgeprune.profiling.signature import Family, Layer
from edgeprune.profiling.single_layer import groups
from edgeprune.tvmx.layout import PLAIN_KERNEL, kernel_kind

AnchorKey = tuple[str, str]  # a family's key and the kind of kernel its shapes compile to (tvmx.layout.kernel_kind)


@dataclass(frozen=True)
class PlannedEntry:
    family: Family
    in_channels: int
    out_channels: int

    @property
    def key(self) -> str:
        return self.family.entry_key(self.in_channels, self.out_channels)

    @property
    def macs(self) -> int:
        return self.family.macs(self.family.in_width(self.in_channels), self.out_channels)

    def anchor_key(self, layout: str) -> AnchorKey:
        """Which tuned shape this entry's schedule comes from: its family's, in the kind of kernel (blocked
        or NCHW) that `layout` gives it at these widths (a blocked kernel's schedule does not fit an NCHW one)."""
        if self.family.kind == LINEAR:
            return self.family.key, PLAIN_KERNEL
        return self.family.key, kernel_kind(
            layout, self.in_channels, self.out_channels, groups(self.family, self.in_channels)
        )


def default_step(channels: int, lanes: int) -> int:
    """The device's vector width in fp32 lanes; a multiple of it for wide layers (at most 4 points per
    dimension); half of it for a layer narrower than two vectors, so that layer can be pruned at all."""
    step = lanes * max(1, -(-channels // (lanes * MAX_GRID_POINTS)))
    if channels < 2 * step and step == lanes and lanes > 1:
        step = lanes // 2
    return step


def grid_values(channels: int, step: int) -> list[int]:
    """Multiples of `step` up to `channels`, plus `channels` itself (the unpruned width is always exact)."""
    return sorted({*range(step, channels + 1, step), channels})


def plan(layers: list[Layer], lanes: int, step: int | None = None) -> dict[str, PlannedEntry]:
    """Every grid entry the model's layers need, deduplicated by signature (shared families count once)."""
    planned: dict[str, PlannedEntry] = {}
    for layer in layers:
        ins = (
            [layer.in_channels]
            if layer.slot.in_fixed
            else grid_values(layer.in_channels, step or default_step(layer.in_channels, lanes))
        )
        outs = (
            [layer.out_channels]
            if layer.slot.out_fixed
            else grid_values(layer.out_channels, step or default_step(layer.out_channels, lanes))
        )
        ratio = layer.family.outputs_per_input
        if layer.family.kind == DEPTHWISE:
            pairs = [(c, c) for c in outs]
        elif ratio:  # a channel multiplier: `ratio` outputs per input, whatever the input width
            pairs = [(c, ratio * c) for c in (ins if not layer.slot.out_fixed else [layer.in_channels])]
        else:
            pairs = [(i, o) for i in ins for o in outs]
        for cin, cout in pairs:
            entry = PlannedEntry(layer.family, cin, cout)
            planned.setdefault(entry.key, entry)
    return planned


def anchors(layers: list[Layer], entries: list[PlannedEntry], layout: str) -> dict[AnchorKey, PlannedEntry]:
    """The anchor of each family and kernel kind that `entries` need: the shape whose tuned schedule the
    others reuse. Its widest layer in the unpruned model where that layer is of the kind (tuning the network
    tuned it), else the kind's widest entry (tuned on its own before the entries are measured). With a
    blocked layout one family holds both kinds wherever the block divides some of its widths but not others
    (resnet20's 16 channels at a 16 block, pruned to 8)."""
    anchored: dict[AnchorKey, PlannedEntry] = {}
    network = [PlannedEntry(layer.family, layer.in_channels, layer.out_channels) for layer in layers]
    needed = {entry.anchor_key(layout) for entry in entries}
    for candidates in (network, entries):
        for entry in sorted(candidates, key=lambda e: (e.macs, e.key), reverse=True):
            key = entry.anchor_key(layout)
            if key in needed:
                anchored.setdefault(key, entry)
        needed -= set(anchored)
    return anchored
