"""The federated family: averaging and sampling maths, the server's choice, FedProx, learning."""

from __future__ import annotations

import numpy as np
import pytest

from psgd import BlockWeight, GlobalSettings, Parameter_Server
from psgd.algorithms.federated import (
    RunningAverage,
    clients_per_round,
    local_epoch_steps,
    proximal_correction,
    sample_clients,
    weighted_average,
)
from psgd.loader import resolve_codec
from psgd.testing import check_ps

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


def test_running_average_is_exactly_the_weighted_average():
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(7)]
    weights = [int(w) for w in rng.integers(1, 600, 7)]
    running = RunningAverage()
    for array, weight in zip(arrays, weights, strict=True):
        running.add(array, weight)
    result = running.result()
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, weighted_average(arrays, weights))
    with pytest.raises(ValueError, match="nothing with a positive weight"):
        RunningAverage().result()
    with pytest.raises(ValueError, match="shape"):
        running.add(np.zeros(4, np.float32), 1)


# --- codecs --------------------------------------------------------------------------------


def _settings(nodes=4, params=None, samples=None, learn_rate=0.1, batch_size=10):
    settings = GlobalSettings(nodes, params=params, node_samples=samples, learn_rate=learn_rate,
                              batch_size=batch_size)  # fmt: skip
    GlobalSettings.set_default(settings)
    return settings


def _model(value=0.0, shape=(2, 2)):
    return np.full(shape, value, dtype=np.float32)


def test_server_sends_the_model_only_to_the_picked_clients():
    _settings(10, {"fraction": 0.3, "seed": 4}, [10] * 10)
    server = FedAvgServer(Parameter_Server)
    package = server.initial_weights(_model(1.0))
    assert package.target() == sample_clients(range(10), 0.3, 0, seed=4)
    assert len(package.target()) == 3
    round_no, model = package.content
    assert round_no == 0
    np.testing.assert_array_equal(model, 1.0)
    assert not server.is_done()


def test_server_averages_the_picked_clients_weighted_by_samples_and_publishes_the_model():
    samples = [100, 300, 50, 550, 1000]
    _settings(5, {"fraction": 0.4, "seed": 9}, samples)
    server = FedAvgServer(Parameter_Server)
    picked = server.initial_weights(_model()).target()
    for round_no in range(3):
        assert picked == sample_clients(range(5), 0.4, round_no, seed=9)
        replies = [
            server.receive_blocks((round_no, n, _model(n + 1.0), samples[n])) for n in picked
        ]
        assert replies[:-1] == [None] * (len(picked) - 1)
        expected = sum(samples[n] * (n + 1.0) for n in picked) / sum(samples[n] for n in picked)
        np.testing.assert_allclose(server.get_result(), expected, rtol=1e-6)  # the global model
        next_round, model = replies[-1].content
        assert next_round == round_no + 1
        np.testing.assert_allclose(model, expected, rtol=1e-6)
        picked = replies[-1].target()


def test_server_drops_updates_of_other_rounds_unpicked_clients_and_repeats():
    _settings(4, {"fraction": 0.5, "seed": 1}, [1] * 4)
    server = FedAvgServer(Parameter_Server)
    a, b = server.initial_weights(_model()).target()
    outsider = next(n for n in range(4) if n not in (a, b))
    assert server.receive_blocks((0, outsider, _model(9.0), 1)) is None
    assert server.receive_blocks((1, a, _model(9.0), 1)) is None  # a round ahead
    assert server.receive_blocks((0, a, _model(1.0), 1)) is None
    assert server.receive_blocks((0, a, _model(7.0), 1)) is None  # a repeat is dropped
    assert server.receive_blocks((0, b, _model(3.0), 1)) is not None
    np.testing.assert_allclose(server.get_result(), 2.0)


def test_at_the_deadline_the_server_averages_the_updates_that_came_and_drops_late_ones():
    samples = [10, 20, 30, 40, 50, 60]
    _settings(6, {"fraction": 0.5, "seed": 2}, samples)
    server = FedAvgServer(Parameter_Server)
    first, second, third = server.initial_weights(_model(5.0)).target()
    assert server.receive_blocks((0, third, _model(3.0), samples[third])) is None
    assert server.receive_blocks((0, first, _model(1.0), samples[first])) is None
    package = server.round_deadline()  # `second` never answered
    expected = (samples[first] * 1.0 + samples[third] * 3.0) / (samples[first] + samples[third])
    np.testing.assert_allclose(server.get_result(), expected, rtol=1e-6)
    round_no, model = package.content
    assert round_no == 1 and package.target() == sample_clients(range(6), 0.5, 1, seed=2)
    assert server.receive_blocks((0, second, _model(9.0), samples[second])) is None  # late
    assert not server.is_done()


