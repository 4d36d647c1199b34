"""The model zoo, written here (torchvision does not import beside this torch): small CNNs sized for boards.

Every builder takes the input channels, the input height and width and the class count, plus a width
multiplier, and ends in global pooling or a size-derived flatten, so any input size from 8x8 up works.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _c(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, input_hw: tuple[int, int], num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = _c(6, width), _c(16, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        height, width_px = (side // 4 for side in input_hw)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * height * width_px, _c(120, width)),
            nn.ReLU(inplace=True),
            nn.Linear(_c(120, width), _c(84, width)),
            nn.ReLU(inplace=True),
            nn.Linear(_c(84, width), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """CIFAR ResNet block; the downsampling shortcut is a 1x1 conv + BN (prunable, unlike zero-padding)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        blocks = (depth - 2) // 6
        widths = [_c(16, width), _c(32, width), _c(64, width)]
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0], 3), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = widths[0]
        for stage, cout in enumerate(widths):
            for index in range(blocks):
                layers.append(BasicBlock(cin, cout, 2 if stage > 0 and index == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, cout, 1)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """CIFAR-style MobileNetV2: stride-1 stem and second stage, so small inputs keep spatial size."""

    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 1),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        cin = _c(32, width)
        layers: list[nn.Module] = [*_conv_bn(in_channels, cin, 3), nn.ReLU6(inplace=True)]
        for expand, channels, repeats, stride in self.SETTINGS:
            cout = _c(channels, width)
            for index in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if index == 0 else 1, expand))
                cin = cout
        last = _c(1280, width) if width > 1.0 else 1280
        layers += [*_conv_bn(cin, last, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class VGG11(nn.Module):
    """VGG-11 with BatchNorm; a max-pool is skipped once the feature map is 1x1, so small inputs fit."""

    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, in_channels: int, input_hw: tuple[int, int], num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, side = in_channels, min(input_hw)
        for item in self.CFG:
            if item == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            cout = _c(int(item), width)
            layers += [*_conv_bn(cin, cout, 3), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


Builder = Callable[[int, tuple[int, int], int, float], nn.Module]

ZOO: dict[str, Builder] = {
    "lenet5": lambda c, s, n, w: LeNet5(c, s, n, w),
    "resnet20": lambda c, s, n, w: CifarResNet(20, c, n, w),
    "resnet56": lambda c, s, n, w: CifarResNet(56, c, n, w),
    "mobilenetv2": lambda c, s, n, w: MobileNetV2(c, n, w),
    "vgg11": lambda c, s, n, w: VGG11(c, s, n, w),
}


def build(
    name: str, in_channels: int = 3, input_hw: tuple[int, int] = (32, 32), num_classes: int = 10, width: float = 1.0
) -> nn.Module:
    """Build a zoo model by name with freshly initialised weights."""
    if name not in ZOO:
        raise KeyError(name)
    return ZOO[name](in_channels, input_hw, num_classes, width)
