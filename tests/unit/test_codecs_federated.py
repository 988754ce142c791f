"""The federated family: averaging and sampling maths, the server's choice, FedProx, learning."""

from __future__ import annotations

import numpy as np
import pytest

from psgd import BlockWeight, GlobalSettings, Parameter_Server
from psgd.algorithms.federated import (
    clients_per_round,
    local_epoch_steps,
    proximal_correction,
    sample_clients,
    weighted_average,
)
from psgd.job import JobSpec
from psgd.loader import resolve_codec
from psgd.testing import check_ps
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

FedAvgClient = resolve_codec("federated.FedAvgClient")
FedAvgServer = resolve_codec("federated.FedAvgServer")
FedProxClient = resolve_codec("federated.FedProxClient")
FedProxServer = resolve_codec("federated.FedProxServer")


# --- maths -------------------------------------------------------------------------------


def test_weighted_average_equals_direct_numpy():
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(4)]
    counts = [600, 1200, 37, 3000]
    result = weighted_average(arrays, counts)
    direct = np.average(np.stack(arrays).astype(np.float64), axis=0, weights=counts)
    assert result.dtype == np.float32 and result.shape == (5, 3)
    np.testing.assert_allclose(result, direct, rtol=1e-6, atol=1e-7)
    assert not np.allclose(result, np.mean(arrays, axis=0), atol=1e-3)  # the weights matter


def test_weighted_average_of_one_array_is_that_array_and_inputs_are_untouched():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    array.flags.writeable = False  # received arrays are read-only
    np.testing.assert_array_equal(weighted_average([array], [7]), array)


@pytest.mark.parametrize(
    "arrays, weights",
    [([], []), ([np.zeros(2)], [1, 2]), ([np.zeros(2), np.zeros(3)], [1, 1]),
     ([np.zeros(2)], [0]), ([np.zeros(2), np.zeros(2)], [1, -1])],
)  # fmt: skip
def test_weighted_average_rejects_bad_input(arrays, weights):
    with pytest.raises(ValueError, match="weighted_average"):
        weighted_average(arrays, weights)


@pytest.mark.parametrize(
    "fraction, clients, expected",
    [(0.25, 20, 5), (1.0, 20, 20), (0.1, 4, 1), (0.01, 20, 1), (0.25, 10, 3), (0.5, 5, 3)],
)
def test_clients_per_round_is_rounded_fraction_at_least_one(fraction, clients, expected):
    assert clients_per_round(fraction, clients) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_clients_per_round_rejects_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match="fraction"):
        clients_per_round(fraction, 20)


def test_sample_clients_distinct_reproducible_and_varying_by_round():
    clients = list(range(20))
    rounds = [sample_clients(clients, 0.25, r, seed=3) for r in range(10)]
    for chosen in rounds:
        assert len(chosen) == 5 == len(set(chosen))
        assert chosen == sorted(chosen) and set(chosen) <= set(clients)
    assert rounds == [sample_clients(clients, 0.25, r, seed=3) for r in range(10)]
    assert len({tuple(c) for c in rounds}) > 5
    assert rounds != [sample_clients(clients, 0.25, r, seed=4) for r in range(10)]
    assert sample_clients(clients, 1.0, 7) == clients
    assert len(sample_clients(clients, 0.001, 0)) == 1


def test_sample_clients_is_uniform_over_many_rounds():
    counts = np.zeros(8)
    for r in range(2000):
        counts[sample_clients(list(range(8)), 0.25, r)] += 1
    np.testing.assert_allclose(counts / 2000, 0.25, atol=0.04)


def test_local_epoch_steps_is_the_largest_clients_epoch():
    assert local_epoch_steps([3000, 2999, 100], 10) == 300
    assert local_epoch_steps([95, 20], 32) == 3
    assert local_epoch_steps([], 32) is None
    assert local_epoch_steps([100], 0) is None


def test_proximal_correction_formula():
    rng = np.random.default_rng(2)
    content = rng.standard_normal((4, 3)).astype(np.float32)
    anchor = rng.standard_normal((4, 3)).astype(np.float32)
    result = proximal_correction(content, anchor, learn_rate=0.1, mu=0.5)
    np.testing.assert_allclose(result, content - 0.1 * 0.5 * (content - anchor), rtol=1e-6)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(proximal_correction(content, anchor, 0.1, 0.0), content)
    np.testing.assert_allclose(proximal_correction(content, anchor, 1.0, 1.0), anchor, atol=1e-6)


