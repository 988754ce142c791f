"""A ``.csv`` table with a header row and a label column, as a `Dataset`.

The label column is the one named ``label``, ``target``, ``class``, ``y`` or ``diagnosis``
(any case; the first found), else the last column. Labels may be whole numbers (kept) or text
(classes numbered in sorted order: ``B, M -> 0, 1``). Every other column must hold numbers.
A file ``<name>_train.csv`` is paired with ``<name>_test.csv`` when that exists; any other
file is split once, with a fixed seed, into 80% training and 20% test rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from psgd.data.dataset import Dataset
from psgd.errors import DatasetError

__all__ = ["LABEL_COLUMNS", "load_csv"]

#: Column names taken as the label, in this order of preference (case-insensitive).
LABEL_COLUMNS = ("label", "target", "class", "y", "diagnosis")
TEST_FRACTION = 0.2


def load_csv(path: str | Path) -> Dataset:
    """Read ``path`` (and its ``_test.csv`` partner, if any).

    Raises
    ------
    DatasetError
        Missing file, no rows, ragged rows or a value that is not a number; the message names
        the file, the line and the column.
    """
    path = Path(path).expanduser()
    header, features, labels = _read(path)
    partner = path.with_name(path.name.replace("_train.csv", "_test.csv"))
    if partner != path and path.name.endswith("_train.csv") and partner.is_file():
        test_header, test_features, test_labels = _read(partner)
        if test_header != header:
            raise DatasetError(f"{partner}: columns differ from {path}'s")
        classes = _classes(labels + test_labels)
        x_train, x_test = features, test_features
        y_train = _encode(labels, classes)
        y_test = _encode(test_labels, classes)
    else:
        classes = _classes(labels)
        y = _encode(labels, classes)
        order = np.random.default_rng(0).permutation(len(y))
        n_test = max(1, round(TEST_FRACTION * len(y))) if len(y) > 1 else 0
        test, train = order[:n_test], order[n_test:]
        x_train, x_test, y_train, y_test = features[train], features[test], y[train], y[test]
    n_classes = int(max(y_train.max(), y_test.max(initial=0))) + 1
    name = path.stem.removesuffix("_train")
    return Dataset(name, x_train, y_train, x_test, y_test, n_classes)


def _read(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    rows = [row for row in rows if row]
    if len(rows) < 2:
        raise DatasetError(f"{path}: needs a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    if len(header) < 2:
        raise DatasetError(f"{path}: needs a label column and at least one feature column")
    lower = [name.lower() for name in header]
    label_col = next((lower.index(n) for n in LABEL_COLUMNS if n in lower), len(header) - 1)
    features = np.empty((len(rows) - 1, len(header) - 1), np.float32)
    labels = []
    columns = [i for i in range(len(header)) if i != label_col]
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}:{line}: {len(row)} values, the header has {len(header)}")
        labels.append(row[label_col].strip())
        for out, col in enumerate(columns):
            try:
                features[line - 2, out] = float(row[col])
            except ValueError:
                raise DatasetError(
                    f"{path}:{line}: column {header[col]!r} holds {row[col]!r}, not a number"
                ) from None
    if not np.isfinite(features).all():
        raise DatasetError(f"{path}: contains NaN or infinite values")
    return header, features, labels


def _classes(labels: list[str]) -> dict[str, int]:
    unique = sorted(set(labels))
    if all(_is_whole(label) for label in unique):
        return {label: int(float(label)) for label in unique}
    return {label: i for i, label in enumerate(unique)}


def _is_whole(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return value.is_integer() and value >= 0


def _encode(labels: list[str], classes: dict[str, int]) -> np.ndarray:
    return np.array([classes[label] for label in labels], np.int64)
