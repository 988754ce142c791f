"""MNIST loading: the real files, the IDX reader, and every way a copy can be broken."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from psgd.data import DEFAULT_DATA_DIR, load_mnist, read_idx
from psgd.data.mnist import SHIPPED_DATA_DIR
from psgd.errors import DatasetError

#: The MNIST files psgd ships: data/mnist in a checkout, psgd/_data/mnist once installed.
SHIPPED_MNIST = SHIPPED_DATA_DIR
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Serialise `array` as IDX: magic 0x0000TTNN, big-endian uint32 dims, raw data."""
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def write_fake_mnist(directory: Path, n_train: int = 20, n_test: int = 10) -> Path:
    """A tiny MNIST-shaped directory, with a SHA256SUMS listing the .gz files."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.uint8) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in FILES.items():
        (directory / name).write_bytes(gzip.compress(idx_bytes(arrays[key])))
    write_sha256sums(directory)
    return directory


def write_sha256sums(directory: Path) -> None:
    lines = [
        f"{hashlib.sha256((directory / name).read_bytes()).hexdigest()}  {name}\n"
        for name in FILES.values()
    ]
    (directory / "SHA256SUMS").write_text("".join(lines))


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    return write_fake_mnist(tmp_path / "mnist")


# --- the real MNIST ---------------------------------------------------------------------------


def test_real_mnist_has_expected_shapes_dtypes_and_labels(mnist):
    assert mnist.name == "mnist"
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.x_train.dtype == np.float32 and mnist.x_test.dtype == np.float32
    assert mnist.y_train.shape == (60000,) and mnist.y_test.shape == (10000,)
    assert mnist.y_train.dtype == np.int64 and mnist.y_test.dtype == np.int64
    assert mnist.n_classes == 10 and mnist.n_features == 784
    assert set(np.unique(mnist.y_train)) == set(range(10)) == set(np.unique(mnist.y_test))


def test_real_mnist_matches_the_original_distribution(mnist):
    # First labels and class counts of the original files, as published.
    assert mnist.y_train[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert mnist.y_test[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert np.bincount(mnist.y_train)[1] == 6742
    assert np.bincount(mnist.y_test).tolist()[:2] == [980, 1135]


def test_real_mnist_pixels_are_scaled_to_unit_interval(mnist):
    assert mnist.x_train.min() == 0.0 and mnist.x_train.max() == 1.0
    assert mnist.x_test.min() == 0.0 and mnist.x_test.max() == 1.0
    raw = read_idx(SHIPPED_MNIST / FILES["x_train"])
    np.testing.assert_allclose(mnist.x_train[0], raw[0].reshape(-1) / 255.0, rtol=1e-6)


def test_real_mnist_files_match_their_sha256sums():
    listed = dict(
        reversed(line.split()) for line in (SHIPPED_MNIST / "SHA256SUMS").read_text().splitlines()
    )
    for name in FILES.values():
        assert hashlib.sha256((SHIPPED_MNIST / name).read_bytes()).hexdigest() == listed[name]
    load_mnist(SHIPPED_MNIST, verify=True)


def test_load_mnist_returns_read_only_arrays_so_the_cache_cannot_be_corrupted(mnist):
    for array in (mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test):
        with pytest.raises(ValueError):
            array[0] = 1
    assert load_mnist().x_train[0].sum() == mnist.x_train[0].sum()


def test_load_mnist_reuses_decoded_arrays_between_calls(mnist):
    again = load_mnist()
    assert again.x_train is mnist.x_train and again.y_test is mnist.y_test


def test_read_idx_decodes_mnist_training_images_quickly():
    start = time.perf_counter()
    images = read_idx(SHIPPED_MNIST / FILES["x_train"])
    elapsed = time.perf_counter() - start
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert elapsed < 3.0  # ~0.2 s with np.frombuffer; a Python loop over bytes takes minutes


def test_default_data_dir_is_the_mnist_psgd_ships():
    if os.environ.get("PSGD_DATA_DIR"):
        pytest.skip("PSGD_DATA_DIR overrides the default")
    assert DEFAULT_DATA_DIR == SHIPPED_MNIST


def test_psgd_data_dir_environment_variable_picks_the_directory(fake_dir, monkeypatch):
    monkeypatch.setenv("PSGD_DATA_DIR", str(fake_dir))
    data = load_mnist()
    assert data.x_train.shape == (20, 784) and data.x_test.shape == (10, 784)


# --- read_idx ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_idx_returns_the_declared_shape_in_native_byte_order(tmp_path, compress):
    array = np.arange(-12, 12, dtype=">i2").reshape(2, 3, 4)
    data = idx_bytes(array, type_code=0x0B)
    path = tmp_path / "values.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    result = read_idx(path)
    assert result.shape == (2, 3, 4) and result.dtype == np.dtype(np.int16)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_read_idx_of_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match="nothing.idx"):
        read_idx(tmp_path / "nothing.idx")


def test_read_idx_rejects_trailing_bytes_after_the_data(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)) + b"\0")
    with pytest.raises(DatasetError, match="long.idx.*trailing"):
        read_idx(path)


# --- broken copies ----------------------------------------------------------------------------


def flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checksum_mismatch_names_file_expected_and_actual_sha256(fake_dir):
    path = fake_dir / FILES["x_test"]
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    flip_byte(path)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError) as info:
        load_mnist(fake_dir)
    message = str(info.value)
    assert str(path) in message and expected in message and actual in message


def test_flipped_byte_without_checksums_is_reported_as_corrupt_gzip(fake_dir):
    path = fake_dir / FILES["x_train"]
    flip_byte(path)
    with pytest.raises(DatasetError, match=f"{FILES['x_train']}.*gzip"):
        load_mnist(fake_dir, verify=False)


def test_truncated_gzip_file_names_the_file(fake_dir):
    path = fake_dir / FILES["y_train"]
    path.write_bytes(path.read_bytes()[:-20])
    (fake_dir / "SHA256SUMS").unlink()
    with pytest.raises(DatasetError, match=FILES["y_train"]):
        load_mnist(fake_dir)


def test_idx_data_shorter_than_its_header_says_names_the_file(fake_dir):
    path = fake_dir / FILES["x_test"]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    write_sha256sums(fake_dir)
    with pytest.raises(DatasetError, match=f"{FILES['x_test']}.*truncated"):
        load_mnist(fake_dir)


def test_wrong_magic_names_the_file(fake_dir):
    path = fake_dir / FILES["y_test"]
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[0:4] = b"\x12\x34\x08\x01"
    path.write_bytes(gzip.compress(bytes(data)))
    write_sha256sums(fake_dir)
    with pytest.raises(DatasetError, match=f"{FILES['y_test']}.*magic 0x12340801"):
        load_mnist(fake_dir)


def test_labels_file_in_place_of_images_is_rejected(fake_dir):
    images = fake_dir / FILES["x_train"]
    images.write_bytes((fake_dir / FILES["y_train"]).read_bytes())
    write_sha256sums(fake_dir)
    with pytest.raises(DatasetError, match=f"{FILES['x_train']}.*3-D uint8"):
        load_mnist(fake_dir)


def test_missing_file_error_gives_full_path_and_where_mnist_should_be(fake_dir):
    (fake_dir / FILES["y_test"]).unlink()
    with pytest.raises(DatasetError) as info:
        load_mnist(fake_dir)
    message = str(info.value)
    assert str(fake_dir.resolve() / FILES["y_test"]) in message
    assert "MNIST should be in" in message and "PSGD_DATA_DIR" in message


def test_missing_directory_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="MNIST file not found"):
        load_mnist(tmp_path / "no-such-dir")


def test_sha256sums_without_an_entry_for_a_file_is_an_error(fake_dir):
    sums = fake_dir / "SHA256SUMS"
    sums.write_text("".join(sums.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(DatasetError, match="no checksum listed"):
        load_mnist(fake_dir)


def test_malformed_sha256sums_line_names_the_line(fake_dir):
    (fake_dir / "SHA256SUMS").write_text("not-a-hash  file.gz\n")
    with pytest.raises(DatasetError, match="SHA256SUMS:1"):
        load_mnist(fake_dir)


def test_verify_false_loads_despite_a_wrong_checksum(fake_dir):
    (fake_dir / "SHA256SUMS").write_text(
        "".join(f"{'0' * 64}  {name}\n" for name in FILES.values())
    )
    assert load_mnist(fake_dir, verify=False).x_train.shape == (20, 784)
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        load_mnist(fake_dir)


def test_cache_notices_a_file_replaced_on_disk(tmp_path):
    directory = write_fake_mnist(tmp_path / "mnist", n_train=20)
    assert len(load_mnist(directory).x_train) == 20
    write_fake_mnist(directory, n_train=30)
    assert len(load_mnist(directory).x_train) == 30
