"""One table entry as a network of its own: a layer plus exactly the epilogue TVM fuses into it.

It goes through the deployment import path (`tvmx.export.to_relax`), so its one tunable TIR function is
structurally the function the whole network contains for that layer: the same MetaSchedule workload, the
same record in the device's tuning database, the same kernel that ships. A residual operand is a constant
here (in the network it is another kernel's output); either way it is one more input of the fused function.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeprune.network import GROUPED, LINEAR
from edgeprune.profiling.signature import Family


class SingleLayer(nn.Module):
    def __init__(self, family: Family, in_channels: int, out_channels: int, seed: int = 0) -> None:
        super().__init__()
        bias = "bias" in family.epilogue
        if family.kind == LINEAR:
            self.layer: nn.Module = nn.Linear(in_channels * family.height * family.width, out_channels, bias=bias)
            residual_shape: tuple[int, ...] = (1, out_channels)
        else:
            self.layer = nn.Conv2d(
                in_channels,
                out_channels,
                family.kernel,
                family.stride,
                family.padding,
                family.dilation,
                groups=groups(family, in_channels),
                bias=bias,
            )
            residual_shape = (1, out_channels, *family.output_size)
        self.ops = tuple(op for op in family.epilogue if op != "bias")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("residual", torch.randn(residual_shape, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        for op in self.ops:
            if op == "add":
                y = y + self.residual
            elif op == "radd":
                y = self.residual + y
            elif op == "relu":
                y = torch.relu(y)
            elif op == "relu6":
                y = nn.functional.relu6(y)
        return y


def groups(family: Family, in_channels: int) -> int:
    """The convolution's groups at `in_channels`: depthwise and a channel multiplier have one input channel
    per group, however many there are; a grouped layer keeps its groups; a plain one (and a linear) has one."""
    if family.outputs_per_input:
        return in_channels
    return family.groups if family.kind == GROUPED else 1


def input_shape(family: Family, in_channels: int) -> tuple[int, ...]:
    """The batch-1 input of the single-layer network."""
    if family.kind == LINEAR:
        return (1, in_channels * family.height * family.width)
    return (1, in_channels, family.height, family.width)


def to_relax(family: Family, in_channels: int, out_channels: int, layout: str = "NCHW") -> tuple[SingleLayer, Any]:
    """The entry's network and its import through the deployment path (a `tvmx.export.RelaxModel`), in the
    device's `tuning.layout` (so the entry measures the kernel the network ships)."""
    from edgeprune.tvmx.export import to_relax as export_to_relax

    module = SingleLayer(family, in_channels, out_channels).eval()
    return module, export_to_relax(module, input_shape(family, in_channels), layout)
