"""Datasets for psgd: MNIST from its IDX files, any .npz split, and partitions between workers."""

from psgd.data.datasets import Dataset, load_dataset
from psgd.data.mnist import DEFAULT_DATA_DIR, load_mnist, read_idx
from psgd.data.partition import PARTITIONS, partition

__all__ = [
    "DEFAULT_DATA_DIR",
    "PARTITIONS",
    "Dataset",
    "load_dataset",
    "load_mnist",
    "partition",
    "read_idx",
]
