"""Datasets for psgd: MNIST from its IDX files, any .npz split, and partitions between workers.

Owns: the ``Dataset`` container, dataset loading and checksums, partition schemes.
May import: the contract (``psgd.errors``) and numpy only.
"""

from psgd.data.dataset import Dataset
from psgd.data.datasets import load_dataset
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
