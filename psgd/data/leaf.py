"""LEAF's JSON data (FEMNIST, Shakespeare, ...), with each sample's writer or user kept.

LEAF (https://github.com/TalwalkarLab/leaf) writes ``train/*.json`` and ``test/*.json`` under a
dataset's ``data/`` folder, each file ``{"users": [...], "num_samples": [...], "user_data":
{user: {"x": [...], "y": [...]}}}``. Numeric ``x`` rows (FEMNIST's 784 grey levels) become
float32 features; text ``x`` (Shakespeare's 80-character windows) become one feature per
character, its index in LEAF's 80-letter alphabet, and a one-character ``y`` its index too.
The training rows' users are kept (``Dataset.groups``), so ``--partition natural`` gives one
client per writer or user.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from psgd.data.dataset import Dataset
from psgd.errors import DatasetError

__all__ = ["LEAF_LETTERS", "load_leaf"]

#: LEAF's Shakespeare alphabet (``models/utils/language_utils.py``): a character's index is
#: its feature value.
LEAF_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
_LETTER_INDEX = {c: i for i, c in enumerate(LEAF_LETTERS)}


def load_leaf(path: str | Path) -> Dataset:
    """A LEAF dataset from ``path``: the folder holding ``train/`` and ``test/`` (or its
    ``data/`` subfolder).

    Raises
    ------
    DatasetError
        Missing folders, files that are not LEAF JSON, ragged rows or unknown characters; the
        message names the file and the user.
    """
    root = Path(path).expanduser()
    if (root / "data" / "train").is_dir() and not (root / "train").is_dir():
        root = root / "data"
    splits = {}
    users: dict[str, int] = {}
    for split in ("train", "test"):
        folder = root / split
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise DatasetError(
                f"{folder}: no LEAF .json files (expected {root}/train/*.json and "
                f"{root}/test/*.json, as LEAF's preprocess.sh writes them)"
            )
        splits[split] = _read_split(files, users)
    (x_train, y_train, groups), (x_test, y_test, _) = splits["train"], splits["test"]
    if x_train.shape[1] != x_test.shape[1]:
        raise DatasetError(
            f"{root}: training rows have {x_train.shape[1]} features, test rows {x_test.shape[1]}"
        )
    n_classes = int(max(y_train.max(), y_test.max(initial=0))) + 1
    name = root.parent.name if root.name == "data" else root.name
    return Dataset(name, x_train, y_train, x_test, y_test, n_classes, groups=groups)


def _read_split(
    files: list[Path], users: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    for path in files:
        for user, x, y in _read_file(path):
            index = users.setdefault(user, len(users))
            xs.append(x)
            ys.append(y)
            groups.append(np.full(len(y), index, np.int64))
    widths = {x.shape[1] for x in xs}
    if len(widths) != 1:
        raise DatasetError(f"{files[0].parent}: users' rows differ in length: {sorted(widths)}")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


def _read_file(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not readable LEAF JSON ({exc})") from None
    data = content.get("user_data") if isinstance(content, dict) else None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: no 'user_data' object (not a LEAF file)")
    users = content.get("users", list(data))
    rows = []
    for user in users:
        entry = data.get(user)
        if not isinstance(entry, dict) or "x" not in entry or "y" not in entry:
            raise DatasetError(f"{path}: user {user!r} has no 'x' and 'y' lists")
        x, y = _features(path, user, entry["x"]), _labels(path, user, entry["y"])
        if len(x) != len(y) or not len(y):
            raise DatasetError(f"{path}: user {user!r} has {len(x)} rows of x and {len(y)} of y")
        rows.append((str(user), x, y))
    return rows


def _features(path: Path, user: str, x: list[Any]) -> np.ndarray:
    if x and isinstance(x[0], str):
        return np.array([[_letter(path, user, c) for c in row] for row in x], np.float32)
    try:
        array = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: user {user!r}: x rows are not numbers of one length") from None
    if array.ndim != 2 or not np.isfinite(array).all():
        raise DatasetError(f"{path}: user {user!r}: x must be finite rows, got {array.shape}")
    return array


def _labels(path: Path, user: str, y: list[Any]) -> np.ndarray:
    if y and isinstance(y[0], str):
        return np.array([_letter(path, user, c) for c in y], np.int64)
    array = np.asarray(y)
    if array.ndim != 1 or array.dtype.kind not in "iu" or (array.size and array.min() < 0):
        raise DatasetError(f"{path}: user {user!r}: y must be class indices >= 0")
    return array.astype(np.int64)


def _letter(path: Path, user: str, char: str) -> int:
    index = _LETTER_INDEX.get(char)
    if index is None or len(char) != 1:
        raise DatasetError(f"{path}: user {user!r}: character {char!r} is not in LEAF's alphabet")
    return index
