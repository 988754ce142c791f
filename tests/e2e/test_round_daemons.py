"""Round jobs on real daemons: pools of virtual clients, the round PS, failures by name."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from entry_points import SUBMIT
from worker_list import write_workers

from psgd.cluster.probe import wait_idle
from psgd.cluster.round_submit import RoundSubmitter
from psgd.job import JobSpec
from psgd.train.prepare import prepare_job

FEDAVG = ["--codec", "federated.FedAvgClient", "--ps-codec", "federated.FedAvgServer"]
SMALL = ["--train-samples", "20000", "--test-samples", "1000", "--model", "784,32,10",
         "--batch_size", "10", "--optimizer", "sgd", "--learn_rate", "0.1"]  # fmt: skip
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

pytestmark = pytest.mark.timeout(240)


def _submit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SUBMIT, *args], capture_output=True, text=True, timeout=200, cwd=cwd, env=ENV
    )


def _rounds(folder: Path) -> list[dict[str, str]]:
    with open(folder / "rounds.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def _same_on_two_local_daemons_as_in_process(tmp_path: Path, job: list[str]) -> list[dict]:
    """Run ``job`` on ``--local 2`` daemons and in-process; the rounds (wall time aside) match."""
    net = _submit(tmp_path, *job, "--local", "2", "--executors", "1", "--out", "net")
    assert net.returncode == 0, net.stdout + net.stderr
    sim = _submit(tmp_path, *job, "--simulate", "--out", "sim")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    rows = _rounds(tmp_path / "net")
    assert rows == _rounds(tmp_path / "sim")
    return rows


def test_a_thousand_clients_on_four_daemons_train_as_the_same_job_in_process(
    tmp_path, spawn_daemons
):
    daemons = spawn_daemons(5)
    workers = write_workers(tmp_path / "worker.json", daemons[:4], daemons[4])
    job = [*FEDAVG, *SMALL, "--node_count", "1000", "--rounds", "3", "--param",
           "fraction=0.01"]  # fmt: skip
    net = _submit(tmp_path, *job, "--workers", str(workers), "--out", "net")
    assert net.returncode == 0, net.stdout + net.stderr
    sim = _submit(tmp_path, *job, "--simulate", "--out", "sim")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert "1000 clients" in net.stdout and "4 worker daemons hosting them" in net.stdout

    rows = _rounds(tmp_path / "net")
    assert rows == _rounds(tmp_path / "sim")  # same picks, samples, bytes, loss, accuracy
    assert [r["clients"] for r in rows] == ["10"] * 3
    a, b = np.load(tmp_path / "net" / "model.npz"), np.load(tmp_path / "sim" / "model.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])
    summary = json.loads((tmp_path / "net" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["mode"] == "network"
    assert summary["pools"] == 4 and summary["clients_trained"] == 30
    logs = sorted((tmp_path / "net").glob("pool*.log"))
    assert len(logs) == 4
    assert "hosts clients 750..999" in logs[3].read_text()
    assert len(list((tmp_path / "net").iterdir())) < 20  # the folder does not grow with K


def test_fedem_clients_are_evaluated_on_their_daemons_as_in_process(tmp_path):
    job = [*FEDAVG, *SMALL, "--train-samples", "6000", "--node_count", "20", "--rounds", "3",
           "--components", "2", "--eval", "clients", "--param", "fraction=0.3"]  # fmt: skip
    # the same figures: personal mixture weights never left the pools
    rows = _same_on_two_local_daemons_as_in_process(tmp_path, job)
    assert all(float(r["client_accuracy_worst"]) <= float(r["accuracy"]) for r in rows)


def test_dropouts_and_the_round_deadline_on_daemons_as_in_process(tmp_path):
    job = [*FEDAVG, *SMALL, "--train-samples", "6000", "--node_count", "20", "--rounds", "2",
           "--param", "fraction=0.5", "--dropout", "0.3", "--round-deadline", "2.5"]  # fmt: skip
    # the same figures: the same clients dropped, the same averages
    rows = _same_on_two_local_daemons_as_in_process(tmp_path, job)
    assert all(int(r["clients"]) < 10 for r in rows)  # 10 picked a round, some dropped out
    with open(tmp_path / "net" / "rounds.csv") as f:
        walls = [float(r["wall_s"]) for r in csv.DictReader(f)]
    assert walls[0] >= 2.5  # on daemons the deadline is real time: the dropped never answer
    assert "deadline passed with" in (tmp_path / "net" / "ps.log").read_text()


def test_a_failing_client_codec_fails_the_job_by_name_and_the_daemons_stay_up(
    tmp_path, spawn_daemons
):
    (tmp_path / "codecs").mkdir()
    (tmp_path / "codecs" / "broken.py").write_text(
        textwrap.dedent("""
        from federated import FedAvgClient

        class BrokenClient(FedAvgClient):
            def update_blocks(self, block_weight):
                if self.node_id == 7:
                    raise RuntimeError("client seven breaks")
                return super().update_blocks(block_weight)
    """)
    )
    daemons = spawn_daemons(3)
    workers = write_workers(tmp_path / "worker.json", daemons[:2], daemons[2])
    done = _submit(
        tmp_path, "--codec", "broken.BrokenClient", "--ps-codec", "federated.FedAvgServer",
        *SMALL, "--node_count", "10", "--rounds", "3", "--param", "fraction=1.0",
        "--workers", str(workers), "--out", "run",
    )  # fmt: skip
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "pool 1 (clients 5..9)" in output and "node 7" in output
    assert "client seven breaks" in output
    for daemon in daemons:
        wait_idle(daemon.endpoint, 20.0)  # each daemon went back to idle, alive


def test_a_pool_daemon_that_dies_mid_job_is_named(tmp_path, spawn_daemons):
    daemons = spawn_daemons(3)
    spec = JobSpec(
        codec="federated.FedAvgClient", ps_codec="federated.FedAvgServer", node_count=20,
        rounds=200, train_samples=6000, test_samples=500, model=[784, 16, 10],
        params={"fraction": 0.5},
    )  # fmt: skip
    job = prepare_job(spec)
    seen: list[int] = []

    def on_round(stats, model) -> bool:
        seen.append(stats.round_no)
        if stats.round_no == 2:
            daemons[1].process.kill()  # pool 1's host dies
        return False

    pools = [daemons[0].endpoint, daemons[1].endpoint]
    result = RoundSubmitter(job, pools, daemons[2].endpoint, on_round, executors=1).run()
    assert result.error is not None and "pool 1 (clients 10..19)" in result.error
    assert seen[:2] == [1, 2] and len(seen) < 200
    wait_idle(daemons[0].endpoint, 20.0)
    wait_idle(daemons[2].endpoint, 20.0)


EVERYONE_SERVER = """
    from federated import FedAvgServer


    class EveryoneServer(FedAvgServer):
        \"\"\"Picks a few clients but waits for an update from every client: never finishes.\"\"\"

        def receive_blocks(self, content):
            round_no, sender, weights, n_samples = content
            self.updates[sender] = (weights, n_samples)
            return None
"""


def test_a_deadlock_on_daemons_fails_the_job_naming_who_waits(tmp_path):
    (tmp_path / "codecs").mkdir()
    (tmp_path / "codecs" / "everyone.py").write_text(textwrap.dedent(EVERYONE_SERVER))
    started = time.monotonic()
    done = _submit(
        tmp_path, "--codec", "federated.FedAvgClient", "--ps-codec", "everyone.EveryoneServer",
        *SMALL, "--node_count", "20", "--rounds", "3", "--param", "fraction=0.1",
        "--local", "2", "--executors", "1", "--out", "run",
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert time.monotonic() - started < 60  # heartbeats, not the 60 s SSGD timeout
    assert "deadlock after round 0" in output
    assert "the parameter server: its layers [0, 1, 2, 3] wait for updates to finish round 1" in (
        output
    )
    assert "pool 0 (clients 0..9)" in output and "pool 1 (clients 10..19)" in output
    assert "last trained for round 1" in output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
