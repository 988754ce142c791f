"""Model-averaging codecs: maths against the papers' formulas, harness checks, MNIST learning."""

from __future__ import annotations

import numpy as np
import pytest

from psgd import BlockWeight
from psgd.algorithms.averaging import (
    NodeBatch,
    bmuf_start,
    bmuf_update,
    check_easgd_alpha,
    easgd_center_update,
    elastic_force,
    mean,
)
from psgd.job import JobSpec
from psgd.loader import resolve_codec
from psgd.settings import GlobalSettings
from psgd.testing import check_p2p, check_ps
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

SHAPE = (4, 4)


def _zeros():
    return np.zeros(SHAPE, np.float32)


# --- maths ------------------------------------------------------------------------------------


def test_mean_sums_in_the_given_order_and_keeps_the_dtype():
    values = [np.full(3, v, np.float32) for v in (1.0, 2.0, 6.0)]
    result = mean(values)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, np.full(3, 3.0, np.float32))
    np.testing.assert_array_equal(values[0], np.full(3, 1.0))  # inputs untouched


def test_node_batch_waits_for_every_held_block_then_gives_their_mean():
    batch = NodeBatch(2)
    assert batch.add(5, np.array([1.0, 3.0])) is None
    np.testing.assert_array_equal(batch.add(2, np.array([3.0, 5.0])), [2.0, 4.0])
    assert batch.add(2, np.array([0.0, 0.0])) is None  # a new batch starts empty


@pytest.mark.parametrize("nesterov", [False, True])
def test_bmuf_update_follows_the_block_momentum_formula_over_three_blocks(nesterov):
    mu, zeta = 0.5, 0.8
    w0 = np.array([1.0, -2.0])
    averages = [np.array([1.5, -1.0]), np.array([2.5, 0.0]), np.array([2.0, 1.0])]
    state = bmuf_start(w0)
    w_g, delta, w_init = w0.copy(), np.zeros(2), w0.copy()
    for average in averages:
        state = bmuf_update(state, average, mu, zeta, nesterov)
        delta = mu * delta + zeta * (average - w_init)
        w_g = w_g + delta
        w_init = w_g + mu * delta if nesterov else w_g
        np.testing.assert_allclose(state.global_weights, w_g)
        np.testing.assert_allclose(state.delta, delta)
        np.testing.assert_allclose(state.start, w_init)
    # first block by hand: G = 0.5, -1 ... Delta = 0.8 * G
    first = bmuf_update(bmuf_start(w0), averages[0], mu, zeta, nesterov)
    np.testing.assert_allclose(first.global_weights, [1.4, -1.2])


def test_bmuf_without_momentum_and_unit_rate_is_model_averaging():
    state = bmuf_start(np.zeros(3))
    for average in (np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.5, 4.0])):
        state = bmuf_update(state, average, mu=0.0, zeta=1.0, nesterov=True)
        np.testing.assert_allclose(state.start, average)


@pytest.mark.parametrize("nesterov", [False, True])
def test_bmuf_steady_progress_is_amplified_by_zeta_over_one_minus_mu(nesterov):
    mu, zeta, progress = 0.75, 1.0, 0.01
    state = bmuf_start(np.zeros(1))
    for _ in range(200):  # every block, the nodes move `progress` from where they started
        state = bmuf_update(state, state.start + progress, mu, zeta, nesterov)
    np.testing.assert_allclose(state.delta, zeta * progress / (1 - mu), rtol=1e-6)


def test_easgd_updates_follow_the_elastic_equations():
    center = np.array([0.0, 1.0])
    workers = [np.array([1.0, 1.0]), np.array([3.0, -1.0])]
    alpha = 0.2
    np.testing.assert_allclose(elastic_force(workers[0], center, alpha), [0.2, 0.0])
    new_center = easgd_center_update(center, workers, alpha)
    np.testing.assert_allclose(
        new_center, center + alpha * ((workers[0] - center) + (workers[1] - center))
    )
    beta = len(workers) * alpha  # the moving-average form of the same update
    np.testing.assert_allclose(new_center, center + beta * (np.mean(workers, axis=0) - center))


