"""Offline data sets (digits, fashion-mnist, cifar10:DIR, imagefolder:DIR) with seeded splits."""

from edgeprune.data.dataset import Dataset, Split, default_input_shape, load_dataset, parse_spec

__all__ = ["Dataset", "Split", "load_dataset", "default_input_shape", "parse_spec"]
