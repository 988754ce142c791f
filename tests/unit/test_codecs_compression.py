"""codecs/compression.py: the Compressing mix-in around Plain, the PS and a custom codec."""

from __future__ import annotations

import logging
import sys
from collections import defaultdict

import numpy as np
import pytest

from psgd import BlockWeight, Codec, ConfigError, GlobalSettings, netEncapsulation
from psgd.algorithms.compress import PAYLOAD_KEY
from psgd.job import JobSpec
from psgd.loader import resolve_codec
from psgd.net.bundle import bundle_codecs
from psgd.testing import check_p2p, check_ps
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

P2P = ["TopKPlain", "RandomKPlain", "QSGDPlain", "TernGradPlain", "SignPlain", "SignSGD"]
PS_CLIENTS = ["TopKPSClient", "RandomKPSClient", "QSGDPSClient", "TernGradPSClient"]


def codec(name: str) -> type[Codec]:
    return resolve_codec(f"compression.{name}")


def compressing() -> type:
    """The ``Compressing`` mix-in, from the module the codec loader loaded."""
    return sys.modules[codec("TopKPlain").__module__].Compressing


def recording(cls: type[Codec]) -> tuple[type[Codec], dict[int, list[np.ndarray]]]:
    """A subclass of ``cls`` that keeps every result each node took, by node."""
    results: dict[int, list[np.ndarray]] = defaultdict(list)

    class Recording(cls):  # type: ignore[misc, valid-type]
        def get_result(self):
            result = super().get_result()
            if result is not None:
                results[self.node_id].append(np.array(result, copy=True))
            return result

    Recording.__name__ = cls.__name__
    return Recording, results


def assert_identical_on_every_node(results: dict[int, list[np.ndarray]], nodes: int, rounds: int):
    assert sorted(results) == list(range(nodes))
    for node in range(nodes):
        assert len(results[node]) == rounds
        for mine, theirs in zip(results[node], results[0], strict=True):
            np.testing.assert_array_equal(mine, theirs)


# --------------------------------------------------------------------------- the codec harness


@pytest.mark.parametrize("name", P2P)
def test_compressed_plain_codecs_match_their_reference_results(name):
    check_p2p(codec(name), nodes=4, rounds=4, shape=(30, 20)).assert_ok()


@pytest.mark.parametrize("name", ["TopKPlain", "QSGDPlain", "SignSGD"])
@pytest.mark.parametrize(("redundancy", "assignment"), [(2, "iid"), (2, "duplicate")])
def test_holders_of_a_shared_block_compress_it_identically(name, redundancy, assignment):
    cls, results = recording(codec(name))
    check = check_p2p(cls, nodes=4, rounds=4, redundancy=redundancy, assignment=assignment)
    check.assert_ok()
    assert_identical_on_every_node(results, 4, 4)


@pytest.mark.parametrize("name", P2P)
def test_every_node_applies_the_same_decoded_result(name):
    cls, results = recording(codec(name))
    check_p2p(cls, nodes=3, rounds=3, shape=(50, 8)).assert_ok()
    assert_identical_on_every_node(results, 3, 3)


def test_results_are_the_decoded_blocks_not_the_raw_ones():
    cls, results = recording(codec("TopKPlain"))
    check_p2p(cls, nodes=2, rounds=1, shape=(100,), params={"ratio": 0.05}).assert_ok()
    assert np.count_nonzero(results[0][0]) <= 2 * 5  # mean of two top-5 blocks


def test_asgd_delivers_compressed_results():
    check_p2p(codec("TopKPlain"), nodes=4, rounds=5, sync="asgd", shape=(30, 20)).assert_ok()


@pytest.mark.parametrize(("name", "factor"), [("TopKPlain", 30), ("QSGDPlain", 4), ("SignSGD", 20)])
def test_packages_carry_payloads_far_smaller_than_plain(name, factor):
    shape = (300, 100)
    plain = check_p2p("plain.Plain", nodes=4, rounds=2, shape=shape)
    small = check_p2p(codec(name), nodes=4, rounds=2, shape=shape)
    small.assert_ok()
    plain_bytes = sum(r.bytes for r in plain.records)
    assert plain_bytes / sum(r.bytes for r in small.records) >= factor


