"""A user-style model for the runtime benchmark (issue 36): depthwise-separable residual blocks on 1x28x28
(a small MNIST-sized classifier of the kind a user brings, not a zoo model). Loaded as a MODEL file:

    python tools/bench_runtime.py --model tools/dwsep_model.py:dwsep --input-shape 1x28x28 \
        --pruned tools/dwsep_model.py:dwsep_half

`dwsep_half` is a stand-in for a pruned variant: every prunable width halved (on an 8-channel grid), not the
pruner's output. Its widths (16, 32, 64) all divide by 16 as well; `dwsep_grid8` is one whose widths (8, 24, 72)
only an 8-channel grid holds, about as many MACs: what a 16-channel block leaves NCHW and an 8-channel one
blocks (issue 36, block 8 against 16).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, each with BatchNorm; a residual add where the shape allows."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = _conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.expand = _conv_bn_relu(cin, hidden, 1)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.expand(self.depthwise(x)))
        return torch.relu(y + x) if self.residual else torch.relu(y)


class DwSep(nn.Module):
    def __init__(self, stem: int = 32, mid: int = 64, wide: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(1, stem, 3)
        self.blocks = nn.Sequential(
            SeparableBlock(stem, mid, mid, 2),  # 28 -> 14
            SeparableBlock(mid, mid, mid, 1),
            SeparableBlock(mid, wide, wide, 2),  # 14 -> 7
            SeparableBlock(wide, wide, wide, 1),
        )
        self.head = nn.Linear(wide, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))


def dwsep() -> nn.Module:
    return DwSep()


def dwsep_half() -> nn.Module:
    return DwSep(stem=16, mid=32, wide=64)


def dwsep_grid8() -> nn.Module:
    return DwSep(stem=8, mid=24, wide=72)