def test_a_deadline_with_no_update_keeps_the_global_model():
    _settings(4, {"fraction": 0.5, "seed": 1}, [1] * 4)
    server = FedAvgServer(Parameter_Server)
    server.initial_weights(_model(4.0))
    round_no, model = server.round_deadline().content
    np.testing.assert_array_equal(server.get_result(), 4.0)
    assert round_no == 1
    np.testing.assert_array_equal(model, 4.0)


def test_server_rejects_bad_fraction_at_start():
    _settings(4, {"fraction": 2.0})
    with pytest.raises(ValueError, match="fraction"):
        FedAvgServer(Parameter_Server)


def test_client_waits_trains_its_local_steps_from_the_model_then_sends_and_waits_again():
    _settings(2, {"local_steps": 3}, [40, 60])
    client = FedAvgClient(1)
    assert FedAvgClient.waits_for_model and not client.is_done()
    model = _model(4.0, (2,))
    model.flags.writeable = False  # as received from the wire
    client.receive_blocks((0, model))
    np.testing.assert_array_equal(client.get_result(), [4.0, 4.0])
    for step in range(2):
        assert client.update_blocks(BlockWeight(_model(step, (2,)), 1)) is None
        np.testing.assert_array_equal(client.get_result(), [step, step])
    package = client.update_blocks(BlockWeight(_model(5.0, (2,)), 1))
    assert package.target() == [Parameter_Server] and not client.is_done()
    round_no, node, weights, n_samples = package.content
    assert (round_no, node, n_samples) == (0, 1, 60)
    np.testing.assert_array_equal(weights, [5.0, 5.0])
    client.receive_blocks((0, _model(8.0, (2,))))  # the same round again is dropped
    assert not client.is_done()
    client.receive_blocks((3, _model(9.0, (2,))))  # picked again, rounds later
    np.testing.assert_array_equal(client.get_result(), [9.0, 9.0])


def test_client_local_steps_follow_local_epochs_or_one_epoch_of_its_own_data():
    settings = _settings(3, None, [95, 120, 30], batch_size=32)
    assert [FedAvgClient(n).local_steps for n in range(3)] == [3, 4, 1]
    settings.local_epochs = 2.5
    assert [FedAvgClient(n).local_steps for n in range(3)] == [8, 10, 3]
    settings.local_epochs = 0.0
    _settings(3, {"local_steps": 7}, [95, 120, 30], batch_size=32)
    assert FedAvgClient(2).local_steps == 7


def test_client_refuses_delta_exchange():
    _settings(2).exchange = "delta"
    with pytest.raises(ValueError, match="--exchange params or auto"):
        FedAvgClient(0)


def test_server_draws_with_the_job_seed_unless_a_seed_param_is_given():
    _settings(4).seed = 11
    assert FedAvgServer(Parameter_Server).seed == 11
    _settings(4, {"seed": 3}).seed = 11
    assert FedAvgServer(Parameter_Server).seed == 3


def test_fedavg_on_the_ps_harness_trains_only_picked_clients():
    check = check_ps(FedAvgClient, FedAvgServer, nodes=6, rounds=6,
                     params={"fraction": 0.5, "local_steps": 2}, seed=5)  # fmt: skip
    check.assert_ok()
    updates = [r for r in check.records if r.packages]
    # a picked client sends one update per 2 local steps; never more than 3 clients a round
    assert updates and all(r.packages == 1 for r in updates)
    per_round: dict[int, int] = {}
    for record in updates:
        per_round[record.round] = per_round.get(record.round, 0) + 1
    assert max(per_round.values()) <= 3


def test_fedprox_client_pulls_local_steps_towards_the_model_it_was_sent():
    _settings(2, {"mu": 0.5, "local_steps": 2}, [10, 10], learn_rate=0.1)
    client = FedProxClient(0)
    client.receive_blocks((0, np.zeros(3, np.float32)))
    client.get_result()
    client.update_blocks(BlockWeight(np.full(3, 2.0, np.float32), 0))
    np.testing.assert_allclose(client.get_result(), 2.0 - 0.1 * 0.5 * 2.0)
    sent = client.update_blocks(BlockWeight(np.full(3, 4.0, np.float32), 0))
    np.testing.assert_allclose(sent.content[2], 4.0 - 0.05 * 4.0)  # corrected before sending
    assert client.anchor is None  # a waiting client keeps no model
    client.receive_blocks((1, np.full(3, 10.0, np.float32)))
    np.testing.assert_allclose(client.get_result(), 10.0)
    client.update_blocks(BlockWeight(np.full(3, 12.0, np.float32), 0))
    np.testing.assert_allclose(client.get_result(), 12.0 - 0.05 * (12.0 - 10.0))


def test_fedprox_with_mu_zero_passes_the_harness():
    check = check_ps(FedProxClient, FedProxServer, nodes=4, rounds=4,
                     params={"mu": 0.0, "local_steps": 1, "fraction": 1.0})  # fmt: skip
    check.assert_ok()
