"""Parallel-SGD-style codecs (``tests/psgd_style``) run unchanged: test scripts, in-process,
on ``--local`` daemons and on long-lived daemons, and a hostile job member cannot make a node
build an object of a class outside the job's codecs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from entry_points import SUBMIT

from psgd.loader import resolve_codec
from psgd.net import protocol, wire_objects
from psgd.net.transport import PeerChannel, member_identity
from psgd.net.wire_objects import ContentClasses
from psgd.testing import check_p2p, check_ps

pytestmark = pytest.mark.timeout(180)

STYLE = Path(__file__).resolve().parents[1] / "psgd_style"
QUICK = ["--train-samples", "12000", "--test-samples", "2000", "--epochs", "1"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


def name(module: str, cls: str) -> str:
    return f"{STYLE / module}:{cls}"


#: Each codec's options, written with Parallel-SGD's words where it has them.
CODECS = {
    "quantized": ["--codec", name("quantized.py", "QuantizedClient"),
                  "--server_codec", name("quantized.py", "QuantizedServer")],
    "accumulating": ["--codec", name("accumulating.py", "AccumulatingClient"),
                     "--server_codec", name("accumulating.py", "AccumulatingServer")],
    "class_params": ["--codec", name("class_params.py", "ClassParamAverage"),
                     "--param", "step_scale=1"],
    "empty_merge": ["--codec", name("empty_merge.py", "EmptyMergeAverage")],
}  # fmt: skip


def submit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SUBMIT, *args], capture_output=True, text=True, timeout=150, cwd=cwd, env=ENV
    )


def run(cwd: Path, out: str, *args: str) -> dict:
    result = submit(cwd, *args, "--out", out, "-q")
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    summary = cwd / out / "summary.json"
    assert summary.exists(), result.stdout + result.stderr
    return json.loads(summary.read_text())


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_psgd_style_codec_passes_the_test_script(codec):
    options = CODECS[codec]
    params = {"step_scale": 1} if codec == "class_params" else None
    if "--server_codec" in options:
        check = check_ps(options[1], options[3], nodes=3, rounds=4, params=params)
    else:
        check = check_p2p(options[1], nodes=3, rounds=4, params=params)
    check.assert_ok()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_psgd_style_codec_learns_in_process_and_on_local_daemons(codec, tmp_path):
    for where in (["--simulate", "--node_count", "2"], ["--local", "2"]):
        summary = run(tmp_path, where[0].strip("-"), *CODECS[codec], *where, *QUICK)
        assert summary["status"] == "completed", summary.get("error")
        assert summary["accuracy"] > 0.8, (where, summary["accuracy"])
        assert summary["params_unread"] == []


def test_the_accumulate_rule_is_what_makes_the_accumulating_server_learn(tmp_path):
    summary = run(tmp_path, "delta", *CODECS["accumulating"], "--simulate", "--exchange",
                  "delta", *QUICK)  # fmt: skip
    assert summary["status"] != "completed" or summary["accuracy"] < 0.5


def test_class_body_params_are_per_job_on_long_lived_daemons(spawn_daemons, tmp_path):
    daemons = spawn_daemons(2)
    workers = tmp_path / "worker.json"
    workers.write_text(json.dumps({"Worker": [str(d.endpoint) for d in daemons]}))
    codec = ["--codec", name("class_params.py", "ClassParamAverage"), "--workers", str(workers),
             "--node_count", "2", *QUICK]  # fmt: skip
    first = run(tmp_path, "up", *codec, "--param", "step_scale=1")
    assert first["status"] == "completed" and first["accuracy"] > 0.8
    # The same daemons, the same codec module: were step_scale=1 kept from the first job,
    # this one would learn; read afresh, -1 makes it climb the loss instead.
    second = run(tmp_path, "down", *codec, "--param", "step_scale=-1")
    assert second["status"] != "completed" or second["accuracy"] < 0.5, second
    third = run(tmp_path, "up-again", *codec, "--param", "step_scale=1")
    assert third["status"] == "completed" and third["accuracy"] > 0.8


def test_double_buffering_with_parallel_sgd_words_learns_on_local_daemons(tmp_path):
    summary = run(tmp_path, "db", "--local", "2", "--optimizer", "double_buffering",
                  "--parallel_sgd", "ssgd", "--block_assignment", "iid", "--learn_rate", "0.05",
                  *QUICK)  # fmt: skip
    # One batch stale costs some accuracy at this learning rate (0.855 without, 0.80 with).
    assert summary["status"] == "completed" and summary["accuracy"] > 0.7
    job = json.loads((tmp_path / "db" / "job.json").read_text())
    assert (job["sync"], job["exchange"], job["optimizer"]) == ("double_buffer", "delta", "sgd")


def test_psgd_run_ships_codec_classes_to_local_daemons(tmp_path):
    import psgd

    client = resolve_codec(name("quantized.py", "QuantizedClient"))
    server = resolve_codec(name("quantized.py", "QuantizedServer"))
    result = psgd.run(
        codec=client,
        ps_codec=server,
        node_count=2,
        local=True,
        out=tmp_path / "api",
        epochs=1,
        train_samples=12000,
        test_samples=2000,
    )
    assert result["summary"]["mode"] == "network" and result["summary"]["accuracy"] > 0.8
    assert result["history"][0]["bytes_per_worker"] > 0 and result["summary"]["bytes_sent"]["ps"]


@pytest.fixture
def job_channels():
    """Node 0 of a job on a real ZeroMQ socket, with the job's content classes active; node 1
    (whose identity the test holds) never connects through a channel of its own."""
    client = resolve_codec(name("quantized.py", "QuantizedClient"))
    classes = ContentClasses.for_codecs([client])
    context = zmq.Context()
    secret = b"s" * 32
    receiver = PeerChannel(context, 0, "job-x", "127.0.0.1", lambda: False, secret=secret)
    receiver.connect({0: receiver.address, 1: "tcp://127.0.0.1:9"})
    wire_objects.set_active(classes)
    yield receiver, classes, context, secret
    wire_objects.set_active(None)
    receiver.close()
    context.term()


def forged(key: str, state: object) -> list[bytes]:
    header = {
        "t": protocol.PACKAGE,
        "job": "job-x",
        "src": 1,
        "layers": [0],
        "body": [[msgpack.ExtType(4, b""), key, state]],
        "proto": protocol.PROTOCOL_VERSION,
    }
    return [msgpack.packb(header)]  # fmt: skip


def test_a_hostile_member_cannot_make_a_node_build_a_foreign_object(job_channels):
    receiver, classes, context, secret = job_channels
    hostile = context.socket(zmq.DEALER)
    hostile.setsockopt(zmq.ROUTING_ID, member_identity(secret, "job-x", 1))  # a real member
    hostile.connect(receiver.address)
    try:
        for key in ("subprocess.Popen", "os._wrap_close", "quantized.np", "quant_pack.np"):
            hostile.send_multipart(forged(key, {"args": ["sh", "-c", "touch /tmp/pwned"]}))
        legit = classes.by_key["quant_pack.QuantizedPack"]
        pack = legit(np.ones(4, np.float32), 127, np.random.default_rng(0))
        hostile.send_multipart(protocol.make_packages("job-x", 1, [(0, pack)]))
        package = receiver.recv(10.0)
    finally:
        hostile.close(linger=0)
    assert package is not None and type(package.content) is legit  # only this one got through
    np.testing.assert_array_equal(package.content.decode(), np.ones(4, np.float32))
    assert receiver.dropped == 4
