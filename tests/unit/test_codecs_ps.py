"""Parameter-server codecs: sync and async PS, DC-ASGD; maths, harness checks, MNIST learning."""

from __future__ import annotations

import numpy as np
import pytest

from psgd import BlockWeight, Parameter_Server
from psgd.algorithms.averaging import dc_asgd_update
from psgd.job import JobSpec
from psgd.loader import resolve_codec
from psgd.settings import GlobalSettings
from psgd.testing import check_ps
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

SHAPE = (4, 4)


def _settings(nodes=2, learn_rate=0.1, **params):
    GlobalSettings.set_default(GlobalSettings(nodes, params=params, learn_rate=learn_rate))


# --- DC-ASGD maths ------------------------------------------------------------------------------


def test_dc_asgd_update_matches_the_paper_formula_by_hand():
    weights, backup = np.array([1.0, 2.0]), np.array([0.5, 2.5])
    grad = np.array([2.0, -1.0])
    # W - eta * (g + lam * g * g * (W - W_bak)) with eta 0.1, lam 0.5:
    # [1 - 0.1 * (2 + 0.5 * 4 * 0.5), 2 - 0.1 * (-1 + 0.5 * 1 * -0.5)] = [0.7, 2.125]
    result = dc_asgd_update(weights, backup, grad, learn_rate=0.1, lam=0.5)
    np.testing.assert_allclose(result, [0.7, 2.125])


def test_dc_asgd_is_plain_sgd_without_delay_or_without_lambda():
    rng = np.random.default_rng(1)
    weights, backup, grad = rng.standard_normal((3, 5))
    np.testing.assert_allclose(
        dc_asgd_update(weights, weights, grad, 0.1, 0.04), weights - 0.1 * grad
    )
    np.testing.assert_allclose(
        dc_asgd_update(weights, backup, grad, 0.1, 0.0), weights - 0.1 * grad
    )


# --- asynchronous PS, driven by hand --------------------------------------------------------------


def _server(name="AsyncPSServer", start=(0.0, 0.0)):
    server = resolve_codec(f"ps.{name}")(Parameter_Server)
    server.initial_weights(np.array(start))
    return server


def test_async_server_applies_steps_in_arrival_order_and_replies_to_the_sender_only():
    _settings(nodes=3)
    server = _server(start=(10.0, 10.0))
    replies = [
        server.receive_blocks((sender, np.array(step)))
        for sender, step in [(1, [1.0, 0.0]), (0, [0.0, 2.0]), (1, [3.0, 3.0])]
    ]
    assert [r.target() for r in replies] == [[1], [0], [1]]
    expected = [[9.0, 10.0], [9.0, 8.0], [6.0, 5.0]]
    for reply, weights in zip(replies, expected, strict=True):
        np.testing.assert_array_equal(reply.content, weights)


def test_async_client_turns_the_server_weights_into_the_delta_the_trainer_subtracts():
    _settings()
    client = resolve_codec("ps.AsyncPSClient")(0)
    node = np.array([1.0, 1.0])
    client.initial_weights(node.copy())
    package = client.update_blocks(BlockWeight(np.array([0.5, 0.25]), 0))
    assert package.target() == [Parameter_Server]
    np.testing.assert_array_equal(package.content[1], [0.5, 0.25])
    assert not client.is_done()  # under ssgd the trainer waits for the reply
    client.receive_blocks(np.array([0.25, 0.5]))  # the server's W, others' steps included
    node -= client.get_result()
    np.testing.assert_array_equal(node, [0.25, 0.5])


def test_async_client_keeps_its_own_steps_that_the_lagging_server_has_not_applied():
    _settings()
    client = resolve_codec("ps.AsyncPSClient")(0)
    node = np.zeros(2)
    client.initial_weights(node.copy())
    client.update_blocks(BlockWeight(np.array([1.0, 0.0]), 0))  # asgd: the trainer goes on
    assert not client.is_done()
    client.update_blocks(BlockWeight(np.array([0.0, 1.0]), 0))  # applied locally meanwhile
    client.update_blocks(BlockWeight(np.array([0.0, 2.0]), 0))
    node -= client.get_result()
    np.testing.assert_array_equal(node, [0.0, -3.0])
    client.receive_blocks(np.array([-1.0, 0.0]))  # W after the first step only
    node -= client.get_result()
    np.testing.assert_array_equal(node, [-1.0, -3.0])
    client.receive_blocks(np.array([-1.0, -1.0]))
    client.receive_blocks(np.array([-2.0, -3.0]))  # W with every step and another worker's
    node -= client.get_result()
    np.testing.assert_array_equal(node, [-2.0, -3.0])
    assert client.local == 0.0 and not client.in_flight


def test_dcasgd_server_compensates_a_stale_gradient_with_the_weights_its_worker_had():
    _settings(nodes=2, learn_rate=0.1, dc_lambda=0.5)
    server = _server("DCASGDServer", start=(1.0, 1.0))
    w0 = np.array([1.0, 1.0])
    step0, step1 = np.array([0.2, -0.1]), np.array([0.1, 0.3])
    first = server.receive_blocks((0, step0)).content  # computed at w0, nothing happened since
    np.testing.assert_allclose(first, w0 - step0)
    second = server.receive_blocks((1, step1)).content  # computed at w0, but W moved by step0
    g1 = step1 / 0.1
    np.testing.assert_allclose(second, first - 0.1 * (g1 + 0.5 * g1 * g1 * (first - w0)))
    third = server.receive_blocks((1, step1)).content  # worker 1 now holds `second`
    np.testing.assert_allclose(third, second - step1)