# --- codecs --------------------------------------------------------------------------------


def _settings(nodes=4, params=None, samples=None, learn_rate=0.1, batch_size=10):
    settings = GlobalSettings(nodes, params=params, node_samples=samples, learn_rate=learn_rate,
                              batch_size=batch_size)  # fmt: skip
    GlobalSettings.set_default(settings)
    return settings


def test_server_averages_only_the_sampled_clients_weighted_by_samples():
    samples = [100, 300, 50, 550, 1000]
    _settings(5, {"fraction": 0.4, "seed": 9}, samples)
    server = FedAvgServer(Parameter_Server)
    weights = [np.full((2, 2), float(n + 1), dtype=np.float32) for n in range(5)]
    for round_no in range(3):
        replies = [server.receive_blocks((round_no, n, weights[n], samples[n])) for n in range(5)]
        assert replies[:-1] == [None] * 4
        package = replies[-1]
        assert package.target() == [0, 1, 2, 3, 4]
        reply_round, average = package.content
        sampled = sample_clients(range(5), 0.4, round_no, seed=9)
        assert reply_round == round_no and len(sampled) == 2
        expected = sum(samples[n] * (n + 1.0) for n in sampled) / sum(samples[n] for n in sampled)
        np.testing.assert_allclose(average, expected, rtol=1e-6)
        everyone = sum(samples[n] * (n + 1.0) for n in range(5)) / sum(samples)
        assert not np.allclose(average, everyone)


def test_server_keeps_rounds_apart_and_ignores_unknown_clients():
    _settings(2, {"fraction": 1.0}, [1, 1])
    server = FedAvgServer(Parameter_Server)
    ones, threes = np.ones(3, np.float32), np.full(3, 3.0, np.float32)
    assert server.receive_blocks((0, 0, ones, 1)) is None
    assert server.receive_blocks((0, 5, threes, 1)) is None
    assert server.receive_blocks((1, 0, threes, 1)) is None  # node 0 is a round ahead
    round_no, average = server.receive_blocks((0, 1, threes, 1)).content
    assert round_no == 0
    np.testing.assert_allclose(average, 2.0)


def test_server_rejects_bad_fraction_at_start():
    _settings(4, {"fraction": 2.0})
    with pytest.raises(ValueError, match="fraction"):
        FedAvgServer(Parameter_Server)


def test_client_sends_every_local_steps_and_replaces_weights_with_the_average():
    _settings(2, {"local_steps": 3}, [40, 60])
    client = FedAvgClient(1)
    for step in range(2):
        assert client.update_blocks(BlockWeight(np.full(2, step, np.float32), 1)) is None
        np.testing.assert_array_equal(client.get_result(), [step, step])
    package = client.update_blocks(BlockWeight(np.full(2, 5.0, np.float32), 1))
    assert package.target() == [Parameter_Server] and not client.is_done()
    round_no, node, weights, n_samples = package.content
    assert (round_no, node, n_samples) == (0, 1, 60)
    np.testing.assert_array_equal(weights, [5.0, 5.0])
    client.receive_blocks((7, np.zeros(2, np.float32)))  # a stale round is dropped
    assert not client.is_done()
    average = np.full(2, 4.0, np.float32)
    average.flags.writeable = False
    client.receive_blocks((0, average))
    np.testing.assert_array_equal(client.get_result(), [4.0, 4.0])


def test_client_takes_a_late_average_but_never_an_older_or_repeated_one():
    _settings(2, {"local_steps": 1}, [1, 1])
    client = FedAvgClient(0)
    for value in (1.0, 2.0):  # ASGD: round 1 is sent before round 0's average arrives
        client.update_blocks(BlockWeight(np.full(2, value, np.float32), 0))
    client.receive_blocks((1, np.full(2, 8.0, np.float32)))
    np.testing.assert_array_equal(client.get_result(), [8.0, 8.0])
    for stale in (1, 0):
        client.receive_blocks((stale, np.zeros(2, np.float32)))
        assert not client.is_done()
    client.update_blocks(BlockWeight(np.full(2, 3.0, np.float32), 0))
    client.receive_blocks((2, np.full(2, 9.0, np.float32)))
    np.testing.assert_array_equal(client.get_result(), [9.0, 9.0])


