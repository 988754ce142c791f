"""psgd.nn image and shaping layers, the new losses and the built-in models: gradients against
finite differences, shapes, and learning."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import numeric_grad

from psgd.errors import ConfigError, ModelError
from psgd.nn import (
    MSE,
    BinaryCrossEntropy,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Reshape,
    Sequential,
    build_model,
    make_optimizer,
)

F64 = np.float64


def distinct_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A permutation of well-separated values: no ties for max pooling to break."""
    return rng.permutation(np.arange(np.prod(shape), dtype=F64)).reshape(shape) * 0.1


LAYERS = {
    "conv_valid": (lambda rng: Conv2D(2, 3, 3, rng=rng, dtype=F64), (2, 5, 6, 2)),
    "conv_same": (lambda rng: Conv2D(2, 3, 5, padding="same", rng=rng, dtype=F64), (2, 6, 5, 2)),
    "conv_1x1": (lambda rng: Conv2D(3, 2, 1, rng=rng, dtype=F64), (1, 3, 3, 3)),
    # 8+ input channels: the input gradient is a correlation with the turned kernel
    "conv_wide": (lambda rng: Conv2D(8, 3, 3, padding=1, rng=rng, dtype=F64), (2, 4, 3, 8)),
    "conv_wide_pad": (lambda rng: Conv2D(8, 2, 3, padding=3, rng=rng, dtype=F64), (1, 3, 2, 8)),
    "maxpool": (lambda rng: MaxPool2D(2), (2, 4, 6, 3)),
    "maxpool_odd": (lambda rng: MaxPool2D(2), (2, 5, 5, 2)),
    "maxpool_3": (lambda rng: MaxPool2D(3), (1, 6, 6, 2)),
    "flatten": (lambda rng: Flatten(), (3, 2, 2, 2)),
    "reshape": (lambda rng: Reshape((2, 3, 2)), (3, 12)),
}


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(0)
    make, shape = LAYERS[kind]
    layer = make(rng)
    x = distinct_values(rng, shape)
    upstream = rng.standard_normal(layer.forward(x).shape)

    def f():
        return float(np.sum(layer.forward(x) * upstream))

    layer.forward(x)
    dx = np.array(layer.backward(upstream.copy()), copy=True)
    analytic = {var.name: var.grad.copy() for var in layer.variables}
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    for var in layer.variables:
        np.testing.assert_allclose(
            analytic[var.name], numeric_grad(f, var.value), rtol=1e-6, atol=1e-8
        )


def test_dropout_gradient_matches_finite_differences_for_a_fixed_mask():
    rng = np.random.default_rng(0)
    layer = Dropout(0.4)
    x = rng.standard_normal((4, 5))
    upstream = rng.standard_normal((4, 5))

    def f():
        layer.rng = np.random.default_rng(7)  # the same mask at every call
        return float(np.sum(layer.forward(x) * upstream))

    f()
    dx = layer.backward(upstream.copy()).copy()
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    layer.rng = np.random.default_rng(7)
    y = layer.forward(x).copy()
    kept = y != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(y[kept], x[kept] / 0.6)


def test_dropout_is_the_identity_when_evaluating():
    model = Sequential([Dense(4, 8, rng=np.random.default_rng(0)), Dropout(0.5), Dense(8, 2)])
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(model(x), model(x))
    model.loss_and_grads(x, np.array([0, 1, 0]))
    assert model.layers[1].training
    model(x)
    assert not model.layers[1].training


def test_conv_matches_a_direct_convolution():
    rng = np.random.default_rng(3)
    conv = Conv2D(2, 4, 3, padding=1, rng=rng, dtype=F64)
    conv.b.value[:] = rng.standard_normal(4)
    x = rng.standard_normal((2, 5, 4, 2))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 5, 4, 4))
    for i in range(5):
        for j in range(4):
            patch = padded[:, i : i + 3, j : j + 3, :]
            expected[:, i, j, :] = np.einsum("nabc,abcf->nf", patch, conv.W.value) + conv.b.value
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-12)


def test_maxpool_sends_a_tied_window_gradient_to_one_element():
    pool = MaxPool2D(2)
    pool.forward(np.zeros((1, 2, 2, 1)))
    dx = pool.backward(np.ones((1, 1, 1, 1)))
    assert dx.sum() == 1.0 and dx[0, 0, 0, 0] == 1.0


