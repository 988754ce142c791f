"""Checkpoint files: round trip, last two kept, common epoch, clear errors, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from psgd.errors import ConfigError
from psgd.train.checkpoint import (
    checkpoint_path,
    latest_common_epoch,
    load_checkpoint,
    save_checkpoint,
    save_node_checkpoint,
)


def state(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "weights": [np.full((2, 3), epoch, np.float32), np.zeros(3, np.float32)],
        "optimizers": [[[np.ones(2), np.array(epoch)]], [[np.array(1)]]],
        "report": {"samples": 10 * epoch, "batch_rows": [{"epoch": 1, "loss": 0.5}]},
    }


def test_round_trip_keeps_arrays_and_progress(tmp_path):
    save_checkpoint(tmp_path / "c.npz", state(3))
    back = load_checkpoint(tmp_path / "c.npz")
    assert back["epoch"] == 3 and back["report"]["samples"] == 30
    np.testing.assert_array_equal(back["weights"][0], state(3)["weights"][0])
    assert back["weights"][0].dtype == np.float32
    assert int(back["optimizers"][0][0][1]) == 3


def test_only_the_last_two_checkpoints_of_a_node_are_kept(tmp_path):
    for epoch in range(1, 5):
        save_node_checkpoint(tmp_path, 0, state(epoch))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-e3-node0.npz",
        "checkpoint-e4-node0.npz",
    ]


def test_resume_takes_the_latest_epoch_every_node_has(tmp_path):
    for epoch in (1, 2):
        save_node_checkpoint(tmp_path, 0, state(epoch))
        save_node_checkpoint(tmp_path, 1, state(epoch))
    save_node_checkpoint(tmp_path, 0, state(3))  # the crash came before node 1's epoch 3
    states = latest_common_epoch(tmp_path, 2)
    assert {s["epoch"] for s in states.values()} == {2}


def test_missing_or_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no epoch has a checkpoint of every node"):
        latest_common_epoch(tmp_path, 2)
    path = checkpoint_path(tmp_path, 0, 1)
    path.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable psgd checkpoint"):
        load_checkpoint(path)


def test_writes_leave_no_temp_files_behind(tmp_path):
    save_node_checkpoint(tmp_path, 0, state(1))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-e1-node0.npz"]
