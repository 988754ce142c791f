"""Datasets for psgd: MNIST from its IDX files, CIFAR-10 archives, LEAF JSON, any .npz or .csv,
and partitions between workers.

Owns: the ``Dataset`` container, dataset loading and checksums, partition schemes.
May import: the contract (``psgd.errors``) and numpy only.
"""

from psgd.data.cifar import load_cifar10
from psgd.data.dataset import Dataset
from psgd.data.datasets import load_dataset
from psgd.data.leaf import load_leaf
from psgd.data.mnist import DEFAULT_DATA_DIR, load_mnist, read_idx
from psgd.data.partition import PARTITIONS, natural_partition, partition
from psgd.data.table import load_csv

__all__ = [
    "DEFAULT_DATA_DIR",
    "PARTITIONS",
    "Dataset",
    "load_cifar10",
    "load_csv",
    "load_dataset",
    "load_leaf",
    "natural_partition",
    "load_mnist",
    "partition",
    "read_idx",
]
