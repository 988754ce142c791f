"""The `Dataset` container: a train/test split of flat features and integer labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psgd.errors import ConfigError, DatasetError

__all__ = ["Dataset"]


# eq=False: the generated __eq__/__hash__ would compare arrays elementwise and fail.
@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split of flat feature vectors and integer class labels.

    Parameters
    ----------
    name : str
        Short name for logs and metrics (``"mnist"``, or the stem of a .npz file).
    x_train, x_test : np.ndarray
        Shape ``(n, n_features)``, float32 (MNIST: grey levels scaled to [0, 1]).
    y_train, y_test : np.ndarray
        Shape ``(n,)``, int64 class indices in ``[0, n_classes)``.
    n_classes : int
        Largest label over train and test, plus one.
    groups : np.ndarray, optional
        Shape ``(n_train,)``: the writer or user of each training row (LEAF data), for
        ``--partition natural``.

    Raises
    ------
    DatasetError
        If the shapes do not line up or a label is outside ``[0, n_classes)``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.groups is not None and self.groups.shape != self.y_train.shape:
            raise DatasetError(
                f"dataset {self.name!r}: groups of shape {self.groups.shape} for "
                f"{len(self.y_train)} training rows"
            )
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise DatasetError(
                    f"dataset {self.name!r}: expected x_{split} of shape (n, features) and "
                    f"y_{split} of shape (n,), got {x.shape} and {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise DatasetError(
                    f"dataset {self.name!r}: y_{split} has labels outside [0, {self.n_classes})"
                )
        if self.x_test.shape[1] != self.x_train.shape[1]:
            raise DatasetError(
                f"dataset {self.name!r}: x_train has {self.x_train.shape[1]} features, "
                f"x_test has {self.x_test.shape[1]}"
            )

    @property
    def n_features(self) -> int:
        """Length of one feature vector (784 for MNIST)."""
        return int(self.x_train.shape[1])

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """Return the first `n_train` training and `n_test` test rows (None keeps all).

        The arrays are views of this dataset's arrays, and `n_classes` is kept, so a model
        built for the subset fits the full dataset too.

        Raises
        ------
        ConfigError
            If a count is negative, not an integer, or larger than the split.
        """
        n_train = _row_count(self.name, "n_train", n_train, len(self.x_train))
        n_test = _row_count(self.name, "n_test", n_test, len(self.x_test))
        return Dataset(
            name=self.name,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
            n_classes=self.n_classes,
            groups=None if self.groups is None else self.groups[:n_train],
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
            f"x_test={self.x_test.shape}, n_classes={self.n_classes})"
        )


def _row_count(name: str, arg: str, value: int | None, available: int) -> int:
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"dataset {name!r}: subset {arg} must be an integer, got {value!r}")
    if not 0 <= value <= available:
        raise ConfigError(
            f"dataset {name!r}: subset {arg} must be between 0 and {available}, got {value}"
        )
    return int(value)
