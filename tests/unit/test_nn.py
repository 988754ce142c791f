"""psgd.nn: gradients of every layer and loss against finite differences, and the model API."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import numeric_grad

from psgd.errors import ConfigError, ModelError
from psgd.nn import (
    MSE,
    Dense,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
    Variable,
    build_mlp,
    make_optimizer,
)

F64 = np.float64


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random values with |x| >= 0.1, so finite differences never straddle the ReLU kink."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))


LAYERS = {
    "dense": lambda rng: Dense(4, 3, rng=rng, dtype=F64),
    "relu": lambda rng: ReLU(),
    "tanh": lambda rng: Tanh(),
    "sigmoid": lambda rng: Sigmoid(),
    "softmax": lambda rng: Softmax(),
}


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(0)
    layer = LAYERS[kind](rng)
    x = away_from_zero(rng, (5, 4))
    upstream = rng.standard_normal(layer.forward(x).shape)

    def f():
        return float(np.sum(layer.forward(x) * upstream))

    layer.forward(x)
    dx = layer.backward(upstream.copy()).copy()
    analytic = {var.name: var.grad.copy() for var in layer.variables}

    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    for var in layer.variables:
        np.testing.assert_allclose(
            analytic[var.name], numeric_grad(f, var.value), rtol=1e-6, atol=1e-8
        )


def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((6, 4)) * 3, rng.integers(0, 4, 6)
    loss = SoftmaxCrossEntropy()
    grad = loss.value_and_grad(z, y)[1].copy()
    np.testing.assert_allclose(
        grad, numeric_grad(lambda: loss.value(z, y), z), rtol=1e-6, atol=1e-9
    )


def test_mse_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    loss = MSE()
    grad = loss.value_and_grad(pred, target)[1].copy()
    np.testing.assert_allclose(
        grad, numeric_grad(lambda: loss.value(pred, target), pred), rtol=1e-6
    )


def test_mse_is_half_squared_error_summed_over_outputs_and_averaged_over_batch():
    pred, target = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 3.0]])
    assert MSE().value(pred, target) == pytest.approx((0.5 * 5 + 0.5 * 9) / 2)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]], dtype=np.float32)
    value, grad = SoftmaxCrossEntropy().value_and_grad(z, np.array([0, 2]))
    assert value == pytest.approx(np.log(3) / 2, rel=1e-5)
    assert np.isfinite(grad).all()


def test_softmax_cross_entropy_rejects_labels_out_of_range():
    z = np.zeros((2, 3), np.float32)
    for bad in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
            SoftmaxCrossEntropy().value_and_grad(z, np.array(bad))


def whole_model_gradient_check(model: Sequential, x: np.ndarray, y: np.ndarray) -> None:
    model.loss_and_grads(x, y)
    analytic = [var.grad.copy() for var in model.variables]
    for var, grad in zip(model.variables, analytic, strict=True):
        numeric = numeric_grad(lambda: model.loss.value(model(x), y), var.value)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8, err_msg=var.name)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_mlp_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(3)
    model = build_mlp([4, 5, 3, 3], activation, rng=rng, dtype=F64)
    whole_model_gradient_check(model, rng.standard_normal((7, 4)), rng.integers(0, 3, 7))


def test_hand_built_softmax_mse_model_gradients_match_finite_differences():
    rng = np.random.default_rng(4)
    layers = [
        Tanh(),
        Dense(4, 5, rng=rng, dtype=F64),
        Sigmoid(),
        Dense(5, 3, rng=rng, dtype=F64),
        Softmax(),
    ]
    model = Sequential(layers, loss=MSE())
    whole_model_gradient_check(model, rng.standard_normal((6, 4)), rng.random((6, 3)))


def test_build_mlp_layers_variables_and_attributes():
    model = build_mlp([6, 5, 4, 3], activation="tanh", rng=np.random.default_rng(0))
    assert [type(layer) for layer in model.layers] == [Dense, Tanh, Dense, Tanh, Dense]
    assert [v.name for v in model.variables] == [
        "dense0.W", "dense0.b", "dense1.W", "dense1.b", "dense2.W", "dense2.b"
    ]  # fmt: skip
    assert all(isinstance(v, Variable) for v in model.variables)
    assert model.parameters() == model.variables
    assert model.layer_sizes == [6, 5, 4, 3]
    assert model.activation == "tanh"
    assert model.dtype == np.float32
    assert isinstance(model.loss, SoftmaxCrossEntropy)
    assert repr(model).startswith("Sequential([Dense(6, 5), Tanh(), Dense(5, 4)")


def test_build_mlp_initialises_from_the_injected_rng_with_zero_biases():
    a = build_mlp([50, 40, 3], rng=np.random.default_rng(7))
    b = build_mlp([50, 40, 3], rng=np.random.default_rng(7))
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    W0, b0, W1, b1 = a.get_weights()
    assert not b0.any() and not b1.any()
    assert np.abs(W0).max() <= np.sqrt(6 / 50) and np.abs(W0).max() > 0.9 * np.sqrt(6 / 50)  # He
    assert np.abs(W1).max() <= np.sqrt(6 / 43) and np.abs(W1).max() > 0.8 * np.sqrt(
        6 / 43
    )  # Glorot


def test_build_mlp_rejects_unknown_activation_listing_valid_ones():
    with pytest.raises(ConfigError, match="relu, tanh, sigmoid"):
        build_mlp([3, 2], activation="gelu")


@pytest.mark.parametrize("sizes", [[3], [3, 0, 2], [3, 2.5]])
def test_build_mlp_rejects_bad_layer_sizes(sizes):
    with pytest.raises(ModelError, match="layer_sizes"):
        build_mlp(sizes)


def test_sequential_rejects_dense_layers_that_do_not_chain():
    with pytest.raises(ModelError, match="outputs 3 values"):
        Sequential([Dense(4, 3), ReLU(), Dense(5, 2)])


def test_training_step_keeps_float32_everywhere():
    rng = np.random.default_rng(0)
    model = build_mlp([8, 16, 4], rng=rng)
    opts = [make_optimizer("adam", learning_rate=1e-3) for _ in model.variables]
    x = rng.standard_normal((5, 8))  # float64 input is converted, not propagated
    loss = model.loss_and_grads(x, rng.integers(0, 4, 5))
    assert type(loss) is float
    for var, opt in zip(model.variables, opts, strict=True):
        delta = opt.delta(var.grad)
        var.value -= delta
        assert var.value.dtype == var.grad.dtype == delta.dtype == np.float32
    assert model(x).dtype == np.float32


def test_loss_and_grads_fills_the_existing_grad_arrays():
    rng = np.random.default_rng(0)
    model = build_mlp([3, 4, 2], rng=rng)
    grads = [var.grad for var in model.variables]
    model.loss_and_grads(rng.standard_normal((6, 3)).astype(np.float32), rng.integers(0, 2, 6))
    assert all(var.grad is g for var, g in zip(model.variables, grads, strict=True))
    assert all(g.any() for g in grads)


def test_model_call_returns_a_fresh_array_each_time():
    rng = np.random.default_rng(0)
    model = build_mlp([3, 4, 2], rng=rng)
    x1, x2 = rng.standard_normal((2, 5, 3)).astype(np.float32)
    first = model(x1)
    kept = first.copy()
    model(x2)
    np.testing.assert_array_equal(first, kept)


def test_evaluate_averages_over_uneven_batches():
    rng = np.random.default_rng(0)
    model = build_mlp([3, 4, 3], rng=rng, dtype=F64)
    x, y = rng.standard_normal((25, 3)), rng.integers(0, 3, 25)
    loss, acc = model.evaluate(x, y, batch_size=10)
    logits = model(x)
    assert loss == pytest.approx(SoftmaxCrossEntropy().value(logits, y))
    assert acc == pytest.approx(np.mean(logits.argmax(1) == y))


def test_evaluate_with_mse_compares_argmax_of_targets():
    model = Sequential([Dense(2, 2, rng=np.random.default_rng(0))], loss=MSE())
    model.set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    x = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    targets = np.array([[1, 0], [0, 1], [0, 1]], np.float32)
    assert model.evaluate(x, targets)[1] == pytest.approx(2 / 3)


def test_get_weights_copies_and_set_weights_copies_into_place():
    model = build_mlp([3, 2], rng=np.random.default_rng(0))
    weights = model.get_weights()
    weights[0][...] = 5.0
    assert not (model.variables[0].value == 5.0).any()
    array = model.variables[0].value
    model.set_weights(weights)
    assert model.variables[0].value is array and (array == 5.0).all()


@pytest.mark.parametrize("change", ["shape", "dtype", "count"])
def test_set_weights_rejects_mismatch_and_leaves_model_unchanged(change):
    model = build_mlp([3, 2], rng=np.random.default_rng(0))
    before = model.get_weights()
    new = [w + 1 for w in before]
    if change == "shape":
        new[1] = np.zeros(3, np.float32)
    elif change == "dtype":
        new[1] = new[1].astype(F64)
    else:
        new = new[:1]
    with pytest.raises(ModelError, match="set_weights"):
        model.set_weights(new)
    for w, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)


def test_loss_and_grads_rejects_inputs_of_the_wrong_width():
    model = build_mlp([3, 2], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        model.loss_and_grads(np.zeros((4, 5), np.float32), np.zeros(4, int))


def test_small_mlp_learns_three_gaussian_blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    y = rng.integers(0, 3, 300)
    x = (centers[y] + rng.standard_normal((300, 2))).astype(np.float32)
    model = build_mlp([2, 16, 3], rng=rng)
    opts = [make_optimizer("adam", learning_rate=0.05) for _ in model.variables]
    first, _ = model.evaluate(x, y)
    for step in range(150):
        batch = slice(30 * (step % 10), 30 * (step % 10 + 1))
        model.loss_and_grads(x[batch], y[batch])
        for var, opt in zip(model.variables, opts, strict=True):
            var.value -= opt.delta(var.grad)
    last, acc = model.evaluate(x, y)
    assert last < 0.2 * first
    assert acc > 0.95