@pytest.mark.parametrize("k", [1, 3])
def test_binary_cross_entropy_gradient_matches_finite_differences(k):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, k)) * 3
    y = rng.integers(0, 2 if k == 1 else k, 6)
    loss = BinaryCrossEntropy()
    grad = loss.value_and_grad(z, y)[1].copy()
    np.testing.assert_allclose(grad, numeric_grad(lambda: loss.value(z, y), z), rtol=1e-6)


def test_binary_cross_entropy_is_stable_for_huge_logits():
    value, grad = BinaryCrossEntropy().value_and_grad(np.array([[1e4], [-1e4]]), np.array([1, 0]))
    assert value == pytest.approx(0.0) and np.isfinite(grad).all()
    with pytest.raises(ValueError, match="labels 0 or 1"):
        BinaryCrossEntropy().value_and_grad(np.zeros((2, 1)), np.array([0, 2]))


def test_mse_takes_integer_labels_as_one_hot_rows():
    pred = np.array([[0.2, 0.9], [0.6, 0.1]])
    value = MSE().value(pred, np.array([1, 0]))
    assert value == pytest.approx(0.5 * ((0.04 + 0.01) + (0.16 + 0.01)) / 2)


def test_cnn_mnist_has_mcmahans_parameter_count_and_shapes():
    model = build_model("cnn-mnist", 784, 10, np.random.default_rng(0))
    assert sum(v.value.size for v in model.variables) == 1_663_370
    assert [v.name for v in model.variables][:4] == ["conv0.W", "conv0.b", "conv1.W", "conv1.b"]
    assert model(np.zeros((2, 784), np.float32)).shape == (2, 10)


def test_cnn_cifar_has_the_tutorial_parameter_count():
    model = build_model("cnn-cifar", 3072, 10, np.random.default_rng(0))
    assert sum(v.value.size for v in model.variables) == 62_006


def test_small_cnn_gradients_match_finite_differences_end_to_end():
    rng = np.random.default_rng(2)
    layers = [
        Reshape((6, 6, 1)), Conv2D(1, 2, 3, padding="same", rng=rng, dtype=F64), ReLU(),
        MaxPool2D(2), Flatten(), Dense(18, 3, rng=rng, dtype=F64),
    ]  # fmt: skip
    model = Sequential(layers)
    x = distinct_values(rng, (2, 36)) - 3.5
    y = np.array([0, 2])
    model.loss_and_grads(x, y)
    for var in model.variables:
        analytic = var.grad.copy()
        numeric = numeric_grad(lambda: model.loss.value(model(x), y), var.value)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_logreg_is_one_sigmoid_output_and_learns_a_linear_boundary():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 1.0]) > 0).astype(np.int64)
    model = build_model("logreg", 5, 2, rng)
    assert [v.value.shape for v in model.variables] == [(5, 1), (1,)]
    opts = [make_optimizer("adam", 0.05) for _ in model.variables]
    for step in range(200):
        rows = slice((step * 40) % 400, (step * 40) % 400 + 40)
        model.loss_and_grads(x[rows], y[rows])
        for var, opt in zip(model.variables, opts, strict=True):
            var.value -= opt.delta(var.grad)
    assert model.evaluate(x, y)[1] > 0.95


def test_logreg_with_bce_refuses_more_than_two_classes_and_ce_makes_it_multinomial():
    with pytest.raises(ConfigError, match="--loss ce"):
        build_model("logreg", 5, 3, np.random.default_rng(0))
    model = build_model("logreg", 5, 3, np.random.default_rng(0), loss="ce")
    assert model.variables[0].value.shape == (5, 3)


@pytest.mark.parametrize(
    ("spec", "features", "match"),
    [
        ("cnn-mnist", 100, "28x28x1 images"),
        ("cnn-mnsit", 784, "did you mean cnn-mnist"),
        ("mlp:784,x", 784, "unknown model"),
        ([785, 10], 784, "785 inputs"),
    ],
)
def test_build_model_names_what_does_not_fit(spec, features, match):
    with pytest.raises((ConfigError, ModelError), match=match):
        build_model(spec, features, 10, np.random.default_rng(0))
