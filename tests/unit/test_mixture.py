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
