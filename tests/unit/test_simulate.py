"""Whole jobs in-process on a small slice of real MNIST: learning, sync semantics, failures."""

from __future__ import annotations

import numpy as np
import pytest

from psgd import Codec, GlobalSettings, netEncapsulation
from psgd.job import JobSpec
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

SMALL = {"train_samples": 8000, "test_samples": 1000, "epochs": 1}


class NeverDone(Codec):
    save_calls = 0

    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        return None

    def receive_blocks(self, content):
        return None

    def do_something_to_save_yourself(self):
        type(self).save_calls += 1
        return None


class ExplodesOnReceive(Codec):
    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        others = GlobalSettings.get_default().get_adversary(block_weight.block_id)
        self.set_result(block_weight.content)
        return netEncapsulation(others, 1)

    def receive_blocks(self, content):
        raise ZeroDivisionError("boom in receive")


def run(**overrides):
    spec = JobSpec(**{**SMALL, **overrides})
    return simulate(prepare_job(spec))


def test_plain_two_nodes_learns_and_keeps_models_identical():
    result = run(codec="plain.Plain", node_count=2)
    assert result.error is None
    assert [r.accuracy for r in result.reports][0] > 0.85
    for a, b in zip(*result.weights.values(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(r.bytes_sent > 0 for r in result.reports)


def test_same_seed_gives_the_same_model():
    first = run(node_count=2, seed=3)
    second = run(node_count=2, seed=3)
    for a, b in zip(first.weights[0], second.weights[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_redundancy_two_with_three_nodes_learns():
    result = run(node_count=3, redundancy=2)
    assert result.error is None and result.reports[0].accuracy > 0.8


def test_asgd_plain_learns_without_blocking():
    result = run(node_count=2, sync="asgd")
    # A node that finishes far ahead of a starved peer has applied fewer merged rounds
    # (ASGD staleness); the last to finish has applied them all.
    assert result.error is None and max(r.accuracy for r in result.reports) > 0.7


def test_fedavg_with_server_learns_and_counts_server_bytes():
    result = run(
        codec="fedavg.FedAvgClient",
        ps_codec="fedavg.FedAvgServer",
        node_count=2,
        params={"local_steps": 5},
    )
    assert result.error is None
    assert result.ps_bytes_sent > 0
    assert min(r.accuracy for r in result.reports) > 0.7


def test_per_layer_codecs_mix_plain_and_local():
    mixed = run(codec="plain.Plain,4=dummy.DummyCodec,5=dummy.DummyCodec", node_count=2)
    plain = run(codec="plain.Plain", node_count=2)
    assert mixed.error is None
    assert 0 < mixed.reports[0].bytes_sent < plain.reports[0].bytes_sent


def test_ssgd_timeout_calls_save_yourself_once_then_names_node_layer_batch():
    NeverDone.save_calls = 0
    result = run(codec=f"{__file__}:NeverDone", node_count=2, timeout_s=0.2)
    assert result.error is not None
    assert "layer 0 batch 0" in result.error and "node" in result.error
    assert "do_something_to_save_yourself" in result.error


def test_codec_exception_fails_the_job_with_its_traceback():
    result = run(codec=f"{__file__}:ExplodesOnReceive", node_count=2, timeout_s=5)
    assert result.error is not None
    assert "ExplodesOnReceive.receive_blocks raised ZeroDivisionError" in result.error
    assert "Traceback" in result.error


def test_codec_init_failure_is_reported():
    spec = JobSpec(**SMALL, codec=f"{__file__}:NeverDone", node_count=1)
    job = prepare_job(spec)
    job.codec_classes = [_Broken] * len(job.codec_classes)
    failed = simulate(job)
    assert "_Broken.__init__ raised RuntimeError" in failed.error


class _Broken(NeverDone):
    def __init__(self, node_id):
        raise RuntimeError("cannot start")


@pytest.mark.parametrize("exchange", ["delta", "params"])
def test_single_node_dummy_learns_in_both_exchange_modes(exchange):
    result = run(codec="dummy.DummyCodec", node_count=1, exchange=exchange)
    assert result.error is None and result.reports[0].accuracy > 0.85
    assert result.reports[0].bytes_sent == 0


class KnowsItsStart(Codec):
    """Checks the initial_weights hook: gets its layer's starting value before any batch."""

    seen: list = []

    def initial_weights(self, value):
        type(self).seen.append((self.node_id, value.shape))
        self.start = value

    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        assert block_weight.content.shape == self.start.shape
        self.set_result(block_weight.content)

    def receive_blocks(self, content):
        return None


def test_codecs_with_an_initial_weights_hook_get_their_layer_start_value():
    KnowsItsStart.seen = []
    job = prepare_job(JobSpec(**SMALL, node_count=2))
    job.codec_classes = [KnowsItsStart] * len(job.codec_classes)
    result = simulate(job)
    assert result.error is None
    shapes = sorted(shape for node, shape in KnowsItsStart.seen if node == 0)
    assert shapes == sorted([(784, 128), (128,), (128, 128), (128,), (128, 10), (10,)])
