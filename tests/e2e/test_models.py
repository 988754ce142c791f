"""Other models on real worker daemons: a user's learner file shipped with the job, the MNIST
CNN, and an EASGD centre model sent back by the server daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from entry_points import SUBMIT
from worker_list import write_workers

from psgd.nn import load_model, load_weights

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO / "bench"))
from make_breast_cancer_like import make  # noqa: E402

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
pytestmark = pytest.mark.timeout(180)

LEARNER = """
import numpy as np
from psgd.nn import Variable
from helpers import softmax  # a sibling module: shipped too


class SoftmaxRegression:
    def __init__(self, features, classes, rng):
        self.W = Variable("W", np.zeros((features, classes), np.float32))
        self.variables = [self.W]

    def loss_and_grads(self, x, y):
        p = softmax(x @ self.W.value)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-9).mean())
        p[np.arange(len(y)), y] -= 1
        self.W.grad[...] = x.T @ p / len(y)
        return loss

    def evaluate(self, x, y):
        p = softmax(x @ self.W.value)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-9).mean())
        return loss, float((p.argmax(1) == y).mean())

    def get_weights(self):
        return [self.W.value.copy()]

    def set_weights(self, weights):
        self.W.value[...] = weights[0]


def build(features, classes, rng, **options):
    return SoftmaxRegression(features, classes, rng)
"""

HELPERS = """
import numpy as np


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
"""


def submit(cwd: Path, *args: str) -> dict:
    result = subprocess.run([*SUBMIT, "-q", *args, "--out", "run"], capture_output=True,
                            text=True, timeout=150, cwd=cwd, env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return json.loads((cwd / "run" / "summary.json").read_text())


def test_user_learner_file_and_its_sibling_are_shipped_to_the_daemons(spawn_daemons, tmp_path):
    daemons = spawn_daemons(2)
    workers = write_workers(tmp_path / "worker.json", daemons)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "softreg.py").write_text(LEARNER)
    (tmp_path / "mine" / "helpers.py").write_text(HELPERS)
    summary = submit(tmp_path, "--workers", str(workers), "--model", "mine/softreg.py:build",
                     "--train-samples", "3000", "--test-samples", "500", "--epochs", "1",
                     "--optimizer", "sgd", "--learn_rate", "0.5")  # fmt: skip
    assert summary["mode"] == "network" and summary["accuracy"] > 0.75
    assert load_weights(tmp_path / "run" / "model.npz")["W"].shape == (784, 10)


def test_mnist_cnn_on_daemons(spawn_daemons, tmp_path):
    workers = write_workers(tmp_path / "worker.json", spawn_daemons(2))
    summary = submit(tmp_path, "--workers", str(workers), "--model", "cnn-mnist",
                     "--train-samples", "384", "--test-samples", "100", "--epochs", "1",
                     "--batch_size", "32", "--codec", "averaging.ModelAverage",
                     "--param", "block_steps=5")  # fmt: skip
    assert summary["accuracy"] > 0.4
    model = load_model(tmp_path / "run" / "model.npz")
    assert [v.name for v in model.variables][:2] == ["conv0.W", "conv0.b"]


def test_easgd_server_daemon_returns_its_centre_model(spawn_daemons, tmp_path):
    *daemons, ps = spawn_daemons(3)
    workers = write_workers(tmp_path / "worker.json", daemons, ps)
    x_train, y_train, x_test, y_test = make(0)
    np.savez(tmp_path / "cancer.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)  # fmt: skip
    summary = submit(
        tmp_path,
        "--workers",
        str(workers),
        "--node_count",
        "2",
        "--dataset",
        "cancer.npz",
        "--model",
        "logreg",
        "--epochs",
        "10",
        "--batch_size",
        "16",
        "--learn_rate",
        "0.01",
        "--codec",
        "averaging.EASGDWorker",
        "--ps-codec",
        "averaging.EASGDServer",
    )
    centre = load_model(tmp_path / "run" / "model.npz")
    loss, accuracy = centre.evaluate(x_test, y_test)
    assert summary["server_accuracy"] == pytest.approx(accuracy, abs=1e-6) and accuracy > 0.8
    assert (tmp_path / "run" / "model-node1.npz").exists()
