"""Small models of the CNN families that need more than residual adds and depthwise convs to prune.

Written for these tests (not copied from any public implementation), each one the shape of its family at a
size that prunes in seconds: channel split + shuffle, grouped bottlenecks, dual paths and NAS-style cells.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` equal parts (written with tuple unpacking of x.size(), as is common)."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    return x.transpose(1, 2).contiguous().view(batch, channels, height, width)


class SplitUnit(nn.Module):
    """Half the channels pass through, the other half go through a bottleneck; then the halves are shuffled."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            conv_bn(half, half), conv_bn(half, half, 3, groups=half, relu=False), conv_bn(half, half)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = int(x.size(1) * 0.5)  # a Python int from a size: plain torch.fx tracing cannot do this
        kept, worked = x[:, :split], x[:, split:]
        return shuffle(torch.cat([kept, self.branch(worked)], 1), 2)


class SplitDown(nn.Module):
    """Both halves of the output computed from the whole input at stride 2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half = cout // 2
        self.left = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, relu=False), conv_bn(cin, half))
        self.right = nn.Sequential(
            conv_bn(cin, half), conv_bn(half, half, 3, 2, groups=half, relu=False), conv_bn(half, half)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class SplitShuffleNet(nn.Module):
    def __init__(self, classes: int = 10, widths: tuple[int, ...] = (24, 48, 96), last: int = 256) -> None:
        super().__init__()
        self.stem = conv_bn(3, widths[0], 3)
        stages: list[nn.Module] = []
        cin = widths[0]
        for width in widths[1:]:
            stages += [SplitDown(cin, width), SplitUnit(width), SplitUnit(width)]
            cin = width
        self.stages = nn.Sequential(*stages)
        self.head = conv_bn(cin, last)
        self.fc = nn.Linear(last, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class GroupedBottleneck(nn.Module):
    """1x1 reduce, 3x3 grouped conv (groups > 1, not depthwise), 1x1 expand, residual add."""

    def __init__(self, cin: int, cout: int, cardinality: int, width: int, stride: int = 1) -> None:
        super().__init__()
        inner = cardinality * width
        self.body = nn.Sequential(
            conv_bn(cin, inner), conv_bn(inner, inner, 3, stride, groups=cardinality), conv_bn(inner, cout, relu=False)
        )
        self.short = conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class GroupedNet(nn.Module):
    def __init__(self, classes: int = 10, cardinality: int = 4, width: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32, 3)
        self.blocks = nn.Sequential(
            GroupedBottleneck(32, 64, cardinality, width),
            GroupedBottleneck(64, 64, cardinality, width),
            GroupedBottleneck(64, 128, cardinality, 2 * width, 2),
            GroupedBottleneck(128, 128, cardinality, 2 * width),
        )
        self.fc = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class DualPathBlock(nn.Module):
    """The first `residual` channels of the output are added to the input's, the rest are concatenated."""

    def __init__(self, cin: int, inner: int, residual: int, dense: int, first: bool, stride: int = 1) -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            conv_bn(cin, inner), conv_bn(inner, inner, 3, stride), conv_bn(inner, residual + dense, relu=False)
        )
        self.short = conv_bn(cin, residual + dense, 1, stride, relu=False) if first else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        base = self.short(x) if self.short is not None else x
        d = self.residual
        merged = torch.cat([base[:, :d] + out[:, :d], base[:, d:], out[:, d:]], 1)
        return torch.relu(merged)


class DualPathNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32, 3)
        blocks: list[nn.Module] = []
        cin = 32
        for stage, (inner, residual, dense) in enumerate([(32, 48, 8), (48, 96, 12)]):
            for index in range(3):
                blocks.append(DualPathBlock(cin, inner, residual, dense, index == 0, 2 if stage and not index else 1))
                cin = residual + (index + 2) * dense
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class SepConv(nn.Module):
    """A separable convolution written as NAS-cell code often does: one conv with a group per input channel
    (depthwise when the widths match, a channel multiplier when the cell widens), then BatchNorm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = conv_bn(cin, cout, kernel, stride, groups=cin, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Cell(nn.Module):
    """Four branches (three separable convs of different kernels, one max-pool), summed in pairs, the pair
    sums concatenated and reduced by a 1x1 conv."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.sep3 = SepConv(cin, cout, 3, stride)
        self.sep5 = SepConv(cin, cout, 5, stride)
        self.sep7 = SepConv(cin, cout, 7, stride)
        self.pool = nn.MaxPool2d(3, stride, 1)
        self.pool_proj = conv_bn(cin, cout, relu=False)
        self.reduce = conv_bn(2 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.sep3(x) + self.sep7(x)
        second = self.sep5(x) + self.pool_proj(self.pool(x))
        return self.reduce(torch.cat([first, second], 1))


class CellNet(nn.Module):
    def __init__(self, classes: int = 10, width: int = 24) -> None:
        super().__init__()
        self.stem = conv_bn(3, width, 3)
        self.cells = nn.Sequential(
            Cell(width, width), Cell(width, 2 * width, 2), Cell(2 * width, 2 * width), Cell(2 * width, 4 * width, 2)
        )
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cells(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


FAMILIES = {
    "split_shuffle": SplitShuffleNet,
    "grouped": GroupedNet,
    "dual_path": DualPathNet,
    "nas_cells": CellNet,
}