@pytest.mark.parametrize("client", PS_CLIENTS)
def test_ps_clients_send_compressed_steps_that_the_server_decodes(client):
    cls, results = recording(codec(client))
    check = check_ps(cls, codec("DecodingPSServer"), nodes=3, rounds=3, shape=(300, 100))
    check.assert_ok()
    assert_identical_on_every_node(results, 3, 3)
    uplink = sum(r.bytes for r in check.records)
    assert uplink * 4 < 9 * 300 * 100 * 4  # under a quarter of the raw float32 steps


def test_ps_result_is_the_mean_of_the_decoded_steps():
    cls, results = recording(codec("TopKPSClient"))
    check_ps(cls, codec("DecodingPSServer"), nodes=2, rounds=1, shape=(200,)).assert_ok()
    # each client sent top-2 of 200 values: the mean has at most 4 non-zeros
    assert 0 < np.count_nonzero(results[0][0]) <= 4


def test_sign_sgd_through_a_server_replies_the_majority_vote():
    cls, results = recording(codec("SignSGDPSClient"))
    check_ps(cls, codec("SignSGDServer"), nodes=3, rounds=2, shape=(40,)).assert_ok()
    assert_identical_on_every_node(results, 3, 2)
    magnitudes = np.unique(np.abs(results[0][0]))
    assert magnitudes.size == 1 and magnitudes[0] > 0  # 3 voters: never a tie


# --------------------------------------------------------------------------- parameters


def _settings(**params) -> GlobalSettings:
    settings = GlobalSettings(2, params=params, learn_rate=0.01)
    GlobalSettings.set_default(settings)
    return settings


@pytest.mark.parametrize(
    ("name", "default"),
    [("TopKPlain", True), ("RandomKPlain", True), ("SignPlain", True), ("QSGDPlain", False)]
    + [("TernGradPlain", False), ("SignSGD", False)],
)
def test_error_feedback_defaults_per_family_and_the_param_overrides_it(name, default):
    _settings()
    assert codec(name)(0)._compression.error_feedback is default
    _settings(error_feedback=not default)
    assert codec(name)(0)._compression.error_feedback is (not default)


def test_without_error_feedback_top_k_forgets_what_it_did_not_send():
    _settings(ratio=0.5, error_feedback=False)
    node = codec("TopKPlain")(0)
    node.update_blocks(BlockWeight(np.array([4.0, 1.0], np.float32), 0))
    node.update_blocks(BlockWeight(np.array([4.0, 1.0], np.float32), 0))
    _settings(ratio=0.5)
    memory = codec("TopKPlain")(0)
    memory.update_blocks(BlockWeight(np.array([4.0, 1.0], np.float32), 0))
    package = memory.update_blocks(BlockWeight(np.array([4.0, 1.0], np.float32), 0))
    # with memory the second step sends 4 again (4 > 1 + 1); after three, the 1s win
    assert package.content[2]["values"].tolist() == [4.0]
    package = memory.update_blocks(BlockWeight(np.array([4.0, 1.0], np.float32), 0))
    package = memory.update_blocks(BlockWeight(np.array([4.0, 1.0], np.float32), 0))
    assert package.content[2]["indices"].tolist() == [1]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"ratio": 2}, "ratio must be a number in"),
        ({"levels": "many"}, "levels must be an int"),
        ({"error_feedback": "maybe"}, "error_feedback: expected true or false"),
    ],
)
def test_bad_parameters_fail_at_construction_naming_the_parameter(params, match):
    _settings(**params)
    name = "QSGDPlain" if "levels" in params else "TopKPlain"
    with pytest.raises(ConfigError, match=match):
        codec(name)(0)


def test_sign_sgd_with_lr_scale_steps_by_the_learning_rate():
    _settings(sign_scale="lr")
    vote = codec("SignSGD")(0).merge(
        {0: np.array([0.3, -0.2], np.float32), 1: np.array([0.1, -0.5], np.float32)}
    )
    np.testing.assert_allclose(vote, [0.01, -0.01])
    GlobalSettings.set_default(GlobalSettings(2, params={"sign_scale": "lr"}))
    with pytest.raises(ConfigError, match="learn rate is unknown"):
        codec("SignSGD")(0)


