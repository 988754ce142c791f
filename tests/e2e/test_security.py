"""CURVE clusters, refused peers, loopback-only defaults and size limits, on real daemons."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
import zmq
from entry_points import SUBMIT, WORKER
from fuzzing import tiny_job

from psgd.cluster.local import start_daemon
from psgd.cluster.probe import ask_state
from psgd.cluster.submit import Submitter
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.net import protocol
from psgd.net.security import Security, add_key, generate_keys
from psgd.train.prepare import prepare_job

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
SMALL = {"node_count": 1, "train_samples": 600, "test_samples": 100, "epochs": 1}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    generate_keys(folder)
    return folder


@pytest.fixture
def secure_daemon(tmp_path, keys):
    daemon = start_daemon(tmp_path / "logs", extra=["--keys", str(keys)], command=WORKER)
    yield daemon
    daemon.stop()


def daemon_log(daemon) -> str:
    return "".join(p.read_text() for p in daemon.log.glob("worker-*.log"))


def wait_for_log(daemon, text: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in daemon_log(daemon):
        assert time.monotonic() < deadline, daemon_log(daemon)[-2000:]
        time.sleep(0.05)
    return daemon_log(daemon)


def test_generate_writes_private_secrets_and_authorised_publics(keys):
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == [
        "submitter.key",
        "worker.key",
    ]
    for secret in keys.glob("*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keys(keys)


def test_job_with_keys_runs_end_to_end(tmp_path, keys):
    proc = subprocess.run(
        [*SUBMIT, "--local", "2", "--keys", str(keys),
         "--train-samples", "4000", "--test-samples", "500", "--epochs", "1", "--out", "run"],
        capture_output=True, text=True, timeout=100, cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["accuracy"] > 0.7
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "daemons").glob("*.log"))
    assert "CURVE on" in logs and "refused" not in logs


def test_unauthorised_key_is_refused_and_logged_with_its_address(tmp_path, keys, secure_daemon):
    intruder = tmp_path / "intruder"
    intruder.mkdir()
    for item in keys.iterdir():  # knows the worker's public key, but its own key is not authorised
        if item.is_dir():
            (intruder / item.name).mkdir()
            for key in item.iterdir():
                (intruder / item.name / key.name).write_bytes(key.read_bytes())
    add_key(intruder, "mallory")
    job = prepare_job(JobSpec(**SMALL))
    security = Security.for_submitter(intruder, "mallory")
    result = Submitter(job, [secure_daemon.endpoint], answer_timeout_s=1.5, security=security).run()
    assert result.error is not None and "is your public key in its authorized/" in result.error
    log = wait_for_log(secure_daemon, "refused a connection from 127.0.0.1")
    assert "Unknown key" in log
    assert "starting with codecs" not in log  # nothing reached job handling


def test_plaintext_submitter_is_refused_and_logged(secure_daemon):
    job = prepare_job(JobSpec(**SMALL))
    result = Submitter(job, [secure_daemon.endpoint], answer_timeout_s=1.5).run()
    assert result.error is not None and "answers only submitters with --keys" in result.error
    # The address comes from the accepted socket; a peer that hangs up at once can be gone
    # before it is read, so it may be logged as unknown (ZAP refusals always carry it).
    log = wait_for_log(secure_daemon, "refused a connection from ")
    assert "plaintext client" in log or "wrong server key" in log


def test_without_keys_the_worker_stays_on_loopback_unless_told_insecure(tmp_path):
    refused = subprocess.run(
        [*WORKER, "--bind", "0.0.0.0", "--port", "0", "--log-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, env=ENV,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without --keys" in refused.stderr
    daemon = start_daemon(tmp_path / "logs", host="0.0.0.0", extra=["--insecure"], command=WORKER)
    try:
        assert "INSECURE: listening on 0.0.0.0 without keys" in daemon_log(daemon)
    finally:
        daemon.stop()


def test_job_over_the_worker_limit_is_refused_before_sending(tmp_path):
    daemon = start_daemon(tmp_path / "logs", extra=["--max-job-mb", "1"], command=WORKER)
    try:
        job = prepare_job(JobSpec(node_count=1, train_samples=2000, test_samples=100, epochs=1))
        result = Submitter(job, [daemon.endpoint]).run()
        assert result.error is not None
        assert "accepts at most 1.0 MB (its --max-job-mb)" in result.error
    finally:
        daemon.stop()


def test_oversized_message_gets_a_clear_refusal_and_the_daemon_keeps_serving(tmp_path):
    limits = ["--max-message-mb", "0.5", "--max-job-mb", "0.5"]
    daemon = start_daemon(tmp_path / "logs", extra=limits, command=WORKER)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(daemon.endpoint.address)
        sock.send_multipart([b"x" * 400_000, b"y" * 400_000])
        assert sock.poll(5000)
        reply = protocol.parse(sock.recv_multipart(), protocol.CONTROL_TYPES)
        assert reply.type == protocol.REFUSED
        assert "exceeds the limit of 0.5 MB" in reply["reason"]
        sock.send_multipart(protocol.make(protocol.HELLO))
        assert sock.poll(5000)
        hello = protocol.parse(sock.recv_multipart(), protocol.CONTROL_TYPES)
        assert hello["state"] == "idle" and hello["limits"]["max_job_bytes"] == 500_000
    finally:
        sock.close()
        context.term()
        daemon.stop()


def test_key_folders_are_private_from_the_start(tmp_path, monkeypatch):
    monkeypatch.setattr("psgd.net.keys.os.chmod", lambda *args: None)  # no tightening after
    old = os.umask(0o022)
    try:
        keys = tmp_path / "keys"
        generate_keys(keys)
        add_key(keys, "alice", tmp_path / "alice")
    finally:
        os.umask(old)
    alice = tmp_path / "alice"
    for folder in (keys, keys / "authorized", alice, alice / "authorized"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for secret in [*keys.glob("*.key_secret"), alice / "alice.key_secret"]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_submitters_get_a_folder_without_the_worker_secret_and_can_be_revoked(
    tmp_path, keys, secure_daemon
):
    alice = tmp_path / "alice"
    add_key(keys, "alice", alice)
    assert sorted(str(p.relative_to(alice)) for p in alice.rglob("*.key*")) == [
        "alice.key_secret", "authorized/worker.key"
    ]  # fmt: skip
    assert not (keys / "alice.key_secret").exists()
    as_alice = Security.for_submitter(alice, "alice")
    assert ask_state(secure_daemon.endpoint, 3.0, as_alice) == "idle"
    # The workers' own key may not submit: it is authorised on data ports only.
    as_worker = Security.for_worker(keys)
    assert ask_state(secure_daemon.endpoint, 1.5, as_worker) == "silent"
    # Revoked: her public key removed from the daemon's authorized/, no restart.
    (keys / "authorized" / "alice.key").unlink()
    assert ask_state(secure_daemon.endpoint, 1.5, as_alice) == "silent"
    log = wait_for_log(secure_daemon, "Unknown key")
    assert re.search(r"refused a connection from 127\.0\.0\.1 on control port tcp://", log)
    job = prepare_job(JobSpec(**SMALL))  # the folder's own submitter key still works
    result = Submitter(job, [secure_daemon.endpoint], security=Security.for_submitter(keys)).run()
    assert result.error is None, result.error


def test_refused_data_port_connections_are_logged_with_address_and_port(keys, secure_daemon):
    context = zmq.Context()
    try:
        owner = context.socket(zmq.DEALER)
        owner.setsockopt(zmq.LINGER, 0)
        Security.for_submitter(keys).client(owner)
        owner.connect(secure_daemon.endpoint.address)
        owner.send_multipart(protocol.make(protocol.JOB, **tiny_job("open-port")))
        accepted = wait_reply(owner, protocol.ACCEPTED)
        data = f"tcp://127.0.0.1:{accepted['data']}"
        owner.send_multipart(protocol.make(protocol.START, job="open-port", peers={-2: data}))
        plaintext = context.socket(zmq.DEALER)
        submitter_key = context.socket(zmq.DEALER)  # a submitter's key has no business there
        Security.for_submitter(keys).client(submitter_key)
        for sock in (plaintext, submitter_key):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(data)
            sock.send(b"hello?")
        on_data_port = f"on data port {data} (job open-port node -2)"
        log = wait_for_log(secure_daemon, f"{on_data_port}: Unknown key")
        # A plaintext client fails the CURVE handshake; libzmq reports it either way, and
        # without its address when the client hung up before the monitor could read it.
        source = r"(127\.0\.0\.1:\d+|an unknown address \([^)]*\))"
        pattern = rf"refused a connection from {source} {re.escape(on_data_port)}: "
        pattern += r"(handshake failed \(plaintext client\?\)|protocol error)"
        deadline = time.monotonic() + 10
        while not re.search(pattern, log):
            assert time.monotonic() < deadline, log[-2000:]
            time.sleep(0.05)
            log = daemon_log(secure_daemon)
        owner.send_multipart(protocol.make(protocol.ABORT, job="open-port", reason="done"))
    finally:
        context.destroy(linger=0)


def wait_reply(sock, want: str, timeout_s: float = 10.0) -> protocol.Message:
    deadline = time.monotonic() + timeout_s
    while True:
        assert sock.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"no {want}"
        message = protocol.parse(sock.recv_multipart(), protocol.CONTROL_TYPES)
        if message.type == want:
            return message
