"""The Dataset container and load_dataset: MNIST by name and .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psgd.data import Dataset, load_dataset, load_mnist
from psgd.errors import ConfigError, DatasetError


def save_npz(path: Path, **overrides: np.ndarray) -> Path:
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.random((12, 5), dtype=np.float32),
        "y_train": np.arange(12) % 3,
        "x_test": rng.random((4, 5), dtype=np.float32),
        "y_test": np.array([0, 1, 2, 3]),
    }
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def small_dataset(n_train: int = 6, n_test: int = 3) -> Dataset:
    return Dataset(
        name="toy",
        x_train=np.arange(n_train * 2, dtype=np.float32).reshape(n_train, 2),
        y_train=np.arange(n_train) % 3,
        x_test=np.zeros((n_test, 2), np.float32),
        y_test=np.arange(n_test) % 3,
        n_classes=3,
    )


# --- Dataset ----------------------------------------------------------------------------------


def test_subset_keeps_the_first_rows_and_the_class_count():
    data = small_dataset()
    part = data.subset(n_train=2, n_test=1)
    np.testing.assert_array_equal(part.x_train, data.x_train[:2])
    np.testing.assert_array_equal(part.y_test, data.y_test[:1])
    assert part.n_classes == 3 and part.n_features == 2 and part.name == "toy"


def test_subset_with_no_counts_keeps_everything():
    data = small_dataset()
    assert data.subset().x_train.shape == data.x_train.shape


@pytest.mark.parametrize("kwargs", [{"n_train": -1}, {"n_test": 4}, {"n_train": 2.5}])
def test_subset_rejects_bad_counts(kwargs):
    with pytest.raises(ConfigError, match="subset n_t"):
        small_dataset().subset(**kwargs)


def test_dataset_with_mismatched_rows_is_rejected():
    with pytest.raises(DatasetError, match="x_train"):
        Dataset("bad", np.zeros((3, 2)), np.zeros(2, np.int64), np.zeros((1, 2)), np.zeros(1), 1)


def test_dataset_with_label_outside_n_classes_is_rejected():
    data = small_dataset()
    with pytest.raises(DatasetError, match="outside"):
        Dataset("bad", data.x_train, data.y_train, data.x_test, data.y_test, n_classes=2)


def test_dataset_repr_shows_shapes_not_values():
    assert repr(small_dataset()) == (
        "Dataset(name='toy', x_train=(6, 2), x_test=(3, 2), n_classes=3)"
    )


def test_dataset_is_immutable():
    with pytest.raises(AttributeError):
        small_dataset().name = "other"  # type: ignore[misc]


# --- load_dataset -----------------------------------------------------------------------------


def test_load_dataset_mnist_by_name_is_load_mnist():
    data = load_dataset("MNIST")
    assert data.x_train is load_mnist().x_train


def test_load_dataset_unknown_name_says_what_is_expected():
    with pytest.raises(ConfigError, match='expected "mnist" or a path to a .npz file'):
        load_dataset("cifar10")


def test_npz_round_trip_keeps_float_features_and_labels(tmp_path):
    path = save_npz(tmp_path / "toy.npz")
    data = load_dataset(str(path))
    with np.load(path) as saved:
        np.testing.assert_array_equal(data.x_train, saved["x_train"])
        np.testing.assert_array_equal(data.y_test, saved["y_test"])
    assert data.name == "toy" and data.n_classes == 4 and data.n_features == 5
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64


def test_npz_uint8_images_are_flattened_and_scaled_to_unit_interval(tmp_path):
    images = np.full((12, 4, 4), 255, np.uint8)
    images[0] = 0
    path = save_npz(
        tmp_path / "img.npz",
        x_train=images,
        x_test=np.full((4, 4, 4), 51, np.uint8),
        y_train=(np.arange(12) % 3).astype(np.uint8),
    )
    data = load_dataset(path)
    assert data.x_train.shape == (12, 16) and data.x_train.dtype == np.float32
    assert data.x_train[0].max() == 0.0 and data.x_train[1].min() == 1.0
    np.testing.assert_allclose(data.x_test, 0.2, rtol=1e-6)
    assert data.y_train.dtype == np.int64


def test_npz_missing_key_names_file_and_key(tmp_path):
    path = save_npz(tmp_path / "partial.npz", y_test=None)
    with pytest.raises(DatasetError, match="partial.npz: missing array 'y_test'"):
        load_dataset(str(path))


def test_npz_rows_of_x_and_y_must_match(tmp_path):
    path = save_npz(tmp_path / "short.npz", y_train=np.zeros(11, np.int64))
    with pytest.raises(DatasetError, match="short.npz: x_train has 12 rows but y_train has 11"):
        load_dataset(str(path))


def test_npz_feature_counts_of_train_and_test_must_match(tmp_path):
    path = save_npz(tmp_path / "wide.npz", x_test=np.zeros((4, 6), np.float32))
    with pytest.raises(DatasetError, match="wide.npz.*features"):
        load_dataset(str(path))


def test_npz_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="absent.npz: no such file"):
        load_dataset(str(tmp_path / "absent.npz"))


def test_npz_corrupt_file_is_a_dataset_error(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(DatasetError, match="junk.npz"):
        load_dataset(str(path))


def test_npy_file_named_npz_is_a_dataset_error(tmp_path):
    path = tmp_path / "single.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(DatasetError, match="single.npz: holds a single array"):
        load_dataset(str(path))


def test_npz_holding_pickled_objects_is_refused(tmp_path):
    path = save_npz(tmp_path / "objects.npz", y_test=np.array([0, "a", None], dtype=object))
    with pytest.raises(DatasetError, match="objects.npz"):
        load_dataset(str(path))


def test_npz_integer_images_beyond_grey_levels_are_refused(tmp_path):
    path = save_npz(tmp_path / "deep.npz", x_train=np.full((12, 5), 1000, np.uint16))
    with pytest.raises(DatasetError, match="deep.npz: x_train.*0-255"):
        load_dataset(str(path))


def test_npz_integral_float_labels_are_accepted_and_fractional_ones_refused(tmp_path):
    ok = save_npz(tmp_path / "ok.npz", y_train=(np.arange(12) % 3).astype(np.float64))
    assert load_dataset(str(ok)).y_train.dtype == np.int64
    bad = save_npz(tmp_path / "bad.npz", y_train=np.full(12, 0.5))
    with pytest.raises(DatasetError, match="bad.npz: y_train must hold integer"):
        load_dataset(str(bad))


def test_npz_one_hot_labels_are_refused(tmp_path):
    path = save_npz(tmp_path / "onehot.npz", y_train=np.eye(3, dtype=np.int64)[np.arange(12) % 3])
    with pytest.raises(DatasetError, match="one class index per row"):
        load_dataset(str(path))
