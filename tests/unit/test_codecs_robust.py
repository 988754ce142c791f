"""Robust PS servers: harness checks with values, parameters, shipping, and robustness on MNIST."""

from __future__ import annotations

import pytest

from psgd.algorithms.aggregate import coordinate_median, krum, multi_krum, trimmed_mean
from psgd.job import JobSpec
from psgd.loader import resolve_codec
from psgd.net.bundle import bundle_codecs
from psgd.testing import check_ps
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

SERVERS = ["MedianServer", "TrimmedMeanServer", "KrumServer", "MultiKrumServer"]


def _client_expecting(rule):
    """A ``GradientPSClient`` whose ``expected`` hook is ``rule`` over the round's blocks.

    The harness checks values on the worker codec; with redundancy 1 node i holds block i and
    sends it as is, so the server's reply must be ``rule`` of the blocks in node order.
    """
    base = resolve_codec("ps.GradientPSClient")

    class Checked(base):  # type: ignore[misc, valid-type]
        def expected(self, blocks):
            return rule([blocks[b] for b in sorted(blocks)])

    return Checked


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", SERVERS)
def test_harness_passes_every_server(server):
    check_ps("ps.GradientPSClient", f"robust.{server}", nodes=5).assert_ok()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("server", "params", "rule"),
    [
        ("MedianServer", {}, coordinate_median),
        ("TrimmedMeanServer", {}, lambda u: trimmed_mean(u, b=1)),
        ("TrimmedMeanServer", {"trim": 2}, lambda u: trimmed_mean(u, b=2)),
        ("TrimmedMeanServer", {"trim": 0.3}, lambda u: trimmed_mean(u, b=2)),
        ("TrimmedMeanServer", {"f": 2}, lambda u: trimmed_mean(u, b=2)),
        ("KrumServer", {}, lambda u: krum(u, f=1)),
        ("KrumServer", {"f": 2}, lambda u: krum(u, f=2)),
        ("MultiKrumServer", {}, lambda u: multi_krum(u, f=1, m=6)),
        ("MultiKrumServer", {"f": 2, "m": 3}, lambda u: multi_krum(u, f=2, m=3)),
    ],
)
def test_servers_reply_with_their_rule_of_the_round(server, params, rule):
    check = check_ps(_client_expecting(rule), f"robust.{server}", nodes=7, params=params)
    check.assert_ok()
    assert "equal to the codec's expected()" in check.reason


@pytest.mark.timeout(30)
def test_value_check_catches_the_wrong_rule():
    check = check_ps(_client_expecting(coordinate_median), "robust.KrumServer", nodes=5)
    assert not check.passed and "differs from expected()" in check.reason


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("server", "nodes", "params", "message"),
    [
        ("KrumServer", 4, {}, "needs node_count >= 2f + 3 = 5, got 4"),
        ("MultiKrumServer", 5, {"f": 2}, "needs node_count >= 2f + 3 = 7, got 5"),
        ("KrumServer", 5, {"f": -1}, "--param f must be a whole number >= 0, got -1"),
        ("MultiKrumServer", 5, {"m": 0}, "--param m must be a whole number in 1..5, got 0"),
        ("TrimmedMeanServer", 5, {"trim": 0.6}, "--param trim: expected a whole count"),
        ("TrimmedMeanServer", 4, {"trim": 2}, "dropping 2 from each end of 4 updates"),
    ],
)
def test_bad_parameters_fail_at_start_naming_server_and_fix(server, nodes, params, message):
    check = check_ps("ps.GradientPSClient", f"robust.{server}", nodes=nodes, params=params)
    assert not check.passed
    assert server in check.reason and message in check.reason


def test_robust_servers_ship_with_their_ps_sibling():
    sources, names = bundle_codecs([resolve_codec("robust.KrumServer")])
    assert set(sources) >= {"robust", "ps"} and names == ["robust.KrumServer"]


# The robustness bar on a slice of MNIST: 5 nodes, node 4 sends its step negated and scaled by
# 4, which cancels the 4 honest steps in a plain average (sign_flip alone only slows it down).
MNIST = {
    "codec": "ps.GradientPSClient",
    "node_count": 5,
    "epochs": 1,
    "train_samples": 20000,
    "test_samples": 10000,
    "seed": 0,
}
ATTACK = ["4:sign_flip:4"]


def _accuracy(ps_codec: str, attacks: list[str]) -> float:
    result = simulate(prepare_job(JobSpec(**MNIST, ps_codec=ps_codec, attacks=attacks)))
    assert result.error is None, result.error
    accuracies = {r.accuracy for r in result.reports}
    assert len(accuracies) == 1, "PS workers must all hold the same model"
    return accuracies.pop()


@pytest.fixture(scope="module")
def clean_accuracy() -> float:
    return _accuracy("ps.GradientPSServer", [])


@pytest.mark.timeout(40)
def test_sign_flipping_node_wrecks_plain_averaging(clean_accuracy):
    assert clean_accuracy > 0.85
    assert _accuracy("ps.GradientPSServer", ATTACK) < clean_accuracy - 0.3


@pytest.mark.timeout(40)
@pytest.mark.parametrize("server", SERVERS)
def test_robust_server_stays_within_two_points_of_the_attack_free_runs(server, clean_accuracy):
    own_clean = _accuracy(f"robust.{server}", [])
    attacked = _accuracy(f"robust.{server}", ATTACK)
    assert attacked >= max(clean_accuracy, own_clean) - 0.02, (clean_accuracy, own_clean)


def test_a_malformed_update_is_left_out_and_the_round_still_completes():
    import numpy as np

    from psgd import GlobalSettings
    from psgd.loader import resolve_codec

    GlobalSettings.set_default(GlobalSettings(3))
    for name in ("ps.GradientPSServer", "robust.MedianServer"):
        server = resolve_codec(name)(-2)
        server.initial_weights(np.zeros(4, np.float32))
        assert server.receive_blocks((0, 0, np.ones(4, np.float32))) is None
        assert server.receive_blocks("garbage") is None  # dropped, not fatal
        assert server.receive_blocks((0, 1, np.ones(7, np.float32))) is None  # wrong shape
        reply = server.receive_blocks((0, 2, np.full(4, 3.0, np.float32)))
        assert reply is not None and server.refused == 2
        _, aggregate = reply.content
        assert aggregate.shape == (4,) and np.all(np.isfinite(aggregate))
