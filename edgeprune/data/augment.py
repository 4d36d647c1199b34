"""Light training-time augmentation: a random crop of the zero-padded image and, where the data set's classes
look the same mirrored, a horizontal flip. Both act on the raw images of one batch at their native size, before
`Dataset.prepare`, and draw from the caller's generator, so a seeded training run stays reproducible."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Data sets whose classes survive a left-right mirror: clothes and CIFAR's objects do; digits do not (a mirrored
# 2 or 7 is no digit), and an image folder's classes are the user's, so they are not mirrored unasked.
MIRRORABLE = frozenset({"fashion-mnist", "cifar10"})


def padding(height: int, width: int) -> int:
    """How far a crop may shift: an eighth of the shorter side, at least a pixel (4 px at CIFAR's 32 x 32, the
    usual recipe; 3 at Fashion-MNIST's 28; 1 at digits' 8)."""
    return max(1, min(height, width) // 8)


def augment(images: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """`images` (N, C, H, W) shifted by a random crop of their zero-padded copy, each mirrored with probability
    1/2 when `flip`; same dtype and shape."""
    count, _, height, width = images.shape
    pad = padding(height, width)
    padded = F.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (count,), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (count,), generator=generator)
    rows = (top[:, None] + torch.arange(height))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width))[:, None, None, :]
    batch = torch.arange(count)[:, None, None, None]
    channel = torch.arange(images.shape[1])[None, :, None, None]
    cropped = padded[batch, channel, rows, cols]
    if not flip:
        return cropped
    mirrored = torch.rand(count, generator=generator) < 0.5
    return torch.where(mirrored[:, None, None, None], cropped.flip(-1), cropped)