# --------------------------------------------------------------------------- around any codec


class Gossip(Codec):
    """A codec of the test's own: sends {'step': block, 'meta': ...} and forwards once."""

    def __init__(self, node_id):
        super().__init__(node_id)
        self.got = []

    def dispose(self):
        self.got.clear()

    def update_blocks(self, block_weight):
        content = {"step": block_weight.content, "meta": [block_weight.block_id, "x"]}
        return [netEncapsulation(1 - self.node_id, content)]

    def receive_blocks(self, content):
        self.got.append(content)
        self.set_result(content["step"])
        if content["meta"][1] == "x":  # forward it back once, as a relay would
            return netEncapsulation(1 - self.node_id, {**content, "meta": [0, "y"]})
        return None


def test_the_mix_in_compresses_nested_content_of_any_codec_and_relays_payloads():
    class CompressedGossip(compressing(), Gossip):
        compressor = "topk"

    _settings(ratio=0.1)
    a, b = CompressedGossip(0), CompressedGossip(1)
    step = np.arange(20, dtype=np.float32)
    (package,) = a.update_blocks(BlockWeight(step, 0))
    payload = package.content["step"]
    assert payload[PAYLOAD_KEY] == "topk" and package.content["meta"] == [0, "x"]
    relayed = b.receive_blocks(package.content)
    assert relayed.content["step"] is payload  # forwarded compressed, not re-encoded
    np.testing.assert_array_equal(b.got[0]["step"], np.where(step >= 18, step, 0))


def test_an_array_the_codec_did_not_compress_is_sent_as_is_and_logged(caplog):
    class Doubler(Gossip):
        def update_blocks(self, block_weight):
            return netEncapsulation(1, {"step": block_weight.content * 2, "meta": [0, "y"]})

    class CompressedDoubler(compressing(), Doubler):
        compressor = "sign"

    _settings()
    node = CompressedDoubler(0)
    with caplog.at_level(logging.INFO):
        package = node.update_blocks(BlockWeight(np.ones(4, np.float32), 0))
        node.update_blocks(BlockWeight(np.ones(4, np.float32), 0))
    assert isinstance(package.content["step"], np.ndarray)
    assert sum("did not compress" in r.getMessage() for r in caplog.records) == 1


def test_the_shipped_bundle_holds_the_inner_codecs_module():
    sources, names = bundle_codecs([codec("TopKPlain"), codec("QSGDPSClient")])
    assert {"compression", "plain", "ps"} <= set(sources)
    assert names == ["compression.TopKPlain", "compression.QSGDPSClient"]


# --------------------------------------------------------------------------- training


def _train(name: str, epochs: int, **params):
    spec = JobSpec(
        codec=name,
        node_count=4,
        epochs=epochs,
        train_samples=8000,
        test_samples=1000,
        params=params,
    )
    result = simulate(prepare_job(spec))
    assert result.error is None
    accuracy = float(np.mean([r.accuracy for r in result.reports]))
    per_batch = result.reports[0].bytes_sent / result.reports[0].batches
    return accuracy, per_batch


@pytest.fixture(scope="module")
def plain_bytes_per_batch() -> float:
    return _train("plain.Plain", 1)[1]


@pytest.mark.timeout(60)
def test_top_k_with_error_feedback_trains_mnist_on_over_30_times_fewer_bytes(
    plain_bytes_per_batch,
):
    accuracy, per_batch = _train("compression.TopKPlain", 2, ratio=0.01)
    assert accuracy >= 0.8
    assert plain_bytes_per_batch / per_batch >= 30


@pytest.mark.timeout(60)
def test_qsgd_trains_mnist_on_over_4_times_fewer_bytes(plain_bytes_per_batch):
    accuracy, per_batch = _train("compression.QSGDPlain", 2, levels=16)
    assert accuracy >= 0.8
    assert plain_bytes_per_batch / per_batch >= 4
