"""The server's model evaluated per epoch on real daemons (``--local``): the PS daemon sends it
when every worker's epoch mark arrived, and it is the same model as in-process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from entry_points import SUBMIT

from psgd.cli.submit import submit as submit_command

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO / "bench"))
from make_breast_cancer_like import make  # noqa: E402

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
pytestmark = pytest.mark.timeout(120)

JOB = ["--dataset", "cancer.npz", "--model", "logreg", "--node_count", "2", "--epochs", "3",
       "--batch_size", "16", "--learn_rate", "0.01"]  # fmt: skip


def records(folder: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((folder / "summary.json").read_text())
    with (folder / "server_eval.csv").open() as handle:
        return summary, list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "codecs",
    [
        ("averaging.EASGDWorker", "averaging.EASGDServer"),
        ("ps.GradientPSClient", "ps.GradientPSServer"),
    ],
)
def test_daemons_evaluate_the_server_model_every_epoch_as_in_process(tmp_path, codecs):
    x_train, y_train, x_test, y_test = make(0)
    np.savez(tmp_path / "cancer.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)  # fmt: skip
    args = [*JOB, "--codec", codecs[0], "--ps-codec", codecs[1]]
    command = [*SUBMIT, "-q", "--local", "2", *args, "--out", "net"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100, cwd=tmp_path,
                            env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    summary, rows = records(tmp_path / "net")
    assert summary["mode"] == "network"
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["test_accuracy"]) == pytest.approx(summary["server_accuracy"], abs=1e-6)
    # synchronous servers, the same seeds: the very same models as in-process, epoch by epoch
    args[1] = str(tmp_path / "cancer.npz")
    invoked = CliRunner().invoke(submit_command, ["-q", "--simulate", *args, "--out",
                                                  str(tmp_path / "sim")])  # fmt: skip
    assert invoked.exit_code == 0, invoked.output
    _, in_process = records(tmp_path / "sim")
    for key in ("test_loss", "test_accuracy"):
        assert [r[key] for r in rows] == [r[key] for r in in_process]
    assert float(rows[0]["test_loss"]) > float(rows[-1]["test_loss"])  # taken while training