def test_synchronous_easgd_step_conserves_the_sum_of_workers_and_center():
    rng = np.random.default_rng(0)
    workers = [rng.standard_normal(5) for _ in range(4)]
    center = rng.standard_normal(5)
    alpha = 0.2
    moved = [x - elastic_force(x, center, alpha) for x in workers]
    new_center = easgd_center_update(center, workers, alpha)
    np.testing.assert_allclose(sum(moved) + new_center, sum(workers) + center)


@pytest.mark.parametrize(
    ("alpha", "workers", "stable"),
    [(0.2, 4, True), (0.25, 4, False), (0.0, 2, False), (0.99, 1, True)],
)
def test_easgd_alpha_is_stable_only_when_positive_and_below_one_over_n(alpha, workers, stable):
    assert (check_easgd_alpha(alpha, workers) is None) is stable


# --- codec harness ----------------------------------------------------------------------------


def _node_weights(blocks, node):
    held = GlobalSettings.get_default().node_2_block[node]
    return np.mean([blocks[b] for b in held], axis=0)


def _checked_model_average():
    class Checked(resolve_codec("averaging.ModelAverage")):  # type: ignore[misc]
        """expected(): own weights, or every node's mean at each block_steps-th round."""

        rounds = 0

        def expected(self, blocks):
            self.rounds += 1
            if self.rounds % self.block_steps:
                return _node_weights(blocks, self.node_id)
            nodes = GlobalSettings.get_default().nodes
            return np.mean([_node_weights(blocks, n) for n in nodes], axis=0)

    return Checked


def _checked_bmuf():
    class Checked(resolve_codec("averaging.BMUF")):  # type: ignore[misc]
        """Starts at zeros; expected() recomputes BMUF with plain numpy."""

        def __init__(self, node_id):
            super().__init__(node_id)
            self.initial_weights(_zeros())
            self.rounds, self.w_g, self.delta, self.w_init = 0, _zeros(), _zeros(), _zeros()

        def expected(self, blocks):
            self.rounds += 1
            if self.rounds % self.block_steps:
                return blocks[self.node_id]
            average = np.mean([blocks[b] for b in sorted(blocks)], axis=0)
            self.delta = self.mu * self.delta + self.zeta * (average - self.w_init)
            self.w_g = self.w_g + self.delta
            self.w_init = self.w_g + self.mu * self.delta if self.nesterov else self.w_g
            return self.w_init

    return Checked


@pytest.mark.timeout(30)
@pytest.mark.parametrize("redundancy", [1, 2])
def test_model_average_harness_adopts_the_mean_every_block_steps(redundancy):
    check = check_p2p(
        _checked_model_average(), rounds=6, redundancy=redundancy, params={"block_steps": 3}
    )
    check.assert_ok()
    assert "equal to the codec's expected()" in check.reason
    sending = sorted({r.round for r in check.records if r.packages})
    assert sending == [2, 5]


def test_model_average_keeps_an_early_package_for_its_own_round():
    GlobalSettings.set_default(GlobalSettings(2, params={"block_steps": 1}))
    codec = resolve_codec("averaging.ModelAverage")(0)

    package = codec.update_blocks(BlockWeight(np.array([0.0]), 0))
    assert package.target() == [1] and package.content[:2] == (0, 0)
    codec.receive_blocks((1, 1, np.array([8.0])))  # node 1 is a round ahead
    assert not codec.is_done()
    codec.receive_blocks((0, 1, np.array([2.0])))
    np.testing.assert_array_equal(codec.get_result(), [1.0])
    codec.update_blocks(BlockWeight(np.array([4.0]), 0))
    np.testing.assert_array_equal(codec.get_result(), [6.0])


