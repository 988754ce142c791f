"""Jobs across "hosts": one psgd-worker per network namespace, psgd-submit in the root one.

Every daemon listens on the default port 15387 of its own namespace address, so the test also
shows that worker.json's addresses (not loopback) carry the control and the data traffic.
Shaped links (``bench/netlab.py``): a transfer takes at least size / bandwidth, and a job over
them completes, each node's training held back by its uplink.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from entry_points import SUBMIT, WORKER
from netns import (
    TCP_PAYLOAD_SHARE,
    Daemon,
    Lab,
    NetemUnavailable,
    NetnsUnavailable,
    Shape,
    netem_available,
    time_transfer,
)

from psgd.net.security import generate_keys
from psgd.nn.blas import BLAS_ENV_VARS

PORT = 15387
SUBMIT_TIMEOUT_S = 90.0
LOG_WAIT_S = 10.0
SHAPED_RATE = "20mbit"
TRANSFER_BYTES = 2_500_000
TRANSFER_TIMEOUT_S = 30.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A bridge for namespaces; daemons, namespaces, veths and bridge removed afterwards."""
    try:
        made = Lab()
    except NetnsUnavailable as exc:
        pytest.skip(f"no network namespaces here: {exc}")
    try:
        yield made
    finally:
        made.close()
    assert not made.leftovers(), f"teardown left {made.leftovers()}"


