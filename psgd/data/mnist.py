"""MNIST from the gzip IDX files of its original distribution, checked against SHA256SUMS."""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import re
import zlib
from pathlib import Path

import numpy as np

from psgd.data.dataset import Dataset
from psgd.errors import DatasetError

DATA_DIR_ENV = "PSGD_DATA_DIR"


def _shipped_data_dir() -> Path:
    """``psgd/_data/mnist`` in an installed wheel, else the repository's ``data/mnist``."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "_data" / "mnist"
    return shipped if shipped.is_dir() else package.parent / "data" / "mnist"


#: Where MNIST ships: the repository's ``data/mnist``, carried by the wheel as
#: ``psgd/_data/mnist`` (a checkout or an editable install reads the folder itself).
SHIPPED_DATA_DIR = _shipped_data_dir()


def _env_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


DEFAULT_DATA_DIR: Path = _env_data_dir() or SHIPPED_DATA_DIR
"""``SHIPPED_DATA_DIR``, or ``$PSGD_DATA_DIR`` when set (also read again at each load)."""

MNIST_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
CHECKSUM_FILE = "SHA256SUMS"

# IDX magic: two zero bytes, a type code, the number of dimensions.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# A table lookup is several times faster than astype(float32) followed by a division.
_GREY_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)
_SHA256_HEX = re.compile("[0-9a-fA-F]{64}")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file, gzip-compressed or plain, into an array of the shape it declares.

    Parameters
    ----------
    path : str or path
        The file; gzip data is recognised by its magic bytes, whatever the file name.

    Returns
    -------
    np.ndarray
        Native byte order. A uint8 array shares memory with the file's bytes and is read-only.

    Raises
    ------
    DatasetError
        If the file is missing, the gzip data is corrupt, the magic is not IDX or the data
        is shorter or longer than the header says; the message names the file.
    """
    path = Path(path)
    return _decode_idx(_read_bytes(path), path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def _decode_idx(raw: bytes, path: Path) -> np.ndarray:
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DatasetError(
            f"{path}: not an IDX file: magic 0x{raw[:4].hex()}, expected 0x0000 then a type "
            "code (08 for uint8) and the number of dimensions, e.g. 0x00000803 for images"
        )
    ndim, dtype = raw[3], _IDX_DTYPES[raw[2]]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} of {header_size} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected, found = math.prod(shape) * dtype.itemsize, len(raw) - header_size
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes after the data"
        raise DatasetError(
            f"{path}: {what}: the header declares {dtype.name} of shape {shape}, "
            f"{expected} bytes, the file holds {found}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def load_mnist(data_dir: Path | None = None, verify: bool = True) -> Dataset:
    """Load MNIST: 60,000 training and 10,000 test images of 28x28 grey levels, labels 0-9.

    Decoded arrays are cached per process (keyed on the directory and the files' size and
    modification time), so repeated loads are free. The arrays are read-only: copy before
    modifying them.

    Parameters
    ----------
    data_dir : Path, optional
        Directory holding the four IDX .gz files. Default: ``$PSGD_DATA_DIR`` if set,
        else `DEFAULT_DATA_DIR` (``data/mnist`` in the repository, shipped with psgd).
    verify : bool
        Check the sha256 of each .gz file against ``SHA256SUMS`` when that file exists.

    Returns
    -------
    Dataset
        ``x_*`` float32 of shape ``(n, 784)`` in [0, 1], ``y_*`` int64, ``n_classes`` 10.

    Raises
    ------
    DatasetError
        If a file is missing (the message gives the full path and where MNIST should be),
        fails its checksum (file, expected and actual sha256) or is corrupt (file named).
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else _default_dir()
    directory = directory.resolve()
    stamps = tuple(_stamp(directory, name) for name in MNIST_FILES.values())
    checksum_stamp = _stamp(directory, CHECKSUM_FILE, required=False) if verify else None
    # The cached Dataset is safe to share: it is frozen and its arrays are read-only.
    return _load_cached(str(directory), verify, stamps + (checksum_stamp,))


def _default_dir() -> Path:
    return _env_data_dir() or DEFAULT_DATA_DIR


def _stamp(directory: Path, name: str, required: bool = True) -> tuple[int, int] | None:
    """(size, mtime) of a file, so the cache notices a file replaced on disk."""
    try:
        stat = (directory / name).stat()
    except FileNotFoundError:
        if not required:
            return None
        gone = "" if directory.is_dir() else " (no such directory)"
        raise DatasetError(
            f"MNIST file not found: {directory / name}{gone}. MNIST should be in {directory} as "
            f"{', '.join(MNIST_FILES.values())} (gzip IDX files, see data/mnist/README.md); "
            f"pass data_dir or set {DATA_DIR_ENV} to use another directory"
        ) from None
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _load_cached(
    directory: str, verify: bool, stamps: tuple[tuple[int, int] | None, ...]
) -> Dataset:
    del stamps  # only part of the cache key
    root = Path(directory)
    checksum_path = root / CHECKSUM_FILE
    sums = _read_checksums(checksum_path) if verify and checksum_path.is_file() else None
    idx = {}
    for key, name in MNIST_FILES.items():
        raw = _read_bytes(root / name)
        if sums is not None:
            _verify(root / name, raw, sums, checksum_path)
        idx[key] = _decode_idx(raw, root / name)
    _check_layout(root, idx)
    x_train, x_test = (
        _GREY_LEVELS[idx[key].reshape(len(idx[key]), -1)] for key in ("x_train", "x_test")
    )
    y_train, y_test = (idx[key].astype(np.int64) for key in ("y_train", "y_test"))
    for array in (x_train, y_train, x_test, y_test):
        array.flags.writeable = False
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset("mnist", x_train, y_train, x_test, y_test, n_classes)


def _read_checksums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum`` listing into {file name: hex digest}."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    sums = {}
    for lineno, line in enumerate(lines, start=1):
        fields = line.strip().split(None, 1)
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2 or not _SHA256_HEX.fullmatch(fields[0]):
            raise DatasetError(f"{path}:{lineno}: expected '<sha256>  <file name>', got {line!r}")
        sums[fields[1].lstrip("*")] = fields[0].lower()
    return sums


def _verify(path: Path, raw: bytes, sums: dict[str, str], checksum_path: Path) -> None:
    expected = sums.get(path.name)
    if expected is None:
        raise DatasetError(f"{checksum_path}: no checksum listed for {path.name}")
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise DatasetError(
            f"{path}: sha256 mismatch: expected {expected} (from {checksum_path}), got {actual}; "
            "the file is corrupt or not the MNIST file, restore it or pass verify=False"
        )


def _check_layout(root: Path, idx: dict[str, np.ndarray]) -> None:
    """The four files must hold uint8 images (n, rows, cols) and uint8 labels (n,)."""
    for key, array in idx.items():
        ndim = 3 if key.startswith("x") else 1
        if array.dtype != np.uint8 or array.ndim != ndim:
            raise DatasetError(
                f"{root / MNIST_FILES[key]}: expected {ndim}-D uint8 data "
                f"(IDX magic 0x0000080{ndim}), got {array.ndim}-D {array.dtype}"
            )
    for split in ("train", "test"):
        n_images, n_labels = len(idx[f"x_{split}"]), len(idx[f"y_{split}"])
        if n_images != n_labels:
            raise DatasetError(
                f"{root}: {MNIST_FILES['x_' + split]} has {n_images} images but "
                f"{MNIST_FILES['y_' + split]} has {n_labels} labels"
            )
    if not len(idx["x_train"]) or not len(idx["x_test"]):
        raise DatasetError(f"{root}: MNIST needs training and test images, a file holds none")
    if idx["x_train"].shape[1:] != idx["x_test"].shape[1:]:
        raise DatasetError(
            f"{root}: training images are {idx['x_train'].shape[1:]}, "
            f"test images {idx['x_test'].shape[1:]}"
        )