def test_model_average_mean_arriving_between_asgd_steps_is_not_lost_to_local_weights():
    GlobalSettings.set_default(GlobalSettings(2, params={"block_steps": 2}))
    codec = resolve_codec("averaging.ModelAverage")(0)
    codec.update_blocks(BlockWeight(np.array([7.0]), 0))
    np.testing.assert_array_equal(codec.get_result(), [7.0])  # a local step
    codec.update_blocks(BlockWeight(np.array([0.0]), 0))  # round 0 sent; the trainer goes on
    assert not codec.is_done()
    codec.receive_blocks((0, 1, np.array([2.0])))  # the mean comes on the receiver thread
    codec.update_blocks(BlockWeight(np.array([5.0]), 0))  # before the trainer took it
    np.testing.assert_array_equal(codec.get_result(), [1.0])


def test_model_average_mean_arriving_after_a_local_step_replaces_it():
    GlobalSettings.set_default(GlobalSettings(2, params={"block_steps": 2}))
    codec = resolve_codec("averaging.ModelAverage")(0)
    codec.update_blocks(BlockWeight(np.array([7.0]), 0))
    codec.get_result()
    codec.update_blocks(BlockWeight(np.array([0.0]), 0))  # round 0 sent; the trainer goes on
    codec.update_blocks(BlockWeight(np.array([5.0]), 0))  # a local step, not taken yet
    codec.receive_blocks((0, 1, np.array([2.0])))
    np.testing.assert_array_equal(codec.get_result(), [1.0])


@pytest.mark.timeout(30)
def test_model_average_rounds_never_mix_when_packages_come_late_and_shuffled():
    check_p2p(
        "averaging.ModelAverage", rounds=8, sync="asgd", params={"block_steps": 2}
    ).assert_ok()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "params",
    [
        {"block_steps": 2},
        {"block_steps": 1, "bmuf_nesterov": False, "bmuf_mu": 0.5, "bmuf_zeta": 0.7},
    ],
)
def test_bmuf_harness_matches_a_direct_numpy_recomputation(params):
    check = check_p2p(_checked_bmuf(), rounds=6, params=params)
    check.assert_ok()
    assert "equal to the codec's expected()" in check.reason


@pytest.mark.timeout(30)
def test_bmuf_without_the_initial_weights_hook_passes_the_harness():
    check_p2p("averaging.BMUF", rounds=6, params={"block_steps": 2}).assert_ok()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("codec", "params", "message"),
    [
        ("averaging.ModelAverage", {"block_steps": 0}, "--param block_steps must be a whole"),
        ("averaging.BMUF", {"bmuf_mu": 1.0}, "expected 0 <= bmuf_mu < 1"),
        ("averaging.BMUF", {"bmuf_nesterov": "maybe"}, "bmuf_nesterov must be true or false"),
    ],
)
def test_bad_parameters_fail_at_start_naming_codec_and_parameter(codec, params, message):
    check = check_p2p(codec, params=params)
    assert not check.passed and message in check.reason
    assert codec.split(".")[1] in check.reason


def _reference_easgd(tau, alpha, asynchronous):
    """Worker class whose expected() replays EASGD over every node with plain numpy.

    In the ssgd harness every node steps in node order and the server answers in that order.
    """
    base = resolve_codec("averaging.AsyncEASGDWorker" if asynchronous else "averaging.EASGDWorker")

    class Checked(base):  # type: ignore[misc, valid-type]
        def __init__(self, node_id):
            super().__init__(node_id)
            nodes = GlobalSettings.get_default().nodes
            self.rounds, self.x, self.center = 0, {n: _zeros() for n in nodes}, _zeros()

        def expected(self, blocks):
            self.rounds += 1
            for n in self.x:
                self.x[n] = self.x[n] - blocks[n]
            if self.rounds % tau:
                return blocks[self.node_id]
            forces = {}
            if asynchronous:
                for n in sorted(self.x):
                    forces[n] = alpha * (self.x[n] - self.center)
                    self.center = self.center + alpha * (self.x[n] - self.center)
            else:
                forces = {n: alpha * (x - self.center) for n, x in self.x.items()}
                self.center = self.center + alpha * sum(x - self.center for x in self.x.values())
            for n in self.x:
                self.x[n] = self.x[n] - forces[n]
            return blocks[self.node_id] + forces[self.node_id]

    return Checked


