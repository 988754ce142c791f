"""The codec test scripts: PASS for correct codecs, FAIL with the reason for broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from psgd import Codec, GlobalSettings, netEncapsulation
from psgd.testing import check_p2p, check_ps, main


class WrongMean(Codec):
    """Averages but forgets one block: numerically wrong."""

    def __init__(self, node_id):
        super().__init__(node_id)
        self.blocks = {}

    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        self.blocks[block_weight.block_id] = block_weight.content
        self._merge()
        targets = GlobalSettings.get_default().get_adversary(block_weight.block_id)
        return netEncapsulation(targets, (block_weight.block_id, block_weight.content))

    def receive_blocks(self, content):
        self.blocks[content[0]] = content[1]
        self._merge()

    def _merge(self):
        if len(self.blocks) == GlobalSettings.get_default().block_count:
            values = [self.blocks[b] for b in sorted(self.blocks)]
            self.set_result(sum(values[1:]) / len(values))
            self.blocks.clear()

    def expected(self, blocks):
        return np.mean([blocks[b] for b in sorted(blocks)], axis=0)


class Silent(Codec):
    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        return None

    def receive_blocks(self, content):
        return None


class Rescued(Silent):
    """Never finishes a round on its own, but its retry does."""

    def do_something_to_save_yourself(self):
        self.set_result(0)


class SendsASet(Silent):
    def update_blocks(self, block_weight):
        return netEncapsulation(0, {1, 2})


class BadTarget(Silent):
    def update_blocks(self, block_weight):
        return netEncapsulation(99, 1)


class ReturnsInt(Silent):
    def update_blocks(self, block_weight):
        return 5


@pytest.mark.parametrize("redundancy", [1, 2])
@pytest.mark.parametrize("assignment", ["iid", "duplicate"])
def test_plain_passes_and_equals_mean_of_blocks(redundancy, assignment):
    check = check_p2p(
        "plain.Plain", nodes=4, rounds=3, redundancy=redundancy, assignment=assignment
    )
    check.assert_ok()
    assert all(r.expected == "ok" for r in check.records)
    assert all(r.bytes > 0 and r.packages > 0 for r in check.records)


def test_plain_passes_under_asgd_interleaving():
    check_p2p("plain.Plain", nodes=3, rounds=6, sync="asgd").assert_ok()


def test_fedavg_with_server_passes_and_server_answers():
    check = check_ps(
        "fedavg.FedAvgClient", "fedavg.FedAvgServer", rounds=4, params={"local_steps": 2}
    )
    check.assert_ok()
    assert check.server_packages == 2 * 4  # two averaging rounds, one reply per client


def test_numerically_wrong_codec_fails_with_the_difference():
    check = check_p2p(WrongMean, nodes=3, rounds=2)
    assert not check.passed
    assert "differs from expected" in check.reason


def test_codec_without_result_fails_after_its_retry():
    check = check_p2p(Silent, nodes=2, rounds=2)
    assert not check.passed and "do_something_to_save_yourself" in check.reason
    assert check.records[-1].timeouts == 1


def test_retry_that_produces_a_result_counts_a_timeout_but_passes():
    check = check_p2p(Rescued, nodes=2, rounds=2)
    check.assert_ok()
    assert all(r.retries == 1 for r in check.records)


@pytest.mark.parametrize(
    ("codec", "match"),
    [
        (SendsASet, "cannot be sent"),
        (BadTarget, "not a node"),
        (ReturnsInt, "ReturnsInt.update_blocks"),
    ],
)
def test_contract_breaches_fail_with_a_clear_reason(codec, match):
    check = check_p2p(codec, nodes=2, rounds=1)
    assert not check.passed
    assert match in check.reason


def test_command_line_prints_table_and_exit_code():
    runner = CliRunner()
    ok = runner.invoke(main, ["p2p", "plain.Plain", "--nodes", "3", "--rounds", "2"])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output and "round  node" in ok.output
    bad = runner.invoke(main, ["p2p", "plain.Plian"])
    assert bad.exit_code == 2 and "did you mean Plain" in bad.output
    fail = runner.invoke(main, ["p2p", f"{__file__}:Silent", "--rounds", "1"])
    assert fail.exit_code == 1 and "FAIL" in fail.output


def test_ps_command_line_with_params():
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "ps",
            "fedavg.FedAvgClient",
            "fedavg.FedAvgServer",
            "--param",
            "local_steps=1",
            "--rounds",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "server: 8 packages" in result.output


def test_describe_loads_a_codec_that_reads_the_settings_in_its_class_body():
    style = Path(__file__).resolve().parents[1] / "psgd_style" / "class_params.py"
    result = CliRunner().invoke(main, ["describe", f"{style}:ClassParamAverage"])
    assert result.exit_code == 0, result.output
    assert "class_params.ClassParamAverage" in result.output
