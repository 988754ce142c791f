"""CIFAR-10 from the official archives, read from a local path (psgd downloads nothing).

Both distributions of https://www.cs.toronto.edu/~kriz/cifar.html are read, as the ``.tar.gz``
or unpacked:

- the python version (``cifar-10-python.tar.gz``, folder ``cifar-10-batches-py``): pickled
  dicts, read with an unpickler that accepts only the dict, list, bytes and numpy-array
  pieces those files hold (so a forged file cannot run code);
- the binary version (``cifar-10-binary.tar.gz``, folder ``cifar-10-batches-bin``): records of
  one label byte and 3072 pixel bytes.

Images become 3072 float32 features in [0, 1] in height, width, channel order (what
``--model cnn-cifar`` reshapes to ``(32, 32, 3)``); the archives store channel, height, width.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from psgd.data.dataset import Dataset
from psgd.errors import DatasetError

__all__ = ["load_cifar10"]

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
IMAGE_BYTES = 3 * 32 * 32
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def load_cifar10(path: str | Path) -> Dataset:
    """CIFAR-10 from ``path``: an official archive (python or binary ``.tar.gz``) or the folder
    it unpacks to.

    Raises
    ------
    DatasetError
        Missing path or batch file, a corrupt archive or batch; the message names the file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(
            f"{path}: no such file or folder (CIFAR-10: download cifar-10-python.tar.gz or "
            "cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)"
        )
    files = _archive_files(path) if path.is_file() else _folder_files(path)
    train = [_batch(path, files, name) for name in TRAIN_BATCHES]
    x_test, y_test = _batch(path, files, TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return Dataset("cifar10", x_train, y_train, x_test, y_test, 10)


def _archive_files(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path) as archive:
            return {
                Path(member.name).name: archive.extractfile(member).read()  # type: ignore[union-attr]
                for member in archive.getmembers()
                if member.isfile()
            }
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable CIFAR-10 .tar.gz archive ({exc})") from None


def _folder_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _batch(where: Path, files: dict[str, bytes], name: str) -> tuple[np.ndarray, np.ndarray]:
    if name in files:
        return _python_batch(where / name, files[name])
    if f"{name}.bin" in files:
        return _binary_batch(where / f"{name}.bin", files[f"{name}.bin"])
    raise DatasetError(
        f"{where}: no CIFAR-10 batch {name!r} (python version) or {name}.bin (binary version); "
        f"found {', '.join(sorted(files)[:8]) or 'no files'}"
    )


def _python_batch(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _DataUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # pickle raises many types on bad bytes
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: expected a dict with b'data' and b'labels'")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise DatasetError(f"{path}: data must be uint8 of shape (n, 3072), got {data.dtype} "
                           f"{data.shape}")  # fmt: skip
    return _images(path, data, labels)


def _binary_batch(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    record = IMAGE_BYTES + 1
    if not raw or len(raw) % record:
        raise DatasetError(
            f"{path}: {len(raw)} bytes is not a whole number of {record}-byte CIFAR-10 records"
        )
    rows = np.frombuffer(raw, np.uint8).reshape(-1, record)
    return _images(path, rows[:, 1:], rows[:, 0])


def _images(path: Path, data: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels outside 0-9")
    hwc = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(len(data), IMAGE_BYTES)
    return hwc.astype(np.float32) / np.float32(255), labels.astype(np.int64)
