"""`load_dataset`: MNIST by name, CIFAR-10 and LEAF from a local path, .npz and .csv files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from psgd.data.cifar import load_cifar10
from psgd.data.dataset import Dataset
from psgd.data.leaf import load_leaf
from psgd.data.mnist import load_mnist
from psgd.data.table import load_csv
from psgd.errors import ConfigError, DatasetError

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")


def load_dataset(name_or_path: str | os.PathLike[str], data_dir: Path | None = None) -> Dataset:
    """Load a dataset by name (``"mnist"``) or from a .npz file.

    Parameters
    ----------
    name_or_path : str or path
        ``"mnist"`` (any case); ``cifar10:PATH`` (``psgd.data.cifar``); ``leaf:PATH``
        (``psgd.data.leaf``); a ``.csv`` table (``psgd.data.table``); or a path ending in
        ``.npz`` holding the arrays ``x_train``,
        ``y_train``, ``x_test`` and ``y_test``. Images of any shape are flattened to
        ``(n, -1)`` float32; integer images are taken as 0-255 grey levels and scaled by 1/255.
        Labels become int64.
    data_dir : Path, optional
        MNIST directory, passed to `load_mnist`; not used for .npz files.

    Raises
    ------
    ConfigError
        If `name_or_path` is neither ``"mnist"`` nor a .npz path.
    DatasetError
        If the file is missing, unreadable, lacks a key or holds inconsistent arrays.
    """
    text = os.fspath(name_or_path)
    if text.lower() == "mnist":
        return load_mnist(data_dir)
    if text.lower().endswith(".npz"):
        return _load_npz(Path(text))
    if text.lower().endswith(".csv"):
        return load_csv(text)
    kind, sep, path = text.partition(":")
    if sep and kind.lower() in ("cifar10", "cifar-10"):
        return load_cifar10(path)
    if sep and kind.lower() == "leaf":
        return load_leaf(path)
    raise ConfigError(
        f'dataset {text!r}: expected "mnist" or a path to a .npz file, a .csv file, '
        '"cifar10:PATH" (the CIFAR-10 archive or its folder) or "leaf:PATH" (a LEAF data folder)'
    )


def _load_npz(path: Path) -> Dataset:
    arrays = _read_npz(path)
    x = {split: _features(path, f"x_{split}", arrays[f"x_{split}"]) for split in ("train", "test")}
    y = {split: _labels(path, f"y_{split}", arrays[f"y_{split}"]) for split in ("train", "test")}
    for split in ("train", "test"):
        if len(x[split]) != len(y[split]):
            raise DatasetError(
                f"{path}: x_{split} has {len(x[split])} rows but y_{split} has {len(y[split])}"
            )
    if len(x["train"]) == 0:
        raise DatasetError(f"{path}: x_train has no rows")
    if x["train"].shape[1] != x["test"].shape[1]:
        raise DatasetError(
            f"{path}: x_train has {x['train'].shape[1]} features per row, "
            f"x_test has {x['test'].shape[1]}"
        )
    n_classes = int(max(labels.max() for labels in y.values() if labels.size)) + 1
    return Dataset(path.stem, x["train"], y["train"], x["test"], y["test"], n_classes)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DatasetError(f"{path}: holds a single array, expected a .npz archive")
        with loaded as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DatasetError(
                    f"{path}: missing array {missing[0]!r} (expected keys {', '.join(NPZ_KEYS)};"
                    f" found {', '.join(archive.files) or 'none'})"
                )
            return {key: archive[key] for key in NPZ_KEYS}
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from exc


def _features(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 0 or x.dtype.kind not in "biuf":
        raise DatasetError(
            f"{path}: {key} must be a numeric array of rows, got {x.dtype} {x.shape}"
        )
    flat = x.reshape(len(x), int(np.prod(x.shape[1:], dtype=np.int64)))
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DatasetError(
                f"{path}: {key} is {x.dtype} with values outside 0-255; integer images are "
                "read as grey levels, store other data as floats"
            )
        return flat.astype(np.float32) / np.float32(255)
    flat = flat.astype(np.float32)
    if not np.isfinite(flat).all():
        raise DatasetError(f"{path}: {key} contains NaN or infinite values")
    return flat


def _labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(f"{path}: {key} must hold one class index per row, got shape {y.shape}")
    if y.dtype.kind == "f" and np.array_equal(y, np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {key} must hold integer class indices, got {y.dtype}")
    if y.size and y.min() < 0:
        raise DatasetError(f"{path}: {key} has negative labels")
    return y.astype(np.int64)
