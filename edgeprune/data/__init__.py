"""Offline data sets (digits, fashion-mnist, cifar10:DIR, imagefolder:DIR) with seeded splits."""

from edgeprune.data.dataset import Dataset, Split, load_dataset, native_shape, parse_spec

__all__ = ["Dataset", "Split", "load_dataset", "native_shape", "parse_spec"]
