"""Readers for the offline data sets: each returns raw images (N, C, H, W) and labels, nothing downloaded.

Images come back as uint8 (0-255) or float32 (0-1) tensors at their native size; resizing, channel
adaptation and normalisation happen per batch in `edgeprune.data.dataset`, so a 60,000-image set stays small
in memory whatever input size the model wants.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import EdgepruneError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass
class RawImages:
    """Images and labels as read from disk; `test` is None when the source has no official test split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    classes: list[str]


def read_digits() -> RawImages:
    """scikit-learn's bundled 8x8 digits (1,797 images): always available, no official test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return RawImages(images, labels, None, None, [str(c) for c in range(10)])


def _read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not): the MNIST container format, header magic then big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise EdgepruneError(f"cannot read IDX file '{path}': {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise EdgepruneError(f"'{path}' is not an unsigned-byte IDX file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise EdgepruneError(f"'{path}' is truncated: its header names {ndim} dimensions but the file ends first")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise EdgepruneError(f"'{path}' is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _find_idx(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    raise EdgepruneError(
        f"Fashion-MNIST file '{name}' not found in '{directory}'",
        hint="install it with `apt-get install dataset-fashion-mnist` (files land in "
        f"{FASHION_MNIST_DIR}), or pass --data-dir to a folder holding the four IDX files",
    )


def read_fashion_mnist(directory: Path | None = None) -> RawImages:
    """Fashion-MNIST from Debian's dataset-fashion-mnist (or any folder with the four IDX files)."""
    directory = directory or FASHION_MNIST_DIR
    arrays = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = _read_idx(_find_idx(directory, images_name))
        labels = _read_idx(_find_idx(directory, labels_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise EdgepruneError(f"Fashion-MNIST {split} files in '{directory}' do not match (images vs labels)")
        arrays[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    return RawImages(*arrays["train"], *arrays["test"], classes)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise EdgepruneError(f"cannot read CIFAR-10 batch '{path}': {exc}") from exc


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _unpickle(path)
    data, labels = (batch.get(b"data"), batch.get(b"labels")) if isinstance(batch, dict) else (None, None)
    if data is None or labels is None:
        raise EdgepruneError(f"'{path}' is not a CIFAR-10 python batch (no data/labels)")
    pixels = np.asarray(data, dtype=np.uint8)
    if pixels.size % (3 * 32 * 32) or pixels.size // (3 * 32 * 32) != len(labels):
        raise EdgepruneError(f"'{path}' is damaged: {pixels.size} pixel values for {len(labels)} labels")
    images = torch.from_numpy(pixels.reshape(-1, 3, 32, 32).copy())
    return images, torch.tensor(labels, dtype=torch.int64)


def read_cifar10(directory: Path) -> RawImages:
    """CIFAR-10 in the python-pickle layout (data_batch_1..5, test_batch), the folder or its parent."""
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    train_paths = sorted(directory.glob("data_batch_*"))
    test_path = directory / "test_batch"
    if not train_paths or not test_path.is_file():
        raise EdgepruneError(
            f"no CIFAR-10 python batches (data_batch_1..5, test_batch) in '{directory}'",
            hint="download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html on a machine "
            "with internet, unpack it, and pass --data cifar10:/path/to/cifar-10-batches-py",
        )
    parts = [_cifar_batch(p) for p in train_paths]
    test_images, test_labels = _cifar_batch(test_path)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = directory / "batches.meta"
    if meta.is_file():
        names = _unpickle(meta).get(b"label_names")
        if names:
            classes = [n.decode() for n in names]
    return RawImages(
        torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), test_images, test_labels, classes
    )


def _class_folders(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folder(directory: Path, classes: list[str], size: tuple[int, int], channels: int) -> tuple[torch.Tensor, ...]:
    from PIL import Image, UnidentifiedImageError

    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = directory / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as image:
                    picture = image.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
            except (OSError, UnidentifiedImageError) as exc:
                raise EdgepruneError(f"cannot read image '{path}': {exc}") from exc
            array = np.asarray(picture, dtype=np.uint8)
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise EdgepruneError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under '{directory}'")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def read_imagefolder(directory: Path, size: tuple[int, int], channels: int) -> RawImages:
    """One sub-folder per class (sorted names = class indices); `train/` + `test/` (or `val/`) if present.

    Images of any size are resized on load to the model's input size, as they may all differ.
    """
    if not directory.is_dir():
        raise EdgepruneError(
            f"image folder '{directory}' not found",
            hint="pass --data imagefolder:DIR with one sub-folder of images per class",
        )
    test_dir = next((directory / n for n in ("test", "val") if (directory / n).is_dir()), None)
    train_dir = directory / "train" if test_dir is not None and (directory / "train").is_dir() else directory
    if train_dir == directory:
        test_dir = None
    classes = [p.name for p in _class_folders(train_dir)]
    if len(classes) < 2:
        raise EdgepruneError(
            f"'{train_dir}' needs at least two class sub-folders, found {len(classes)}",
            hint="lay out images as DIR/<class name>/<image>.png",
        )
    train_images, train_labels = _read_folder(train_dir, classes, size, channels)
    if test_dir is None:
        return RawImages(train_images, train_labels, None, None, classes)
    test_images, test_labels = _read_folder(test_dir, classes, size, channels)
    return RawImages(train_images, train_labels, test_images, test_labels, classes)
