"""A data set spec -> train / val / test splits, adapted batch by batch to a model's input shape.

Splits are a seeded permutation, so the same seed gives the same split on any machine. The validation split
is what pruning searches score candidates on; the test split is only used for reported accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.data import sources
from edgeprune.data.augment import MIRRORABLE, augment
from edgeprune.errors import EdgepruneError

NATIVE_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "imagefolder": (3, 32, 32),
}
# The input a zoo / .py model is built for when no --input-shape is given: the images' own size, except for digits,
# upscaled to the demo's 1x32x32. At 8x8 a CIFAR-style network's last stage is 2x2 and its layers so cheap that
# fixed costs dominate: resnet20's latency could not go below 0.71x of its own with every layer at its floor.
MODEL_SHAPES: dict[str, tuple[int, int, int]] = {**NATIVE_SHAPES, "digits": (1, 32, 32)}
SPEC_HELP = "digits, fashion-mnist, cifar10:DIR or imagefolder:DIR"
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W), uint8 0-255 or float 0-1, native size
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.numel())


@dataclass
class Dataset:
    """Splits plus the transform to the model's input: resize, channel adaptation, normalisation."""

    spec: str
    classes: list[str]
    input_shape: tuple[int, int, int]
    train: Split
    val: Split
    test: Split
    mean: float
    std: float
    seed: int = 0
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def normalization(self) -> dict[str, float]:
        """What deployment must apply to raw [0, 1] pixels before the model: (x - mean) / std."""
        return {"mean": self.mean, "std": self.std}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Raw images -> float model input of `input_shape`, normalised like the training data."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = adapt_channels(x, self.input_shape[0])
        height, width = self.input_shape[1:]
        if tuple(x.shape[-2:]) != (height, width):
            shrink = height < x.shape[-2] or width < x.shape[-1]
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
        return (x - self.mean) / self.std

    @property
    def mirrorable(self) -> bool:
        """Whether a left-right mirrored image still shows its class (augment.MIRRORABLE)."""
        return parse_spec(self.spec)[0] in MIRRORABLE

    def batches(
        self, split: Split, batch_size: int, generator: torch.Generator | None = None, augmented: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Prepared (inputs, labels) batches; shuffled with `generator` when one is given, and with `augmented`
        (which needs it) randomly cropped and, if `mirrorable`, flipped (data.augment)."""
        if augmented and generator is None:
            raise EdgepruneError("augmented batches need a generator to draw their crops from")
        order = torch.randperm(len(split), generator=generator) if generator is not None else None
        for start in range(0, len(split), batch_size):
            index = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            images = split.images[index]
            if augmented:
                images = augment(images, generator, self.mirrorable)  # type: ignore[arg-type]
            yield self.prepare(images), split.labels[index]

    def sample(self, split: Split, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` random examples of a split (with replacement only if the split is smaller)."""
        if len(split) >= count:
            index = torch.randperm(len(split), generator=generator)[:count]
        else:
            index = torch.randint(len(split), (count,), generator=generator)
        return self.prepare(split.images[index]), split.labels[index]


def adapt_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> colour repeats the plane; colour -> grey uses ITU-R 601 luma weights."""
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1:
        return x.expand(-1, channels, -1, -1)
    if have == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise EdgepruneError(f"cannot adapt {have}-channel images to a {channels}-channel model input")


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """'digits' -> ('digits', None); 'cifar10:/data/c10' -> ('cifar10', Path('/data/c10'))."""
    kind, sep, location = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in NATIVE_SHAPES:
        raise EdgepruneError(f"unknown data set '{spec}'", hint=f"use {SPEC_HELP}")
    if kind in ("cifar10", "imagefolder") and not location:
        raise EdgepruneError(f"'{kind}' needs a folder: --data {kind}:DIR", hint=f"use {SPEC_HELP}")
    if kind == "digits" and sep:
        raise EdgepruneError("'digits' is built in (scikit-learn) and takes no folder")
    return kind, Path(location).expanduser() if location else None


def default_input_shape(spec: str) -> tuple[int, int, int]:
    """The model input for a data set when a zoo model is built without --input-shape (see MODEL_SHAPES)."""
    return MODEL_SHAPES[parse_spec(spec)[0]]


def _read(kind: str, location: Path | None, data_dir: Path | None, shape: tuple[int, int, int]) -> sources.RawImages:
    if kind == "digits":
        return sources.read_digits()
    if kind == "fashion-mnist":
        return sources.read_fashion_mnist(location or data_dir)
    if kind == "cifar10":
        return sources.read_cifar10(location)  # type: ignore[arg-type]
    return sources.read_imagefolder(location, (shape[1], shape[2]), shape[0])  # type: ignore[arg-type]


def _pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std over all training pixels in [0, 1], in chunks (a 60k-image set stays cheap)."""
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    total = total_sq = 0.0
    count = 0
    for chunk in images.split(4096):
        values = chunk.double() / scale
        total += float(values.sum())
        total_sq += float((values * values).sum())
        count += values.numel()
    mean = total / count
    std = max((total_sq / count - mean * mean) ** 0.5, 1e-6)
    return mean, std


def load_dataset(
    spec: str,
    input_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    val_fraction: float = 0.15,
) -> Dataset:
    """Read a data set and split it deterministically by `seed`.

    Sources with an official test split keep it as the test split and hold out `val_fraction` of the
    training images for validation; the others split 70/15/15. `limit` caps the training split (for quick runs).
    """
    kind, location = parse_spec(spec)
    shape = input_shape or NATIVE_SHAPES[kind]
    if limit is not None and limit < 1:
        raise EdgepruneError(f"--limit must be a positive number of images, got {limit}")
    if not 0.0 < val_fraction < 0.5:
        raise EdgepruneError(f"the validation fraction must be in (0, 0.5), got {val_fraction}")
    raw = _read(kind, location, Path(data_dir).expanduser() if data_dir else None, shape)
    adapt_channels(raw.train_images[:1].float(), shape[0])  # fail now, not in the middle of training

    rng = np.random.default_rng(seed)
    order = torch.from_numpy(rng.permutation(len(raw.train_labels)))
    if raw.test_images is not None and raw.test_labels is not None:
        n_val = max(1, int(round(len(order) * val_fraction)))
        val_index, train_index = order[:n_val], order[n_val:]
        test = Split(raw.test_images, raw.test_labels)
    else:
        n_hold = max(1, int(round(len(order) * val_fraction)))
        test_index, val_index, train_index = order[:n_hold], order[n_hold : 2 * n_hold], order[2 * n_hold :]
        test = Split(raw.train_images[test_index], raw.train_labels[test_index])
    if limit is not None:
        train_index = train_index[:limit]
    if len(train_index) == 0 or len(val_index) == 0 or len(test) == 0:
        raise EdgepruneError(f"data set '{spec}' is too small to split into train / val / test")
    train = Split(raw.train_images[train_index], raw.train_labels[train_index])
    val = Split(raw.train_images[val_index], raw.train_labels[val_index])
    mean, std = _pixel_stats(train.images)
    sizes = {"train": len(train), "val": len(val), "test": len(test)}
    return Dataset(spec, raw.classes, shape, train, val, test, mean, std, seed, sizes)