@pytest.mark.timeout(30)
@pytest.mark.parametrize("asynchronous", [False, True])
def test_easgd_harness_matches_the_elastic_updates(asynchronous):
    prefix = "Async" if asynchronous else ""
    worker = _reference_easgd(tau=2, alpha=0.2, asynchronous=asynchronous)
    params = {"easgd_tau": 2, "easgd_alpha": 0.2}
    check = check_ps(worker, f"averaging.{prefix}EASGDServer", rounds=6, params=params)
    check.assert_ok()
    assert "equal to the codec's expected()" in check.reason


@pytest.mark.timeout(30)
def test_async_easgd_passes_the_harness_with_late_shuffled_replies():
    check = check_ps(
        "averaging.AsyncEASGDWorker",
        "averaging.AsyncEASGDServer",
        rounds=8,
        sync="asgd",
        params={"easgd_tau": 2},
    )
    check.assert_ok()


@pytest.mark.timeout(30)
def test_easgd_default_alpha_is_beta_0_9_over_n_and_rho_scales_the_learning_rate():
    GlobalSettings.set_default(GlobalSettings(4, learn_rate=0.01, params={}))
    server = resolve_codec("averaging.EASGDServer")
    assert server(-2).alpha == pytest.approx(0.9 / 4)
    GlobalSettings.set_default(GlobalSettings(4, learn_rate=0.01, params={"easgd_rho": 5}))
    assert server(-2).alpha == pytest.approx(0.05)
    params = {"easgd_rho": 5, "easgd_alpha": 0.1}
    GlobalSettings.set_default(GlobalSettings(4, learn_rate=0.01, params=params))
    assert server(-2).alpha == pytest.approx(0.1)


@pytest.mark.timeout(30)
def test_easgd_refuses_an_alpha_that_makes_the_center_unstable():
    check = check_ps("averaging.EASGDWorker", "averaging.EASGDServer", params={"easgd_alpha": 0.3})
    assert not check.passed
    assert "EASGDWorker: EASGD alpha * workers must be < 1" in check.reason


# --- learning on a slice of MNIST ---------------------------------------------------------------

MNIST = {"node_count": 4, "epochs": 2, "train_samples": 8000, "test_samples": 1000}


def _run(**spec):
    result = simulate(prepare_job(JobSpec(**{**MNIST, **spec})))
    assert result.error is None, result.error
    return result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("codec", ["averaging.ModelAverage", "averaging.BMUF"])
def test_averaging_learns_and_leaves_every_node_identical_after_a_final_sync(codec):
    # 2 epochs of 32 steps: the last step is a sync step when block_steps divides 64
    result = _run(codec=codec, params={"block_steps": 8})
    assert min(r.accuracy for r in result.reports) >= 0.8
    first, *others = result.weights.values()
    for weights in others:
        for a, b in zip(first, weights, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.timeout(60)
def test_model_average_sends_once_per_block_steps():
    every_step = _run(codec="averaging.ModelAverage", params={"block_steps": 1}, epochs=1)
    every_eighth = _run(codec="averaging.ModelAverage", params={"block_steps": 8}, epochs=1)
    ratio = every_step.reports[0].bytes_sent / every_eighth.reports[0].bytes_sent
    assert ratio == pytest.approx(8, rel=0.01)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("worker", "server", "sync"),
    [("EASGDWorker", "EASGDServer", "ssgd"), ("AsyncEASGDWorker", "AsyncEASGDServer", "asgd")],
)
def test_easgd_learns(worker, server, sync):
    result = _run(
        codec=f"averaging.{worker}",
        ps_codec=f"averaging.{server}",
        sync=sync,
        params={"easgd_tau": 4},
    )
    assert min(r.accuracy for r in result.reports) >= 0.8
    assert result.ps_bytes_sent > 0
