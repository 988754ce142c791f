"""FedEM's mixture learner: EM gradients, local mixture weights, and learning through codecs."""

from __future__ import annotations

import numpy as np

from psgd import Parameter_Server
from psgd.job import JobSpec
from psgd.nn import MixtureMLP, build_learner, build_mlp
from psgd.train.prepare import prepare_job
from psgd.train.rounds import run_rounds


def tiny_mixture(seed: int = 0) -> MixtureMLP:
    rng = np.random.default_rng(seed)
    parts = [build_mlp([5, 4, 3], rng=rng, dtype=np.float64) for _ in range(2)]
    return MixtureMLP(parts, pi_rate=0.0)


def test_gradients_are_those_of_the_mixture_likelihood():
    model = tiny_mixture()
    model.pi = np.array([0.3, 0.7])
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    model.loss_and_grads(x, y)
    for variable in model.variables:
        analytic = variable.grad.copy()
        flat = variable.value.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 5)):
            keep = flat[i]
            flat[i] = keep + 1e-6
            up = model.evaluate(x, y)[0]
            flat[i] = keep - 1e-6
            down = model.evaluate(x, y)[0]
            flat[i] = keep
            numeric = (up - down) / 2e-6
            assert abs(numeric - analytic.reshape(-1)[i]) < 1e-5, variable.name


def test_mixture_weights_follow_the_responsibilities():
    model = tiny_mixture()
    model.pi_rate = 0.5
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((50, 5)), rng.integers(0, 3, 50)
    before = model.pi.copy()
    model.loss_and_grads(x, y)
    assert not np.allclose(model.pi, before) and np.isclose(model.pi.sum(), 1.0)


def test_build_learner_gives_one_model_or_a_mixture_with_all_variables():
    rng = np.random.default_rng(0)
    assert len(build_learner([5, 4, 3], "relu", 1, rng).variables) == 4
    mixture = build_learner([5, 4, 3], "relu", 3, rng)
    assert isinstance(mixture, MixtureMLP) and len(mixture.variables) == 12
    weights = mixture.get_weights()
    assert not np.array_equal(weights[0], weights[4])  # components start apart
    mixture.set_weights(weights)


def test_fedem_learns_in_rounds_and_is_judged_on_each_clients_held_out_data():
    spec = JobSpec(
        codec="federated.FedAvgClient", ps_codec="federated.FedAvgServer", node_count=4,
        components=2, partition="dirichlet", partition_args={"alpha": 0.5}, rounds=6,
        train_samples=8000, test_samples=1000, params={"fraction": 1.0}, batch_size=32,
        eval="clients", executors=0,
    )  # fmt: skip
    assert spec.layer_count == 12
    result = run_rounds(prepare_job(spec))
    assert result.error is None
    last = result.round_rows[-1]
    assert last["accuracy"] > 0.75
    assert last["client_accuracy_worst"] <= last["client_accuracy_p10"] <= last["accuracy"]
    assert len(result.weights[Parameter_Server]) == 12


def test_a_mixture_of_logistic_regressions_has_the_mixture_likelihood_gradients():
    """logreg's one sigmoid output is the two-class softmax of [0, z] (it failed with an
    IndexError before the codec x model matrix found it)."""
    import pytest

    from psgd.nn import build_model

    rng = np.random.default_rng(2)
    model = build_model("logreg", 5, 2, rng, components=2)
    model.pi, model.pi_rate = np.array([0.4, 0.6]), 0.0
    for component in model.components:
        component.variables[0].value[...] = rng.standard_normal((5, 1))
    x, y = rng.standard_normal((8, 5)).astype(np.float32), rng.integers(0, 2, 8)
    loss = model.loss_and_grads(x, y)
    # the likelihood by hand: p_m(1|x) = sigmoid(z_m)
    p1 = [1 / (1 + np.exp(-(x @ c.variables[0].value[:, 0] + c.variables[1].value[0])))
          for c in model.components]  # fmt: skip
    likelihood = sum(w * np.where(y == 1, p, 1 - p) for w, p in zip(model.pi, p1, strict=True))
    assert loss == pytest.approx(-np.log(likelihood).mean(), rel=1e-5)
    eps, w = 1e-3, model.components[1].variables[0]
    analytic = float(w.grad[2, 0])
    w.value[2, 0] += eps
    up = model.evaluate(x, y)[0]
    w.value[2, 0] -= 2 * eps
    down = model.evaluate(x, y)[0]
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-2, abs=1e-4)


def test_a_mixture_refuses_a_loss_without_class_probabilities():
    import pytest

    from psgd.errors import ModelError
    from psgd.nn import build_model

    with pytest.raises(ModelError, match="--components.*not mse on 10 outputs"):
        build_model([784, 16, 10], 784, 10, np.random.default_rng(0), loss="mse", components=2)
