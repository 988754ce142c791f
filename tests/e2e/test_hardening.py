"""What an independent audit of the daemons found (issue 11), each pinned on real psgd-worker
daemons over loopback: hostile codecs and jobs, a data plane open only to a job's members,
liveness while a job is prepared, and --local daemons that die with their submitter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from entry_points import SUBMIT, WORKER
from fuzzing import tiny_job

from psgd.cluster.local import DaemonProcess, start_daemon
from psgd.cluster.probe import ask_state, wait_idle
from psgd.cluster.submit import Submitter
from psgd.cluster.workers import Endpoint
from psgd.job import JobSpec
from psgd.net import protocol
from psgd.results.outcome import RunResult
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
SMALL = {"node_count": 1, "train_samples": 600, "test_samples": 100, "epochs": 1}

pytestmark = pytest.mark.timeout(90)

#: A codec module that misbehaves on the worker only (the submitter imports it too).
ON_THE_WORKER = textwrap.dedent(
    """
    import os
    import sys
    import time

    from psgd import Codec

    if sys.argv[1:2] == ["--port"] and "worker" in os.path.basename(sys.argv[0]):
        WHAT_IT_DOES


    class Noop(Codec):
        def dispose(self):
            pass

        def update_blocks(self, block_weight):
            self.set_result(block_weight.content)

        def receive_blocks(self, content):
            pass
    """
)


def codec_doing(tmp_path: Path, name: str, statement: str) -> str:
    """A codec file whose module runs ``statement`` at import on a worker; its codec name."""
    path = tmp_path / f"{name}.py"
    path.write_text(ON_THE_WORKER.replace("WHAT_IT_DOES", statement))
    return f"{path}:Noop"


def log_of(daemon: DaemonProcess) -> str:
    return "".join(p.read_text(errors="replace") for p in daemon.log.glob("worker-*.log"))


def wait_for(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def dealer(context: zmq.Context, address: str) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def reply(sock: zmq.Socket, want: str, timeout_s: float = 10.0) -> protocol.Message:
    """The next message of type ``want`` (the daemon's heartbeats pass by)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert sock.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"no {want}"
        message = protocol.parse(sock.recv_multipart(), protocol.CONTROL_TYPES)
        if message.type == want:
            return message
        assert message.type == protocol.HEARTBEAT, (want, message.fields)


def hello(sock: zmq.Socket) -> tuple[protocol.Message, float]:
    """A HELLO_REPLY and how long it took."""
    started = time.monotonic()
    sock.send_multipart(protocol.make(protocol.HELLO))
    answer = reply(sock, protocol.HELLO_REPLY)
    return answer, time.monotonic() - started


@pytest.fixture
def context():
    made = zmq.Context()
    yield made
    made.destroy(linger=0)


# -- 1. a codec that exits at import ------------------------------------------------------


def test_codec_raising_systemexit_or_keyboardinterrupt_at_import_is_rejected(
    spawn_daemons, tmp_path
):
    daemon = spawn_daemons(1)[0]
    for name, statement, shown in (
        ("needs_torch", 'sys.exit("needs torch")', "SystemExit: needs torch"),
        ("interrupts", "raise KeyboardInterrupt('at import')", "KeyboardInterrupt: at import"),
    ):
        job = prepare_job(JobSpec(codec=codec_doing(tmp_path, name, statement), **SMALL))
        started = time.monotonic()
        result = Submitter(job, [daemon.endpoint]).run()
        assert result.error is not None
        assert "rejected the job: cannot load the codec" in result.error and shown in result.error
        assert time.monotonic() - started < 10
        assert daemon.process.poll() is None, "the daemon died of its job's codec"
        assert wait_idle(daemon.endpoint) == "idle"
    assert "SystemExit: needs torch" in log_of(daemon)


# -- 4. bounded jobs, prepared off the control thread -------------------------------------


def test_oversized_or_inconsistent_jobs_are_refused_at_once(spawn_daemons, context):
    daemon = spawn_daemons(1)[0]
    sock = dealer(context, daemon.endpoint.address)
    worker = {**tiny_job("huge", "worker"), "spec": {"node_count": 10**7}}
    for fields, reason in (
        (worker, "node_count 10000000 exceeds the limit of 100000"),
        ({**worker, "spec": {"node_count": 1000, "redundancy": 3}}, "C(1000, 3) > 100000 blocks"),
        ({**worker, "spec": {"node_count": 1}, "node": 5}, "node 5 is not a worker of a job of 1"),
        ({**tiny_job("ps"), "node": 3}, "the parameter server is node -2, not 3"),
    ):
        started = time.monotonic()
        sock.send_multipart(protocol.make(protocol.JOB, {"weights": []}, **fields))
        rejected = reply(sock, protocol.REJECTED)
        assert reason in rejected["reason"]
        assert time.monotonic() - started < 2.0
        answer, took = hello(sock)
        assert answer["state"] == "idle" and took < 1.0


def test_a_slow_codec_import_leaves_the_daemon_answering_and_stoppable(spawn_daemons, context):
    daemon = spawn_daemons(1)[0]
    owner = dealer(context, daemon.endpoint.address)
    other = dealer(context, daemon.endpoint.address)
    slow = "import time\ntime.sleep(60)\n"
    job = tiny_job("slow-import", bundle={"fuzzcodec": slow})
    owner.send_multipart(protocol.make(protocol.JOB, **job))
    beat = reply(owner, protocol.HEARTBEAT)  # at once: the job arrived
    assert beat["job"] == "slow-import"
    wait_for("the import to start", lambda: "job slow-import node -2: preparing" in log_of(daemon))
    for _ in range(5):
        answer, took = hello(other)
        assert answer["state"] == "busy" and took < 1.0
        assert "slow-import" not in repr(answer.fields)  # strangers never learn the job's id
    reply(owner, protocol.HEARTBEAT)  # heartbeats go on while the codec loads
    stopped = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
    assert time.monotonic() - stopped < 10
    assert "leaving its thread behind" in log_of(daemon)


# -- 7. liveness from the first message of a job ------------------------------------------


def test_a_worker_killed_while_preparing_a_job_is_named_within_seconds(spawn_daemons, tmp_path):
    daemons = spawn_daemons(2)
    codec = codec_doing(tmp_path, "slow", "time.sleep(20)")
    job = prepare_job(JobSpec(codec=codec, **{**SMALL, "node_count": 2}))
    outcome: dict[str, RunResult] = {}
    submitter = Submitter(job, [d.endpoint for d in daemons])
    thread = threading.Thread(target=lambda: outcome.setdefault("r", submitter.run()))
    thread.start()
    wait_for("node 1 to prepare", lambda: "node 1: preparing" in log_of(daemons[1]))
    killed = time.monotonic()
    daemons[1].process.kill()
    thread.join(30)
    named_after = time.monotonic() - killed
    error = outcome["r"].error
    assert error is not None and f"node 1 ({daemons[1].endpoint}) died" in error, error
    print(f"\nworker killed while preparing a job: named after {named_after:.1f} s: {error}")
    assert named_after < 6.0


# -- 5. the data plane: members only; no job id for strangers; divergence -----------------


class GatedSubmitter(Submitter):
    """Holds FINISH back until ``gate`` is set, so the job's data ports stay open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.trained = 0
        self._held: list[Any] = []
        self._handlers[protocol.TRAINED] = self._hold

    def _hold(self, node: Any, message: protocol.Message) -> None:
        self._held.append((node, message))
        self.trained += 1

    def _heartbeat(self, now: float) -> None:
        super()._heartbeat(now)
        if self.gate.is_set() and self._held:
            held, self._held = self._held, []
            for node, message in held:
                Submitter._on_trained(self, node, message)


def forged_packages(job_id: str, layers: list[tuple[int, ...]], rounds: int) -> list[list[Any]]:
    """NaN blocks of node 1 for Plain, every layer, rounds 0..rounds-1: what a job id buys."""
    forged = []
    for round_no in range(rounds):
        for layer, shape in enumerate(layers):
            content = [(round_no, 1, np.full(shape, np.nan, dtype=np.float32))]
            forged.append(protocol.make(protocol.PACKAGE, content, job=job_id, src=1,
                                        layers=[layer]))  # fmt: skip
    return forged


def test_forged_packages_of_the_job_change_nothing(spawn_daemons, context):
    daemons = spawn_daemons(2)
    spec = {"node_count": 2, "train_samples": 1200, "test_samples": 300, "epochs": 2,
            "model": [784, 16, 10], "seed": 4}  # fmt: skip
    job = prepare_job(JobSpec(**spec))
    submitter = GatedSubmitter(job, [d.endpoint for d in daemons])
    outcome: dict[str, RunResult] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("r", submitter.run()))
    thread.start()
    try:
        wait_for("both nodes accepted", lambda: all(n.data_port for n in submitter.nodes.values()))
        stranger = dealer(context, f"tcp://127.0.0.1:{submitter.nodes[0].data_port}")
        forged = forged_packages(job.spec.job_id, [(784, 16), (16,), (16, 10), (10,)], 150)
        for frames in forged:
            stranger.send_multipart(frames)
        wait_for("every forged package dropped",
                 lambda: submitter.nodes[0].data_dropped >= len(forged))  # fmt: skip
        answer, _ = hello(dealer(context, daemons[0].endpoint.address))
        assert answer["state"] == "busy" and set(answer.fields) == {"state", "pid", "limits"}
    finally:
        submitter.gate.set()
        thread.join(60)
    result = outcome["r"]
    assert result.error is None, result.error
    alone = simulate(prepare_job(JobSpec(**spec)))
    assert [r.accuracy for r in result.reports] == pytest.approx(
        [r.accuracy for r in alone.reports], abs=1e-6
    )
    assert np.isfinite([r.loss for r in result.reports]).all()
    assert "600 peer messages dropped" in log_of(daemons[0])


def test_a_diverging_job_is_never_completed(tmp_path):
    run = subprocess.run(
        [*SUBMIT, "--local", "2", "--train-samples", "1200",
         "--test-samples", "200", "--epochs", "1", "--attack", "1:scale:1e308", "--out", "run"],
        capture_output=True, text=True, timeout=80, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert re.search(r"node \d diverged: .* epoch 1 batch 0 \(round 0\)", summary["error"])
    assert "diverged" in run.stderr and "Traceback" not in run.stderr


# -- 3. --local daemons die with their submitter ------------------------------------------


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_local_daemons_end_with_their_submitter(tmp_path, how):
    job = subprocess.Popen(
        [*SUBMIT, "--local", "2", "--epochs", "50",
         "--out", "run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert job.stdout is not None
    for line in job.stdout:
        if re.search(r" batch \d+/", line):
            break
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "daemons").glob("worker-*.log"))
    pids = [int(pid) for pid in re.findall(r"listening on \S+ \(pid (\d+)\)", logs)]
    assert len(pids) == 2
    job.send_signal(how)
    _, err = job.communicate(timeout=30)
    if how == signal.SIGTERM:
        assert job.returncode == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in err, err
    wait_for("the daemons to end", lambda: not any(alive(pid) for pid in pids), 30)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has ended


# -- 11. IPv6 --------------------------------------------------------------------------------


def test_daemons_bound_to_ipv6_loopback_run_a_job(tmp_path):
    daemons = [start_daemon(tmp_path / "logs", host="::1", command=WORKER) for _ in range(2)]
    try:
        assert all(d.endpoint.host == "::1" for d in daemons)
        listing = {"Worker": [str(d.endpoint) for d in daemons]}
        (tmp_path / "worker.json").write_text(json.dumps(listing))
        assert listing["Worker"][0].startswith("[::1]:")
        run = subprocess.run(
            [*SUBMIT, "--workers", "worker.json",
             "--node_count", "2", "--train-samples", "1200", "--test-samples", "200",
             "--epochs", "1", "--out", "run", "-q"],
            capture_output=True, text=True, timeout=80, cwd=tmp_path, env=ENV,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["accuracy"] > 0.5
        assert ask_state(Endpoint("::1", daemons[0].endpoint.port)) == "idle"
    finally:
        for daemon in daemons:
            daemon.stop()
