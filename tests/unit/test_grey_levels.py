"""Image features travel as grey levels, losslessly, and nothing else is touched."""

from __future__ import annotations

import numpy as np
import pytest

from psgd.data import load_mnist
from psgd.data.grey_levels import PACKED_KEY, pack_features, unpack_features
from psgd.net import wire


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint32)


def test_mnist_images_travel_as_one_byte_a_value_and_come_back_bit_identical():
    images = load_mnist().x_train[:2000]
    packed = pack_features(images)
    assert isinstance(packed, dict) and packed[PACKED_KEY].dtype == np.uint8
    frames = wire.encode({"kind": "test"}, {"x": packed})
    assert wire.frames_size(frames) < images.nbytes / 3.9
    back = unpack_features(wire.decode(frames)[1]["x"])
    assert back.dtype == np.float32 and back.shape == images.shape
    np.testing.assert_array_equal(_bits(back), _bits(images))


@pytest.mark.parametrize(
    "x",
    [
        np.array([[0.5, 0.25]], dtype=np.float32),  # not k / 255
        np.array([[0.0, np.nan]], dtype=np.float32),
        np.array([[-0.0, 1.0]], dtype=np.float32),  # -0.0 would come back as +0.0
        np.array([[1.0, 256 / 255]], dtype=np.float32),  # above the top level
        (np.arange(4, dtype=np.float64) / 255).reshape(2, 2),  # float64 stays float64
        np.zeros((0, 3), dtype=np.float32),
    ],
)
def test_anything_but_exact_grey_levels_travels_unchanged(x):
    assert pack_features(x) is x
    np.testing.assert_array_equal(unpack_features(x), x)


def test_a_forged_packed_array_is_refused_by_name():
    with pytest.raises(ValueError, match=PACKED_KEY):
        unpack_features({PACKED_KEY: np.zeros(3, dtype=np.float32)})