def _hosts(lab: Lab, count: int, shape: Shape | None = None) -> list[Any]:
    try:
        return [lab.add_host(shape) for _ in range(count)]
    except NetnsUnavailable as exc:
        pytest.skip(f"no network namespaces or tc shaping here: {exc}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in BLAS_ENV_VARS:
        env[name] = "1"  # several processes share this machine's cores
    return env


def _start_daemons(
    lab: Lab, count: int, log_root: Path, security: list[str], shape: Shape | None = None
) -> list[Daemon]:
    """``count`` namespaces, each running ``psgd-worker --bind <its address> --port 15387``.

    ``security`` is ``["--keys", DIR]`` (CURVE) or ``["--insecure"]`` (a bind beyond loopback
    without keys must be insisted on); ``shape`` shapes every host's link.
    """
    hosts = _hosts(lab, count, shape)
    daemons = []
    for host in hosts:
        argv = [*WORKER, "--bind", host.address,
                "--port", str(PORT), "--log-dir", str(log_root / host.namespace),
                *security]  # fmt: skip
        ready = f"psgd worker listening on tcp://{host.address}:{PORT}"
        daemons.append(lab.start(host, argv, ready, env=_env(), cwd=log_root.parent))
    return daemons


def _submit(
    tmp_path: Path, workers: list[Daemon], ps: Daemon | None, *options: str, samples: int = 6000
) -> Any:
    listing: dict[str, Any] = {"Worker": [f"{d.host.address}:{PORT}" for d in workers]}
    if ps is not None:
        listing["PS"] = f"{ps.host.address}:{PORT}"
    (tmp_path / "worker.json").write_text(json.dumps(listing), encoding="utf-8")
    command = [*SUBMIT, "--workers", "worker.json",
               "--node_count", str(len(workers)), "--train-samples", str(samples),
               "--test-samples", "1000", "--epochs", "1", "--out", str(tmp_path / "run"),
               *options]  # fmt: skip
    return subprocess.run(
        command,
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=SUBMIT_TIMEOUT_S,
        check=False,
    )


def _assert_completed(done: Any, tmp_path: Path, nodes: int) -> dict[str, Any]:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output, output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "completed", summary.get("error")
    assert [n["node"] for n in summary["nodes"]] == list(range(nodes))
    for node in summary["nodes"]:
        assert node["bytes_sent"] > 0, node
    return summary


def _assert_served(daemon: Daemon, log_root: Path, job_id: str, role: str) -> None:
    """The daemon's own log: listening on its namespace address, job run and over there."""
    log = log_root / daemon.host.namespace / f"worker-{PORT}.log"
    address = re.escape(daemon.host.address)
    served = re.compile(
        rf"job {job_id}: node \S+ \({role}\) starting with codecs .* on tcp://{address}:\d+"
    )
    over = f"job {job_id} over (completed)"
    deadline = time.monotonic() + LOG_WAIT_S  # "over" is logged just after the result is sent
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8") if log.exists() else ""
        if over in text:
            break
        time.sleep(0.1)
    assert f"worker listening on tcp://{daemon.host.address}:{PORT}" in text, text
    assert served.search(text), text
    assert over in text, text
    assert "Traceback" not in daemon.output, daemon.output


def test_plain_job_runs_across_three_namespaces_with_curve_keys(lab: Lab, tmp_path: Path) -> None:
    log_root = tmp_path / "daemon-logs"
    keys = tmp_path / "keys"
    generate_keys(keys)
    workers = _start_daemons(lab, 3, log_root, ["--keys", str(keys)])
    done = _submit(tmp_path, workers, None, "--codec", "plain.Plain", "--keys", str(keys))
    summary = _assert_completed(done, tmp_path, 3)
    assert summary["accuracy"] > 0.8, summary
    for daemon in workers:
        _assert_served(daemon, log_root, summary["job_id"], "worker")


def test_fedavg_job_runs_with_a_ps_in_a_fourth_namespace(lab: Lab, tmp_path: Path) -> None:
    log_root = tmp_path / "daemon-logs"
    *workers, ps = _start_daemons(lab, 4, log_root, ["--insecure"])
    done = _submit(tmp_path, workers, ps, "--codec", "fedavg.FedAvgClient",
                   "--ps-codec", "fedavg.FedAvgServer", "--param", "local_steps=10")  # fmt: skip
    summary = _assert_completed(done, tmp_path, 3)
    assert summary["bytes_sent"]["ps"] > 0, summary["bytes_sent"]
    for daemon in workers:
        _assert_served(daemon, log_root, summary["job_id"], "worker")
    _assert_served(ps, log_root, summary["job_id"], "ps")


def test_a_shaped_link_holds_a_transfer_to_its_bandwidth(lab: Lab) -> None:
    shape = Shape.parse(SHAPED_RATE)
    assert shape.rate_bit_s is not None
    sender, receiver = _hosts(lab, 2, shape)
    free_sender, free_receiver = _hosts(lab, 2)
    took = time_transfer(
        sender.namespace, receiver.namespace, receiver.address, TRANSFER_BYTES, TRANSFER_TIMEOUT_S
    )
    unshaped = time_transfer(
        free_sender.namespace, free_receiver.namespace, free_receiver.address, TRANSFER_BYTES,
        TRANSFER_TIMEOUT_S,
    )  # fmt: skip
    floor = TRANSFER_BYTES * 8 / shape.rate_bit_s
    assert took >= floor, (took, floor)  # headers only add to it
    assert took <= 2 * floor / TCP_PAYLOAD_SHARE, (took, floor)  # and the rate is reached
    assert unshaped < floor / 3, (unshaped, floor)  # the shaping, not the veth, is slow


def test_latency_is_emulated_or_refused_by_name(lab: Lab) -> None:
    """With netem a 50 ms delay shows in a round trip; without, asking says the kernel lacks it."""
    sender, receiver = _hosts(lab, 2)
    delayed = Shape(delay_s=0.05)
    if not netem_available():
        with pytest.raises(NetemUnavailable, match="CONFIG_NET_SCH_NETEM"):
            lab.shape(receiver, delayed)
        return
    lab.shape(receiver, delayed)
    took = time_transfer(sender.namespace, receiver.namespace, receiver.address, 1000, 10.0)
    assert took >= 0.05, took  # the request and its acknowledgement both cross the delayed link


def test_plain_job_completes_over_shaped_links_held_back_by_them(lab: Lab, tmp_path: Path) -> None:
    shape = Shape.parse(SHAPED_RATE)
    assert shape.rate_bit_s is not None
    workers = _start_daemons(lab, 2, tmp_path / "daemon-logs", ["--insecure"], shape)
    done = _submit(tmp_path, workers, None, "--codec", "plain.Plain", samples=1280)
    summary = _assert_completed(done, tmp_path, 2)
    for node in summary["nodes"]:  # every byte a node sent crossed its shaped uplink
        assert node["train_s"] >= node["bytes_sent"] * 8 / shape.rate_bit_s, node
