"""The server's model evaluated per epoch, in-process: real jobs through the CLI, and the
epoch marks' checks on a real in-process channel."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from psgd.cli.submit import submit
from psgd.codec import Parameter_Server
from psgd.job import JobSpec
from psgd.net.channel import Package
from psgd.results.compare import compare_rows, markdown_table
from psgd.results.runs import load_run
from psgd.train.inprocess import InProcessNetwork
from psgd.train.prepare import prepare_job
from psgd.train.server_model import EpochMarks, ServerEpochs
from psgd.train.simulate import simulate
from psgd.train.sync import EPOCH_MARK_LAYER, CodecSet

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO / "bench"))
from make_breast_cancer_like import write  # noqa: E402

#: A PS job whose server keeps no model: each worker trains alone and tells the server.
SILENT_SERVER = """
from psgd import Codec, Parameter_Server, netEncapsulation


class TellWorker(Codec):
    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        self.set_result(block_weight.content)
        return netEncapsulation(Parameter_Server, block_weight.content)

    def receive_blocks(self, content):
        pass


class ListenServer(Codec):
    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        pass

    def receive_blocks(self, content):
        pass
"""


def run(tmp_path: Path, *args: str, out: str = "run") -> tuple[dict, list[dict]]:
    result = CliRunner().invoke(submit, ["--simulate", "-q", *args, "--out", str(tmp_path / out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / out / "summary.json").read_text())
    rows_file = tmp_path / out / "server_eval.csv"
    rows = list(csv.DictReader(rows_file.open())) if rows_file.exists() else []
    return summary, rows


@pytest.fixture(scope="module")
def cancer(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("data") / "cancer.npz")


def test_easgd_centre_is_evaluated_every_epoch_and_the_last_is_the_saved_model(tmp_path, cancer):
    summary, rows = run(tmp_path, "--dataset", str(cancer), "--model", "logreg",
                        "--node_count", "3", "--epochs", "3", "--batch_size", "16",
                        "--learn_rate", "0.01", "--codec", "averaging.EASGDWorker",
                        "--ps-codec", "averaging.EASGDServer")  # fmt: skip
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    accuracies = [float(r["test_accuracy"]) for r in rows]
    assert all(math.isfinite(float(r["test_loss"])) and 0 <= float(r["test_accuracy"]) <= 1
               for r in rows)  # fmt: skip
    assert accuracies[-1] == pytest.approx(summary["server_accuracy"], abs=1e-6)
    assert float(rows[-1]["test_loss"]) == pytest.approx(summary["server_loss"], abs=1e-6)
    losses = [float(r["test_loss"]) for r in rows]
    assert losses[0] > losses[1] > losses[2]  # snapshots during training, not the final model
    run_back = load_run(tmp_path / "run")
    assert [p.step for p in run_back.server_progress()] == [1, 2, 3]
    assert (tmp_path / "run" / "plot.png").stat().st_size > 0
    table = markdown_table(compare_rows([run_back]))
    assert "| server model |" in table and f"| {summary['server_accuracy']:.4f} |" in table


def gradient_ps_job(mark: bool):
    job = prepare_job(JobSpec(model=[784, 16, 10], train_samples=600, test_samples=300,
                              epochs=3, batch_size=50, learn_rate=0.01,
                              codec="ps.GradientPSClient", ps_codec="ps.GradientPSServer",
                              exchange="delta"))  # fmt: skip
    assert job.trainer_config.mark_epochs  # the server keeps the model: the workers mark
    job.trainer_config.mark_epochs = mark
    return job


def test_synchronous_ps_model_at_each_epoch_is_exactly_the_workers_model_then():
    marked = simulate(gradient_ps_job(True))
    assert marked.error is None
    rows = marked.server_rows
    assert [r["epoch"] for r in rows] == [1, 2]  # the last epoch's is the end-of-job model
    for node in marked.reports:  # every worker holds the server's weights after each epoch
        for row, worker in zip(rows, node.epoch_rows, strict=False):
            assert row["test_loss"] == pytest.approx(worker["test_loss"], rel=1e-5)
            assert row["test_accuracy"] == worker["test_accuracy"]
    # the marks change nothing of the training and are not counted as the workers' traffic
    plain = simulate(gradient_ps_job(False))
    assert plain.server_rows == []
    assert [r.bytes_sent for r in marked.reports] == [r.bytes_sent for r in plain.reports]
    for node in (0, 1, Parameter_Server):
        for a, b in zip(marked.weights[node], plain.weights[node], strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_server_that_keeps_no_model_gets_no_server_evaluation(tmp_path):
    (tmp_path / "silent.py").write_text(SILENT_SERVER)
    args = ["--model", "784,16,10", "--train-samples", "400", "--test-samples", "100",
            "--epochs", "2", "--codec", f"{tmp_path / 'silent.py'}:TellWorker",
            "--ps-codec", f"{tmp_path / 'silent.py'}:ListenServer"]  # fmt: skip
    summary, rows = run(tmp_path, *args)
    assert summary["status"] == "completed" and "server_accuracy" not in summary
    assert rows == [] and not (tmp_path / "run" / "server_eval.csv").exists()
    assert "epoch mark" not in (tmp_path / "run" / "log.txt").read_text()
    assert load_run(tmp_path / "run").server_progress() == []


def server_codecs(job) -> CodecSet:
    network = InProcessNetwork([0, 1, Parameter_Server])
    return CodecSet(Parameter_Server, job.ps_classes, network.channel(Parameter_Server),
                    job.initial_weights)  # fmt: skip


def mark(sender: int, epoch: object) -> Package:
    return Package(sender, EPOCH_MARK_LAYER, epoch, 16)


def test_epoch_marks_snapshot_when_the_last_worker_marks_and_drop_bad_marks(caplog):
    job = gradient_ps_job(True)
    taken: list[tuple[int, list[np.ndarray]]] = []
    marks = EpochMarks(server_codecs(job), 2, 3, lambda e, w: taken.append((e, w)))
    with caplog.at_level(logging.WARNING, logger="psgd.train.server_model"):
        for bad in (mark(0, 3), mark(0, 0), mark(0, "1"), mark(2, 1), mark(Parameter_Server, 1)):
            marks(bad)
        assert caplog.text.count("dropped an epoch mark") == 5
        marks(mark(0, 1))
        marks(mark(0, 1))  # twice from one worker: dropped, does not complete the epoch
        assert taken == [] and caplog.text.count("dropped an epoch mark") == 6
        marks(mark(1, 1))
    assert [e for e, _ in taken] == [1]
    for ours, initial in zip(taken[0][1], job.initial_weights, strict=True):
        np.testing.assert_array_equal(ours, initial)  # no step yet: the initial model


def test_a_malformed_server_model_from_a_daemon_is_dropped_by_name(caplog):
    job = gradient_ps_job(True)
    epochs = ServerEpochs(job)
    good = [w.copy() for w in job.initial_weights]
    with caplog.at_level(logging.WARNING, logger="psgd.train.server_model"):
        epochs.received(1, {"weights": good[:-1]})  # a layer short
        epochs.received(1, {"weights": [w.astype(np.float64) for w in good]})
        epochs.received(1, [good])  # not {"weights": ...}
        epochs.received(3, {"weights": good})  # the last epoch: the end-of-job model's
        epochs.received(True, {"weights": good})
        assert epochs.rows == []
        assert caplog.text.count("dropped") == 5
        epochs.received(1, {"weights": good})
        epochs.received(1, {"weights": good})  # a second one for epoch 1
    assert [r["epoch"] for r in epochs.rows] == [1]
    assert "a second snapshot, dropped" in caplog.text
