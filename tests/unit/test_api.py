"""psgd.run: the Python API runs the command line's jobs and returns plain data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import psgd
from psgd import Codec, GlobalSettings, netEncapsulation
from psgd.errors import ConfigError, JobFailed

pytestmark = pytest.mark.timeout(120)

QUICK = {"epochs": 1, "train_samples": 6000, "test_samples": 1000}


class NotebookAverage(Codec):
    """Defined here as in a notebook cell: handed to psgd.run as a class."""

    def __init__(self, node_id):
        super().__init__(node_id)
        self.steps = []

    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        self._add(block_weight.content)
        settings = GlobalSettings.get_default()
        return netEncapsulation(settings.get_adversary(block_weight.block_id), block_weight.content)

    def receive_blocks(self, content):
        self._add(content)

    def _add(self, content):
        self.steps.append(content)
        if len(self.steps) == GlobalSettings.get_default().node_count:
            self.set_result(np.mean(self.steps, axis=0))
            self.steps = []


def test_run_in_process_with_a_codec_class_returns_plain_data(tmp_path):
    result = psgd.run(codec=NotebookAverage, node_count=2, out=tmp_path / "r", **QUICK)
    summary = result["summary"]
    assert summary["status"] == "completed" and summary["mode"] == "simulate"
    assert summary["accuracy"] > 0.75
    assert [point["step"] for point in result["history"]] == [1]
    assert result["history"][0]["accuracy"] == pytest.approx(summary["accuracy"])
    assert sorted(result["nodes"]) == [0, 1]
    assert result["nodes"][0]["epochs"][0]["epoch"] == 1
    batches = result["nodes"][1]["batches"]
    assert [row["batch"] for row in batches] == list(range(len(batches))) and batches
    json.dumps(result)  # plain data, all of it


def test_run_takes_names_per_layer_and_params(tmp_path):
    result = psgd.run(
        codec=["plain.Plain", "plain.Plain", "dummy.DummyCodec", "plain.Plain", "plain.Plain",
               "plain.Plain"],
        node_count=2, out=tmp_path / "r", params={"unused_key": 1}, check=False, **QUICK,
    )  # fmt: skip
    assert result["summary"]["status"] == "completed"
    assert result["summary"]["params_unread"] == ["unused_key"]


def test_run_refuses_unknown_settings_and_a_failed_job_raises(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown settings \['epoch'\]"):
        psgd.run(epoch=3)
    with pytest.raises(ConfigError, match="local=True or workers"):
        psgd.run(local=True, workers="worker.json")
    with pytest.raises(JobFailed):
        psgd.run(node_count=2, out=tmp_path / "bad", attacks=["0:scale:1e30"], **QUICK)


def test_the_parallel_sgd_page_example_runs_as_written(tmp_path, monkeypatch, capsys):
    page = (Path(__file__).resolve().parents[2] / "docs" / "parallel-sgd.md").read_text()
    section = page.split("## The Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)  # it writes runs/<job id>/ here
    exec(compile(code, "docs/parallel-sgd.md", "exec"), {"__name__": "notebook"})
    lines = capsys.readouterr().out.splitlines()
    assert float(lines[0]) > 0.8
    step, accuracy, sent = lines[1].split()
    assert step == "1" and float(accuracy) == pytest.approx(float(lines[0])) and float(sent) > 0
