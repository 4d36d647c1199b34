"""Offline data sets: real files in their real formats, seeded splits, adaptation to the model input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from edgeprune.data import default_input_shape, load_dataset
from edgeprune.data.sources import FASHION_MNIST_DIR
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.inputs import model_and_data


def test_digits_split_is_seeded_and_complete() -> None:
    a = load_dataset("digits", seed=3)
    b = load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    assert sum(a.sizes.values()) == 1797
    assert a.sizes == {"train": 1257, "val": 270, "test": 270}
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.labels, c.train.labels)
    # the three splits partition the images: every digit image is in exactly one split
    rows = torch.cat([a.train.images, a.val.images, a.test.images]).flatten(1)
    reference = torch.from_numpy(load_digits().images / 16.0).float()
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, reference.flatten(1).tolist()))


def test_default_model_input_is_the_images_size_except_digits_at_the_demos() -> None:
    """At 8x8 resnet20 could not be pruned below 0.71x of its latency: digits models get the demo's 1x32x32."""
    assert default_input_shape("fashion-mnist") == (1, 28, 28)
    assert default_input_shape("cifar10:/data") == (3, 32, 32)
    assert default_input_shape("digits") == (1, 32, 32)
    assert load_dataset("digits", seed=0).input_shape == (1, 8, 8)  # the data set itself stays at its own size
    bundle, data = model_and_data("resnet20", None, "digits", None, 1.0, 0, None, 64)  # what `train` and `run` do
    assert bundle.input_shape == data.input_shape == (1, 32, 32)


def test_batches_are_adapted_to_the_model_input() -> None:
    data = load_dataset("digits", (3, 16, 16), seed=0)
    inputs, labels = next(data.batches(data.train, 32, torch.Generator().manual_seed(0)))
    assert inputs.shape == (32, 3, 16, 16) and labels.shape == (32,)
    assert torch.equal(inputs[:, 0], inputs[:, 2])  # grey repeated to three channels
    everything = torch.cat([x for x, _ in data.batches(data.train, 512)])
    assert abs(float(everything.mean())) < 0.1 and 0.8 < float(everything.std()) < 1.2
    assert data.normalization == {"mean": data.mean, "std": data.std}


def test_fashion_mnist_reads_the_debian_idx_files() -> None:
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    data = load_dataset("fashion-mnist", seed=0, limit=500)
    assert data.sizes == {"train": 500, "val": 9000, "test": 10000}
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 28, 28)
    assert set(data.test.labels.tolist()) == set(range(10))
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(EdgepruneError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "apt-get install dataset-fashion-mnist" in (info.value.hint or "")


def _write_cifar(folder: Path, per_batch: int = 20) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))


def test_cifar10_python_batches(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset(f"cifar10:{tmp_path}", (1, 16, 16), seed=0)
    assert data.sizes == {"train": 85, "val": 15, "test": 20}
    assert data.classes[0] == "c0"
    inputs, _ = next(data.batches(data.test, 8))
    assert inputs.shape == (8, 1, 16, 16)
    with pytest.raises(EdgepruneError, match="no CIFAR-10 python batches") as info:
        load_dataset(f"cifar10:{tmp_path / 'nothing'}")
    assert "cifar-10-python.tar.gz" in (info.value.hint or "")


def test_damaged_cifar10_batches_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    for damaged, message in (
        ({b"data": np.zeros(3, dtype=np.uint8), b"labels": [1]}, "damaged"),
        ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1]}, "damaged"),
        ([1, 2, 3], "not a CIFAR-10 python batch"),
    ):
        (folder / "test_batch").write_bytes(pickle.dumps(damaged))
        with pytest.raises(EdgepruneError, match=message) as info:
            load_dataset(f"cifar10:{tmp_path}")
        assert "test_batch" in info.value.message


def test_damaged_idx_files_are_named(tmp_path: Path) -> None:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name in names:
        (tmp_path / name).write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # names 3 dimensions, holds half of one
    with pytest.raises(EdgepruneError, match="truncated: its header names 3 dimensions"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_imagefolder_resizes_and_splits(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for index in range(10):
            size = (20 + index, 30)  # images of different sizes
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{index}.png")
    data = load_dataset(f"imagefolder:{tmp_path}", (3, 12, 12), seed=1)
    assert data.classes == ["cat", "dog"]
    assert sum(data.sizes.values()) == 20 and data.train.images.shape[1:] == (3, 12, 12)
    (tmp_path / "dog").rename(tmp_path / ".hidden")
    with pytest.raises(EdgepruneError, match="at least two class"):
        load_dataset(f"imagefolder:{tmp_path}", (3, 12, 12))


@pytest.mark.parametrize(
    ("spec", "message"),
    [("mnist", "unknown data set"), ("cifar10", "needs a folder"), ("digits:/x", "takes no folder")],
)
def test_bad_data_specs(spec: str, message: str) -> None:
    with pytest.raises(EdgepruneError, match=message):
        load_dataset(spec)