def test_client_refuses_delta_exchange():
    _settings(2).exchange = "delta"
    with pytest.raises(ValueError, match="--exchange params or auto"):
        FedAvgClient(0)


def test_server_draws_with_the_job_seed_unless_a_seed_param_is_given():
    _settings(4).seed = 11
    assert FedAvgServer(Parameter_Server).seed == 11
    _settings(4, {"seed": 3}).seed = 11
    assert FedAvgServer(Parameter_Server).seed == 3


def test_client_default_round_is_one_local_epoch_of_the_largest_client():
    _settings(3, None, [95, 120, 30], batch_size=32)
    assert FedAvgClient(0).local_steps == 4


class CheckedFedAvgClient(FedAvgClient):
    """FedAvg's client with the harness's ``expected`` hook (no sample counts: equal weights)."""

    def expected(self, blocks):
        settings = GlobalSettings.get_default()
        own = lambda node: np.mean([blocks[b] for b in settings.node_2_block[node]], axis=0)  # noqa: E731
        if self.step % self.local_steps:
            return own(self.node_id)
        fraction = GlobalSettings.get_params("fraction", 1.0)
        sampled = sample_clients(settings.nodes, fraction, self.round - 1, settings.seed)
        return np.mean([own(n) for n in sampled], axis=0)


@pytest.mark.parametrize("redundancy", [1, 2])
def test_fedavg_passes_the_ps_harness_with_sampled_averages(redundancy):
    params = {"fraction": 0.5, "local_steps": 2}
    check = check_ps(CheckedFedAvgClient, FedAvgServer, nodes=6, rounds=6, params=params,
                     redundancy=redundancy, seed=5)  # fmt: skip
    check.assert_ok()
    assert "equal to the codec's expected()" in check.reason
    assert check.server_packages == 3 * 6  # one broadcast to 6 clients per 2 batches


def test_fedprox_client_pulls_local_steps_towards_the_global_model():
    _settings(2, {"mu": 0.5, "local_steps": 2}, [10, 10], learn_rate=0.1)
    client = FedProxClient(0)
    client.initial_weights(np.zeros(3, np.float32))
    client.update_blocks(BlockWeight(np.full(3, 2.0, np.float32), 0))
    np.testing.assert_allclose(client.get_result(), 2.0 - 0.1 * 0.5 * 2.0)
    sent = client.update_blocks(BlockWeight(np.full(3, 4.0, np.float32), 0))
    np.testing.assert_allclose(sent.content[2], 4.0 - 0.05 * 4.0)  # corrected before sending
    client.receive_blocks((0, np.full(3, 10.0, np.float32)))
    np.testing.assert_allclose(client.get_result(), 10.0)
    client.update_blocks(BlockWeight(np.full(3, 12.0, np.float32), 0))
    np.testing.assert_allclose(client.get_result(), 12.0 - 0.05 * (12.0 - 10.0))


def test_fedprox_with_mu_zero_is_fedavg_on_the_harness():
    check = check_ps(FedProxClient, FedProxServer, nodes=4, rounds=4,
                     params={"mu": 0.0, "local_steps": 1})  # fmt: skip
    check.assert_ok()


# --- whole jobs on a slice of MNIST ----------------------------------------------------------

SMALL = {"node_count": 4, "epochs": 2, "train_samples": 8000, "test_samples": 1000}


@pytest.mark.parametrize(
    "client, server, params, optimizer, learn_rate",
    [
        ("federated.FedAvgClient", "federated.FedAvgServer",
         {"fraction": 0.5, "local_steps": 21}, "adam", 0.002),
        ("federated.FedProxClient", "federated.FedProxServer",
         {"fraction": 0.75, "mu": 0.1}, "sgd", 0.1),
    ],
)  # fmt: skip
def test_federated_jobs_learn_mnist(client, server, params, optimizer, learn_rate):
    spec = JobSpec(codec=client, ps_codec=server, params=params, optimizer=optimizer,
                   learn_rate=learn_rate, batch_size=32, **SMALL)  # fmt: skip
    result = simulate(prepare_job(spec))
    assert result.error is None
    accuracies = [r.accuracy for r in result.reports]
    assert min(accuracies) >= 0.8, accuracies
    # 2 epochs of 63 batches: the last batch ends a round, so every client holds the average
    first, *others = result.weights.values()
    for weights in others:
        for a, b in zip(first, weights, strict=True):
            np.testing.assert_array_equal(a, b)
