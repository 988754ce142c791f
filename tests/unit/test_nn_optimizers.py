"""psgd.nn optimizers: deltas against the textbook formulas, dtype, allocation and errors."""

from __future__ import annotations

import numpy as np
import pytest

from psgd.errors import ConfigError
from psgd.nn import OPTIMIZERS, Optimizer, make_optimizer

LR = 0.05


def reference(name: str, grads: list[np.ndarray], **opt) -> list[np.ndarray]:
    """The optimizer's update rule written out directly, one delta per gradient."""
    deltas, a, b = [], np.zeros_like(grads[0]), np.zeros_like(grads[0])
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            deltas.append(LR * g)
        elif name == "momentum":
            a = opt.get("momentum", 0.9) * a + g
            deltas.append(LR * a)
        elif name == "adam":
            b1, b2, eps = opt.get("beta1", 0.9), opt.get("beta2", 0.999), opt.get("eps", 1e-8)
            a = b1 * a + (1 - b1) * g
            b = b2 * b + (1 - b2) * g**2
            m_hat, v_hat = a / (1 - b1**t), b / (1 - b2**t)
            deltas.append(LR * m_hat / (np.sqrt(v_hat) + eps))
        elif name == "adagrad":
            a = a + g**2
            deltas.append(LR * g / (np.sqrt(a) + opt.get("eps", 1e-8)))
        elif name == "rmsprop":
            rho, eps = opt.get("rho", 0.9), opt.get("eps", 1e-8)
            a = rho * a + (1 - rho) * g**2
            deltas.append(LR * g / (np.sqrt(a) + eps))
    return deltas


CASES = [
    ("sgd", {}),
    ("momentum", {}),
    ("momentum", {"momentum": 0.5}),
    ("adam", {}),
    ("adam", {"beta1": 0.8, "beta2": 0.99, "eps": 0.1}),  # a large eps exposes where it is added
    ("adagrad", {}),
    ("adagrad", {"eps": 0.1}),
    ("rmsprop", {}),
    ("rmsprop", {"rho": 0.5, "eps": 0.1}),
]


@pytest.mark.parametrize(("name", "options"), CASES)
def test_delta_matches_reference_formula_over_several_steps(name, options):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)) * scale for scale in (1.0, 0.01, 3.0, 0.5, 1e-4)]
    opt = make_optimizer(name, learning_rate=LR, **options)
    for got, want in zip(map(opt.delta, grads), reference(name, grads, **options), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_gradient_gives_float32_delta_and_state(name):
    opt = make_optimizer(name, learning_rate=np.float64(0.01))  # numpy scalars must not upcast
    grad = np.random.default_rng(0).standard_normal(10).astype(np.float32)
    for _ in range(3):
        assert opt.delta(grad).dtype == np.float32
    assert all(state.dtype == np.float32 for state in vars(opt).get("_slots", []))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_delta_returns_a_new_array_each_call(name):
    opt = make_optimizer(name, learning_rate=0.1)
    grad = np.ones(5, np.float32)
    first = opt.delta(grad)
    kept = first.copy()
    second = opt.delta(grad)
    assert not np.shares_memory(first, second) and not np.shares_memory(first, grad)
    np.testing.assert_array_equal(first, kept)


def test_optimizer_refuses_a_gradient_of_another_shape():
    opt = make_optimizer("adam", learning_rate=0.1)
    opt.delta(np.ones(3))
    with pytest.raises(ValueError, match="one optimizer per array"):
        opt.delta(np.ones(4))


def test_registry_holds_the_five_optimizers():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "adam", "adagrad", "rmsprop"}
    assert all(issubclass(cls, Optimizer) for cls in OPTIMIZERS.values())


def test_make_optimizer_rejects_unknown_name_listing_valid_ones():
    with pytest.raises(ConfigError, match="sgd, momentum, adam, adagrad, rmsprop"):
        make_optimizer("adamw", learning_rate=0.1)


def test_make_optimizer_rejects_unknown_option_listing_valid_ones():
    with pytest.raises(ConfigError, match="'momentum'.*beta1, beta2, eps"):
        make_optimizer("adam", learning_rate=0.1, momentum=0.9)


@pytest.mark.parametrize(
    ("options", "what"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": "0.1"}, "learning_rate"),
        ({"learning_rate": None}, "learning_rate"),
        ({"learning_rate": 0.1, "beta1": 1.0}, "beta1"),
        ({"learning_rate": 0.1, "eps": -1e-8}, "eps"),
    ],
)
def test_make_optimizer_rejects_out_of_range_values(options, what):
    with pytest.raises(ConfigError, match=what):
        make_optimizer("adam", **options)


def test_optimizer_repr_shows_hyper_parameters():
    assert repr(make_optimizer("rmsprop", learning_rate=0.5)) == (
        "RMSprop(learning_rate=0.5, rho=0.9, eps=1e-08)"
    )