def test_dcasgd_server_needs_a_learning_rate_and_says_how_to_give_one():
    check = check_ps("ps.AsyncPSClient", "ps.DCASGDServer", params={"learn_rate": 0})
    assert not check.passed
    assert "DCASGDServer: needs the job's learning rate" in check.reason
    assert "--param dc_learn_rate" in check.reason
    check_ps("ps.AsyncPSClient", "ps.DCASGDServer", params={"dc_learn_rate": 0.1}).assert_ok()
    check_ps("ps.AsyncPSClient", "ps.DCASGDServer").assert_ok()  # the harness's default 0.01


# --- codec harness --------------------------------------------------------------------------------


def _checked_async_client(apply):
    """An ``AsyncPSClient`` whose expected() replays the server with plain numpy.

    In the ssgd harness every node steps in node order and the server takes the steps in
    that order; both start at zeros (no initial_weights hook). ``apply(W, sender, step)`` is
    the server's rule; the result is the node's old weights minus the W it is sent.
    """

    class Checked(resolve_codec("ps.AsyncPSClient")):  # type: ignore[misc]
        def __init__(self, node_id):
            super().__init__(node_id)
            self.server, self.mine, self.backups = np.zeros(SHAPE), np.zeros(SHAPE), {}

        def expected(self, blocks):
            for sender in sorted(blocks):
                self.server = apply(self, self.server, sender, blocks[sender])
                if sender == self.node_id:
                    result, self.mine = self.mine - self.server, self.server
            return result

    return Checked


def _sgd(checked, weights, sender, step):
    return weights - step


def _dc_asgd(checked, weights, sender, step):
    grad = step / 1.0  # learn_rate 1.0, lambda 0.5 (see the test)
    backup = checked.backups.get(sender, np.zeros(SHAPE))
    checked.backups[sender] = weights - 1.0 * (grad + 0.5 * grad * grad * (weights - backup))
    return checked.backups[sender]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("apply", "server", "params"),
    [
        (_sgd, "ps.AsyncPSServer", {}),
        (_dc_asgd, "ps.DCASGDServer", {"dc_lambda": 0.5, "learn_rate": 1.0}),
    ],
)
def test_async_servers_harness_matches_a_replay_in_arrival_order(apply, server, params):
    check = check_ps(_checked_async_client(apply), server, rounds=6, params=params)
    check.assert_ok()
    assert "equal to the codec's expected()" in check.reason


@pytest.mark.timeout(30)
def test_async_ps_passes_the_harness_with_late_shuffled_replies():
    check_ps("ps.AsyncPSClient", "ps.AsyncPSServer", rounds=8, sync="asgd").assert_ok()


@pytest.mark.timeout(30)
def test_gradient_ps_harness_replies_with_the_mean_of_the_round():
    class Checked(resolve_codec("ps.GradientPSClient")):  # type: ignore[misc]
        def expected(self, blocks):
            return np.mean([blocks[b] for b in sorted(blocks)], axis=0)

    check = check_ps(Checked, "ps.GradientPSServer", sync="ssgd")
    check.assert_ok()
    assert "equal to the codec's expected()" in check.reason


# --- learning on a slice of MNIST ---------------------------------------------------------------

MNIST = {"node_count": 4, "epochs": 2, "train_samples": 8000, "test_samples": 1000}


def _accuracies(**spec):
    result = simulate(prepare_job(JobSpec(**{**MNIST, **spec})))
    assert result.error is None, result.error
    assert result.ps_bytes_sent > 0
    return [r.accuracy for r in result.reports]


# Under ssgd each worker waits for its own reply only: the ASGD of the papers. Under asgd nobody
# waits, and in-process the server (one thread among the workers', sharing the GIL) lags by
# tens of steps with 4 workers, which makes 4-worker ASGD accuracy vary run to run; 2 workers
# keep it steady. Bars sit below the lowest of 8 runs (0.90, 0.88, 0.83, 0.85 in that order).
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("server", "sync", "nodes", "optimizer", "learn_rate", "bar"),
    [
        ("AsyncPSServer", "ssgd", 4, "adam", 0.001, 0.85),
        ("AsyncPSServer", "asgd", 2, "adam", 0.001, 0.8),
        ("DCASGDServer", "ssgd", 4, "sgd", 0.1, 0.75),
        ("DCASGDServer", "asgd", 2, "sgd", 0.1, 0.75),
    ],
)
def test_async_ps_learns(server, sync, nodes, optimizer, learn_rate, bar):
    accuracies = _accuracies(
        codec="ps.AsyncPSClient",
        ps_codec=f"ps.{server}",
        sync=sync,
        node_count=nodes,
        optimizer=optimizer,
        learn_rate=learn_rate,
    )
    assert min(accuracies) >= bar, accuracies


def test_a_stopping_server_still_applies_the_steps_already_queued():
    """ASGD workers need not wait for replies: the last steps can be queued when the job ends
    (found by the codec x model matrix: a tiny async job's server model was its initial one)."""
    import threading

    from psgd.train.inprocess import InProcessNetwork
    from psgd.train.sync import CodecSet, serve

    _settings()
    network = InProcessNetwork([0, 1, Parameter_Server])
    server = CodecSet(Parameter_Server, [resolve_codec("ps.AsyncPSServer")],
                      network.channel(Parameter_Server), [np.ones(SHAPE)])  # fmt: skip
    for node in (0, 1):
        network.channel(node).send([Parameter_Server], [(0, (node, np.full(SHAPE, 0.25)))])
    stop = threading.Event()
    stop.set()  # both workers finished before the server got to their steps
    serve(server, stop)
    np.testing.assert_allclose(server.codecs[0].current_weights(), np.full(SHAPE, 0.5))
