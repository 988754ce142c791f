"""psgd.nn save_model / load_model: round trips and every way a model file can be bad."""

from __future__ import annotations

import json

import numpy as np
import pytest

from psgd.errors import ModelError
from psgd.nn import (
    MSE,
    Dense,
    Layer,
    Sequential,
    Softmax,
    SoftmaxCrossEntropy,
    build_mlp,
    load_model,
    save_model,
)


@pytest.fixture
def saved(tmp_path):
    model = build_mlp([6, 5, 3], activation="tanh", rng=np.random.default_rng(0))
    path = tmp_path / "model.npz"
    save_model(model, path)
    return model, path


def test_round_trip_gives_identical_predictions_and_architecture(saved):
    model, path = saved
    loaded = load_model(path)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert loaded.layer_sizes == [6, 5, 3]
    assert loaded.activation == "tanh"
    assert loaded.dtype == np.float32
    assert isinstance(loaded.loss, SoftmaxCrossEntropy)
    assert [v.name for v in loaded.variables] == [v.name for v in model.variables]


def test_round_trip_of_hand_built_float64_model_with_mse(tmp_path):
    rng = np.random.default_rng(0)
    model = Sequential([Dense(3, 4, rng=rng, dtype=np.float64), Softmax()], loss=MSE())
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(str(tmp_path / "m.npz"))
    x = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(loaded(x), model(x))
    assert isinstance(loaded.loss, MSE) and isinstance(loaded.layers[1], Softmax)
    assert loaded.dtype == np.float64


def test_save_writes_exactly_the_given_path_without_pickle(tmp_path):
    model = build_mlp([3, 2], rng=np.random.default_rng(0))
    save_model(model, tmp_path / "weights.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
    with np.load(tmp_path / "weights.bin", allow_pickle=False) as data:
        arch = json.loads(data["__architecture__"].tobytes())
    assert arch["layer_sizes"] == [3, 2] and arch["loss"] == "softmax_cross_entropy"


def test_save_refuses_a_layer_it_cannot_rebuild(tmp_path):
    class Custom(Layer):
        name = "custom"

    with pytest.raises(ModelError, match="cannot save layer"):
        save_model(Sequential([Dense(2, 2), Custom()]), tmp_path / "m.npz")


def test_load_of_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(ModelError, match="nope.npz: no such model file"):
        load_model(path)


def write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def architecture(**changes):
    arch = {
        "format": "psgd.nn/1",
        "layer_sizes": [6, 5, 3],
        "activation": "tanh",
        "dtype": "float32",
        "loss": "softmax_cross_entropy",
        "layers": [
            {"type": "dense", "n_in": 6, "n_out": 5},
            {"type": "tanh"},
            {"type": "dense", "n_in": 5, "n_out": 3},
        ],
    }
    arch.update(changes)
    return np.frombuffer(json.dumps(arch).encode(), np.uint8)


def weights(model):
    return {v.name: v.value for v in model.variables}


def corrupt_random_bytes(path, model):
    path.write_bytes(np.random.default_rng(0).bytes(300))


def corrupt_truncated(path, model):
    path.write_bytes(path.read_bytes()[:200])


def corrupt_flipped_bytes(path, model):
    data = bytearray(path.read_bytes())
    data[100:140] = bytes(40)
    path.write_bytes(bytes(data))


def corrupt_single_npy(path, model):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def corrupt_pickled_member(path, model):
    write_npz(path, {**weights(model), "__architecture__": np.array([{"a": 1}], dtype=object)})


def corrupt_no_architecture(path, model):
    write_npz(path, weights(model))


def corrupt_bad_json(path, model):
    write_npz(path, {**weights(model), "__architecture__": np.frombuffer(b"{oops", np.uint8)})


def corrupt_wrong_format(path, model):
    write_npz(path, {**weights(model), "__architecture__": architecture(format="other/9")})


def corrupt_unknown_layer(path, model):
    arch = architecture(layers=[{"type": "dense", "n_in": 6, "n_out": 5}, {"type": "gelu"}])
    write_npz(path, {**weights(model), "__architecture__": arch})


def corrupt_unhashable_layer_type(path, model):
    arch = architecture(layers=[{"type": ["dense"]}])
    write_npz(path, {**weights(model), "__architecture__": arch})


def corrupt_unknown_loss(path, model):
    write_npz(path, {**weights(model), "__architecture__": architecture(loss="hinge")})


def corrupt_bad_dtype(path, model):
    write_npz(path, {**weights(model), "__architecture__": architecture(dtype="object")})


def corrupt_missing_array(path, model):
    arrays = weights(model)
    del arrays["dense1.b"]
    write_npz(path, {**arrays, "__architecture__": architecture()})


def corrupt_extra_array(path, model):
    write_npz(path, {**weights(model), "junk": np.zeros(2), "__architecture__": architecture()})


def corrupt_wrong_array_dtype(path, model):
    arrays = {k: v.astype(np.float64) for k, v in weights(model).items()}
    write_npz(path, {**arrays, "__architecture__": architecture()})


def corrupt_forged_huge_layer(path, model):
    arch = architecture(
        layers=[{"type": "dense", "n_in": 10**6, "n_out": 10**6}, {"type": "tanh"}],
        layer_sizes=[10**6, 10**6],
    )
    write_npz(path, {**weights(model), "__architecture__": arch})


def corrupt_inconsistent_layer_sizes(path, model):
    write_npz(path, {**weights(model), "__architecture__": architecture(layer_sizes=[6, 9, 3])})


@pytest.mark.parametrize(
    "corrupt",
    [
        corrupt_random_bytes,
        corrupt_truncated,
        corrupt_flipped_bytes,
        corrupt_single_npy,
        corrupt_pickled_member,
        corrupt_no_architecture,
        corrupt_bad_json,
        corrupt_wrong_format,
        corrupt_unknown_layer,
        corrupt_unhashable_layer_type,
        corrupt_unknown_loss,
        corrupt_bad_dtype,
        corrupt_missing_array,
        corrupt_extra_array,
        corrupt_wrong_array_dtype,
        corrupt_forged_huge_layer,
        corrupt_inconsistent_layer_sizes,
    ],
)
def test_load_of_bad_file_raises_model_error_naming_the_file(saved, corrupt):
    model, path = saved
    corrupt(path, model)
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: ")
