"""Jobs on real worker.py daemons over loopback: results, failures, and daemons that stay up."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from entry_points import PSGD, SUBMIT, WORKER
from worker_list import write_workers

from psgd.cluster.probe import ask_state, wait_idle
from psgd.cluster.submit import Submitter
from psgd.cluster.workers import Endpoint
from psgd.job import JobSpec
from psgd.net import protocol
from psgd.nn import load_model
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

QUICK = ["--train-samples", "6000", "--test-samples", "1000", "--epochs", "1"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

pytestmark = pytest.mark.timeout(180)


def submit(tmp_path: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SUBMIT, *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=ENV,
    )  # fmt: skip


def start_training(tmp_path: Path, workers: Path, nodes: int, out: str = "run") -> subprocess.Popen:
    """A long job_submit.py run (50 epochs), returned once its first batch is reported."""
    job = subprocess.Popen(
        [*SUBMIT, "--workers", str(workers),
         "--node_count", str(nodes), "--epochs", "50", "--out", out],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert job.stdout is not None
    for line in job.stdout:
        if re.search(r" batch \d+/", line):
            break
    return job


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_plain_two_workers_matches_the_in_process_run(spawn_daemons, tmp_path):
    daemons = spawn_daemons(2)
    workers = write_workers(tmp_path / "worker.json", daemons)
    result = submit(tmp_path, "--workers", str(workers), "--node_count", "2", "--seed", "5",
                    *QUICK, "--out", "net")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    net = summary_of(tmp_path / "net")
    assert net["status"] == "completed" and net["mode"] == "network"
    local = simulate(prepare_job(JobSpec(seed=5, node_count=2, train_samples=6000,
                                         test_samples=1000, epochs=1)))  # fmt: skip
    assert local.error is None
    assert net["accuracy"] == pytest.approx(local.reports[0].accuracy, abs=1e-6)
    net_model = load_model(tmp_path / "net" / "model.npz")
    for ours, theirs in zip(net_model.get_weights(), local.weights[0], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert net["bytes_sent"]["0"] == local.reports[0].bytes_sent
    for name in ("worker-node0.log", "worker-node1.log", "train-node0.csv", "eval-node1.csv",
                 "plot.png", "model.npz"):  # fmt: skip
        assert (tmp_path / "net" / name).exists(), name


def test_four_workers_run_back_to_back_jobs_on_the_same_daemons(spawn_daemons, tmp_path):
    daemons = spawn_daemons(4)
    workers = write_workers(tmp_path / "worker.json", daemons)
    for run in ("first", "second"):
        result = submit(tmp_path, "--workers", str(workers), "--node_count", "4", *QUICK,
                        "--out", run)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        summary = summary_of(tmp_path / run)
        assert summary["accuracy"] > 0.75 and len(summary["nodes"]) == 4
    assert all(d.process.poll() is None for d in daemons)


def test_fedavg_with_a_ps_daemon(spawn_daemons, tmp_path):
    *workers, ps = spawn_daemons(3)
    listing = write_workers(tmp_path / "worker.json", workers, ps)
    result = submit(tmp_path, "--workers", str(listing), "--node_count", "2",
                    "--codec", "fedavg.FedAvgClient", "--ps-codec", "fedavg.FedAvgServer",
                    "--param", "local_steps=5", *QUICK, "--out", "run")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(tmp_path / "run")
    assert summary["bytes_sent"]["ps"] > 0 and summary["accuracy"] > 0.75


def test_asgd_over_the_network(spawn_daemons, tmp_path):
    workers = write_workers(tmp_path / "worker.json", spawn_daemons(2))
    result = submit(tmp_path, "--workers", str(workers), "--node_count", "2", "--sync", "asgd",
                    *QUICK, "--out", "run")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    nodes = summary_of(tmp_path / "run")["nodes"]
    assert max(node["accuracy"] for node in nodes) > 0.7  # the last to finish has every round


def test_local_flag_starts_and_stops_its_own_daemons(tmp_path):
    result = submit(tmp_path, "--local", "2", *QUICK, "--out", "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 local daemons" in result.stdout
    assert summary_of(tmp_path / "run")["status"] == "completed"


def test_killed_worker_is_named_and_the_others_return_to_idle(spawn_daemons, tmp_path):
    daemons = spawn_daemons(3)
    workers = write_workers(tmp_path / "worker.json", daemons)
    job = start_training(tmp_path, workers, 3, "run")
    killed_at = time.monotonic()
    daemons[1].process.send_signal(signal.SIGKILL)
    output, _ = job.communicate(timeout=60)
    reported_after = time.monotonic() - killed_at
    assert job.returncode != 0
    assert f"node 1 ({daemons[1].endpoint}) died" in output, output[-2000:]
    assert reported_after < 15
    for survivor in (daemons[0], daemons[2]):
        assert wait_idle(survivor.endpoint) == "idle"
    survivors = write_workers(tmp_path / "survivors.json", [daemons[0], daemons[2]])
    again = submit(tmp_path, "--workers", str(survivors), "--node_count", "2", *QUICK,
                   "--out", "again")  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr


FAILING_CODECS = textwrap.dedent(
    """
    import os
    import sys

    from psgd import Codec, GlobalSettings, netEncapsulation

    if sys.argv[1:2] == ["--port"] and "worker" in os.path.basename(sys.argv[0]):
        import a_module_only_the_submitter_has  # noqa: F401


    class Explodes(Codec):
        def dispose(self):
            pass

        def update_blocks(self, block_weight):
            others = GlobalSettings.get_default().get_adversary(block_weight.block_id)
            self.set_result(block_weight.content)
            return netEncapsulation(others, 1)

        def receive_blocks(self, content):
            raise ZeroDivisionError("boom on the worker")
    """
)


def test_codec_exception_reaches_the_submitter_and_daemons_serve_the_next_job(
    spawn_daemons, tmp_path
):
    daemons = spawn_daemons(2)
    workers = write_workers(tmp_path / "worker.json", daemons)
    (tmp_path / "codecs").mkdir()
    (tmp_path / "codecs" / "broken.py").write_text(
        FAILING_CODECS.replace('"worker" in', '"never" in')
    )
    failed = submit(tmp_path, "--workers", str(workers), "--node_count", "2",
                    "--codec", "broken.Explodes", *QUICK, "--out", "bad")  # fmt: skip
    assert failed.returncode == 1
    assert "ZeroDivisionError: boom on the worker" in failed.stderr
    assert "Traceback" in failed.stderr  # the worker's traceback, shown at the submitter
    assert summary_of(tmp_path / "bad")["status"] == "failed"
    for daemon in daemons:
        assert wait_idle(daemon.endpoint) == "idle"
    good = submit(tmp_path, "--workers", str(workers), "--node_count", "2", *QUICK, "--out", "ok")
    assert good.returncode == 0, good.stdout + good.stderr


def test_codec_that_cannot_load_on_the_worker_fails_before_training(spawn_daemons, tmp_path):
    workers = write_workers(tmp_path / "worker.json", spawn_daemons(2))
    (tmp_path / "codecs").mkdir()
    (tmp_path / "codecs" / "broken.py").write_text(FAILING_CODECS)
    result = submit(tmp_path, "--workers", str(workers), "--node_count", "2",
                    "--codec", "broken.Explodes", *QUICK, "--out", "bad")  # fmt: skip
    assert result.returncode == 1
    assert "rejected the job: cannot load the codec" in result.stderr
    assert "a_module_only_the_submitter_has" in result.stderr
    assert not re.search(r" batch \d+/", result.stdout)  # no training started


def test_busy_worker_refuses_a_second_job(spawn_daemons, tmp_path):
    daemon = spawn_daemons(1)[0]
    workers = write_workers(tmp_path / "worker.json", [daemon])
    long_job = start_training(tmp_path, workers, 1, "long")
    try:
        second = submit(tmp_path, "--workers", str(workers), "--node_count", "1", *QUICK,
                        "--out", "second")  # fmt: skip
        assert second.returncode == 1
        assert "is busy with another job" in second.stderr
    finally:
        long_job.send_signal(signal.SIGINT)
        long_job.wait(timeout=30)
    assert wait_idle(daemon.endpoint) == "idle"


def test_protocol_version_mismatch_is_refused_naming_both_versions(
    spawn_daemons, tmp_path, monkeypatch
):
    daemon = spawn_daemons(1)[0]
    job = prepare_job(JobSpec(node_count=1, train_samples=500, test_samples=100, epochs=1))
    monkeypatch.setattr("psgd.net.wire_format.PROTOCOL_VERSION", 99)
    result = Submitter(job, [daemon.endpoint]).run()
    assert result.error is not None
    assert "99" in result.error and str(protocol.PROTOCOL_VERSION) in result.error
    assert "protocol" in result.error
    monkeypatch.undo()
    assert ask_state(daemon.endpoint) == "idle"


def test_unreachable_worker_is_a_bounded_clear_failure(tmp_path):
    job = prepare_job(JobSpec(node_count=1, train_samples=500, test_samples=100, epochs=1))
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close()
    context.term()
    started = time.monotonic()
    result = Submitter(job, [Endpoint("127.0.0.1", port)], answer_timeout_s=1.0).run()
    assert time.monotonic() - started < 10
    assert "no answer from node 0 (127.0.0.1:" in result.error
    assert "is psgd-worker running there?" in result.error


def test_daemon_survives_garbage_and_stops_cleanly_on_sigterm(spawn_daemons):
    daemon = spawn_daemons(1)[0]
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint.address)
    rng = np.random.default_rng(0)
    for size in range(2000):
        sock.send_multipart([rng.bytes(size % 64 + 1) for _ in range(size % 4 + 1)])
    # A peer's messages are handled in order: once this hello is answered, all of it was.
    sock.send_multipart(protocol.make(protocol.HELLO))
    assert sock.poll(15_000)
    assert protocol.parse(sock.recv_multipart(), protocol.CONTROL_TYPES)["state"] == "idle"
    sock.close()
    context.term()

    def log() -> str:
        return "".join(p.read_text() for p in daemon.log.glob("worker-*.log"))

    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
    assert "stopped after 0 jobs" in log()
    # Every drop counted, a bounded number of lines for them: a few in full per interval.
    assert "2000 malformed control messages dropped in all" in log()
    assert log().count("\n") < 50, log()[-3000:]


def test_port_in_use_is_one_clear_line_and_exit_code_1(spawn_daemons, tmp_path):
    daemon = spawn_daemons(1)[0]
    second = subprocess.run(
        [*WORKER, "--port", str(daemon.endpoint.port),
         "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=30, env=ENV,
    )  # fmt: skip
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    assert second.stderr.strip().startswith("psgd-worker: cannot listen on tcp://127.0.0.1:")
    assert "Address already in use" in second.stderr


def test_killed_submitter_makes_the_workers_abort_and_return_to_idle(spawn_daemons, tmp_path):
    daemons = spawn_daemons(2)
    workers = write_workers(tmp_path / "worker.json", daemons)
    job = start_training(tmp_path, workers, 2, "run")
    job.kill()
    job.wait(timeout=10)
    assert ask_state(daemons[0].endpoint) == "busy"
    for daemon in daemons:
        assert wait_idle(daemon.endpoint, timeout_s=20) == "idle"
    log = "".join(p.read_text() for p in daemons[0].log.glob("worker-*.log"))
    assert "submitter silent for" in log


def test_detached_job_runs_on_and_retrieve_fetches_its_results(tmp_path):
    started = submit(tmp_path, "--local", "2", *QUICK, "--param", "note=x", "--out", "run",
                     "--detach")  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "detached" in started.stdout and "retrieve run" in started.stdout
    fetched = subprocess.run(
        [*SUBMIT, "retrieve", "run"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "completed" in fetched.stdout and "mean: test accuracy" in fetched.stdout
    summary = summary_of(tmp_path / "run")
    assert summary["status"] == "completed" and summary["spec"]["params"] == {"note": "x"}
    assert summary["spec"]["train_samples"] == 6000


def test_retrieve_of_a_folder_without_a_run_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    fetched = subprocess.run(
        [*SUBMIT, "retrieve", "empty"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert fetched.returncode == 1 and "no run here" in fetched.stderr


def test_interrupted_job_resumes_from_its_checkpoint_to_the_uninterrupted_accuracy(
    spawn_daemons, tmp_path
):
    daemons = spawn_daemons(2)
    workers = write_workers(tmp_path / "worker.json", daemons)
    options = ["--train-samples", "4000", "--test-samples", "1000", "--epochs", "12",
               "--seed", "3"]  # fmt: skip
    job = subprocess.Popen(
        [*SUBMIT, "--workers", str(workers),
         "--node_count", "2", *options, "--checkpoint-every", "1", "--out", "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list((tmp_path / "run").glob("checkpoint-e2-node1.npz")):
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    daemons[1].process.kill()  # the crash
    output, _ = job.communicate(timeout=60)
    assert job.returncode != 0, output
    resumed = submit(tmp_path, "--resume", "run", "--local", "2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    after = summary_of(tmp_path / "run")
    assert after["status"] == "completed" and list((tmp_path / "run").glob("summary-failed-*"))
    straight = simulate(prepare_job(JobSpec(node_count=2, train_samples=4000, test_samples=1000,
                                            epochs=12, seed=3)))  # fmt: skip
    assert after["accuracy"] == pytest.approx(straight.reports[0].accuracy, abs=2e-3)
    rows = (tmp_path / "run" / "eval-node0.csv").read_text().splitlines()
    assert len(rows) == 13  # every epoch recorded once, checkpointed part included


def test_status_command_names_each_daemon_state(spawn_daemons, tmp_path):
    daemon = spawn_daemons(1)[0]
    listing = write_workers(tmp_path / "worker.json", [daemon])
    shown = subprocess.run(
        [*PSGD, "status", "--workers", str(listing), "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert shown.returncode == 1  # one of them is silent
    assert "127.0.0.1:1  silent" in shown.stdout
    shown = subprocess.run(
        [*PSGD, "status", "--workers", str(listing)],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert shown.returncode == 0 and f"{daemon.endpoint}  idle" in shown.stdout
