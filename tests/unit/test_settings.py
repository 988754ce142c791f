"""Block assignments and what GlobalSettings tells a codec."""

from __future__ import annotations

import time
from itertools import combinations

import pytest

from psgd import GlobalSettings
from psgd.errors import ConfigError
from psgd.job import JobSpec


def test_iid_gives_a_block_to_every_combination_of_redundancy_nodes():
    settings = GlobalSettings(4, redundancy=2, assignment="iid")
    assert settings.block_count == 6
    assert sorted(tuple(h) for h in settings.block_2_node) == list(combinations(range(4), 2))
    for node in settings.nodes:
        assert len(settings.node_2_block[node]) == 3
        for block in settings.node_2_block[node]:
            assert node in settings.block_2_node[block]


def test_duplicate_lets_groups_of_redundancy_nodes_share_a_block():
    settings = GlobalSettings(6, redundancy=3, assignment="duplicate")
    assert settings.block_count == 2
    assert settings.block_2_node == [[0, 1, 2], [3, 4, 5]]
    assert settings.node_2_block[4] == [1]


def test_redundancy_one_gives_node_i_block_i():
    for name in ("iid", "duplicate"):
        settings = GlobalSettings(3, 1, name)
        assert settings.node_2_block == [[0], [1], [2]]
        assert settings.blocks == [0, 1, 2]


def test_get_adversary_lists_nodes_without_the_block():
    settings = GlobalSettings(4, redundancy=2)
    for block in settings.blocks:
        adversary = settings.get_adversary(block)
        assert sorted(adversary + settings.block_2_node[block]) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("nodes", "redundancy", "assignment", "match"),
    [
        (0, 1, "iid", "node_count"),
        (3, 4, "iid", "redundancy"),
        (5, 2, "duplicate", "multiple"),
        (3, 1, "ring", "unknown assignment"),
    ],
)
def test_bad_assignments_are_clear_errors(nodes, redundancy, assignment, match):
    with pytest.raises(ConfigError, match=match):
        GlobalSettings(nodes, redundancy, assignment)


def test_get_default_without_a_job_is_none_as_in_parallel_sgd():
    assert GlobalSettings.get_default() is None
    assert GlobalSettings.global_parameters is None
    settings = GlobalSettings(2, params={"k": 3})
    GlobalSettings.set_default(settings)
    assert GlobalSettings.get_default() is settings
    assert GlobalSettings.deprecated_default_settings is settings
    assert GlobalSettings.global_parameters == {"k": 3}
    GlobalSettings.clear_default()
    assert GlobalSettings.get_default() is None
    assert GlobalSettings.get_params("k") == 0


@pytest.mark.parametrize(
    ("nodes", "redundancy", "assignment", "match"),
    [
        (10**7, 1, "iid", r"node_count 10000000 exceeds the limit of 100000 .*MAX_NODE_COUNT"),
        (1000, 3, "iid", r"C\(1000, 3\) > 100000 blocks, over the limit .*MAX_BLOCK_COUNT"),
        (100_000, 50_000, "iid", r"C\(100000, 50000\) > 100000 blocks"),
        (100_000, 2, "duplicate", r"50000 blocks x 2 holders = 100000 holdings"),
    ],
)
def test_assignments_too_large_to_hold_are_refused_at_once(
    nodes, redundancy, assignment, match, monkeypatch
):
    if assignment == "duplicate":  # 100000 holdings are allowed: show the bound with a smaller one
        monkeypatch.setattr("psgd.settings.MAX_BLOCK_HOLDINGS", 99_999)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        GlobalSettings(nodes, redundancy, assignment)
    with pytest.raises(ConfigError, match=match):
        JobSpec(node_count=nodes, redundancy=redundancy, assignment=assignment)
    assert time.perf_counter() - started < 0.1  # checked, never built


def test_ten_thousand_virtual_clients_fit_in_a_job():
    settings = GlobalSettings(10_000)
    assert settings.block_count == 10_000 and settings.node_2_block[9_999] == [9_999]
    assert JobSpec(node_count=10_000, redundancy=2, assignment="duplicate").node_count == 10_000


def test_parallel_sgd_logger_and_block_weight_names(caplog):
    from psgd import BlockWeight

    GlobalSettings.set_default(GlobalSettings(3, redundancy=2, assignment="iid"))
    weight = BlockWeight(None, 0)  # block 0 of C(3, 2): held by nodes 0 and 1
    assert weight.company == {0, 1} and weight.adversary == {2}
    with caplog.at_level("INFO", logger="psgd.codec"):
        GlobalSettings.global_logger().log_message("hello from a codec")
    assert GlobalSettings.deprecated_global_logger is GlobalSettings.global_logger()
    assert "hello from a codec" in caplog.text
