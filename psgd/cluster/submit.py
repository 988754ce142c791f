"""The submitter: checks the daemons, ships a job, watches it, brings the results back.

Talks to each daemon's control port through a DEALER socket. Every wait is bounded: a daemon
that does not answer, stops sending heartbeats or reports a failure ends the job with a
message naming the node, and every other daemon is told to abort and go back to idle.
Liveness (``psgd.cluster.liveness``) applies from the moment a daemon has a job.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import zmq

from psgd.cluster.liveness import LIVE_STATES, death, take_waiting
from psgd.cluster.shipping import DataShipment, model_files
from psgd.cluster.workers import Endpoint
from psgd.codec import Parameter_Server
from psgd.errors import JobFailed, MalformedMessage
from psgd.net import protocol, wire, wire_format
from psgd.net.bundle import bundle_codecs
from psgd.net.security import Security
from psgd.net.transport import HEARTBEAT_INTERVAL_S, new_socket, tcp_address
from psgd.results.outcome import NodeReport, RunResult
from psgd.train.checkpoint import save_node_checkpoint
from psgd.train.prepare import PreparedJob
from psgd.train.server_model import ServerEpochs

__all__ = ["Submitter"]

_log = logging.getLogger(__name__)


Emit = Callable[[dict[str, Any]], None]


@dataclass
class _Node:
    node: int
    endpoint: Endpoint
    socket: zmq.Socket
    #: What it is called in messages, when not "node N" (a round job's pools).
    label: str = ""
    state: str = "new"
    last_heard: float = 0.0
    data_port: int = 0
    report: dict[str, Any] | None = None
    log: str = ""
    weights: list[Any] | None = None
    limits: dict[str, Any] | None = None
    #: Messages its data port dropped (not from a member of the job, or malformed).
    data_dropped: int = 0
    #: When its JOB was sent; whether it has been heard from since.
    shipped_at: float = 0.0
    heard_since_shipped: bool = False

    @property
    def name(self) -> str:
        who = self.label or (
            "parameter server" if self.node == Parameter_Server else f"node {self.node}"
        )
        return f"{who} ({self.endpoint})"


class Submitter:
    """Runs one prepared job on daemons.

    Parameters
    ----------
    job:
        The prepared job (codecs resolved, data partitioned, initial model built).
    workers:
        One endpoint per worker node, in node order.
    ps:
        The parameter server's daemon, required when the job has a PS codec.
    emit:
        Receives progress events from the workers.
    answer_timeout_s:
        How long a daemon may take to answer the first hello.
    security:
        CURVE keys of this submitter (required by daemons started with ``--keys``).
    checkpoint_dir, resume:
        Where the workers' checkpoints are written; the checkpoint each node resumes from.
    """

    def __init__(
        self,
        job: PreparedJob,
        workers: list[Endpoint],
        ps: Endpoint | None = None,
        emit: Emit | None = None,
        answer_timeout_s: float = 5.0,
        security: Security | None = None,
        checkpoint_dir: Path | None = None,
        resume: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        self.job = job
        self.security = security
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.emit = emit or (lambda event: None)
        self.answer_timeout_s = answer_timeout_s
        self.context = zmq.Context()
        endpoints = list(enumerate(workers))
        if job.ps_classes is not None:
            if ps is None:
                raise JobFailed("this job has a PS codec but no PS daemon was given")
            endpoints.append((Parameter_Server, ps))
        self.nodes = {n: _Node(n, e, self._connect(e)) for n, e in endpoints}
        self._handlers: dict[str, Callable[[_Node, protocol.Message], None]] = {
            protocol.HELLO_REPLY: self._on_hello_reply,
            protocol.REFUSED: self._on_refused,
            protocol.ACCEPTED: self._on_accepted,
            protocol.REJECTED: self._on_rejected,
            protocol.PROGRESS: self._on_progress,
            protocol.TRAINED: self._on_trained,
            protocol.CHECKPOINT: self._on_checkpoint,
            protocol.DONE: self._on_done,
            protocol.FAILED: self._on_failed,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.SERVER_MODEL: self._on_server_model,
        }
        self.server_epochs = ServerEpochs.for_job(job)  # the server's model per epoch
        self._last_heartbeat = 0.0
        self._finish_sent = False
        self._shipped_bytes = 0
        self._data = DataShipment(job)
        #: The job's secret: only its members get it (their data-plane identities derive from it).
        self.secret = secrets.token_bytes(32)
        #: A node reported that its loss or weights became non-finite.
        self.diverged = False

    def _connect(self, endpoint: Endpoint) -> zmq.Socket:
        sock = new_socket(self.context, zmq.DEALER, security=self.security)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(endpoint.address)
        return sock

    # -- the job -----------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the job to its end; failures are in ``RunResult.error``, never raised."""
        start = time.perf_counter()
        error = None
        try:
            self._handshake()
            self._ship()
            self._start()
            self._wait(lambda: all(n.state == "done" for n in self.nodes.values()), None, "")
        except JobFailed as exc:
            error = str(exc)
            self._abort_all(error)
        except KeyboardInterrupt:
            self._abort_all("the submitter was interrupted (Ctrl-C or SIGTERM)")
            raise
        finally:
            self.close()
        return self._result(time.perf_counter() - start, error)

    def close(self) -> None:
        for node in self.nodes.values():
            node.socket.close(linger=200)
        self.context.term()

    def _handshake(self) -> None:
        for node in self.nodes.values():
            node.socket.send_multipart(protocol.make(protocol.HELLO))
        silent = lambda: [n for n in self.nodes.values() if n.state == "new"]  # noqa: E731
        self._wait(lambda: not silent(), self.answer_timeout_s, "answer")

    def _ship(self) -> None:
        job = self.job
        trainer = dataclasses.asdict(job.trainer_config)
        common = {
            "job": job.spec.job_id,
            "spec": job.spec.to_dict(),
            "trainer": trainer,
            "node_samples": job.settings.node_samples,
            "secret": self.secret,
        }
        for node in self.nodes.values():
            frames = self._job_frames(node, common)
            self._check_limits(node, frames)
            node.socket.send_multipart(frames, copy=False)
            node.state = "shipped"
            node.shipped_at = time.monotonic()
            self._shipped_bytes += wire.frames_size(frames)
            self._heartbeat(node.shipped_at)  # those shipped already are waiting: keep them
        shipped = lambda: any(n.state == "shipped" for n in self.nodes.values())  # noqa: E731
        self._wait(lambda: not shipped(), max(60.0, 12 * self.answer_timeout_s), "accept the job")

    def _job_frames(self, node: _Node, common: dict[str, Any]) -> list[Any]:
        """The JOB message for ``node``: its role, its codecs and what it needs of the data."""
        job = self.job
        if node.node == Parameter_Server:
            assert job.ps_classes is not None
            sources, names = bundle_codecs(job.ps_classes)
            return protocol.make(protocol.JOB, {"weights": job.initial_weights}, node=node.node,
                                 role="ps", bundle=sources, codecs=names, **common)  # fmt: skip
        sources, names = bundle_codecs(job.codec_classes, model_files(job))
        blocks, test = self._data.worker_data(node.node)
        content = {"weights": job.initial_weights, "blocks": blocks,
                   "test": test, "resume": (self.resume or {}).get(node.node),
                   "model_dims": list(job.model_dims)}  # fmt: skip
        return protocol.make(protocol.JOB, content, node=node.node, role="worker",
                             bundle=sources, codecs=names, **common)  # fmt: skip

    def _check_limits(self, node: _Node, frames: list[Any]) -> None:
        limits = node.limits
        size = wire.frames_size(frames)
        if limits and size > int(limits.get("max_job_bytes", size)):
            raise JobFailed(
                f"the job for {node.name} is {size / 1e6:.1f} MB but that worker accepts at most "
                f"{int(limits['max_job_bytes']) / 1e6:.1f} MB (its --max-job-mb); use fewer "
                "training samples per node or raise the limit"
            )
        if limits and len(frames) > int(limits.get("max_frames", len(frames))):
            raise JobFailed(
                f"the job for {node.name} has {len(frames)} frames but that worker accepts at "
                f"most {limits['max_frames']} (its --max-frames)"
            )

    def _start(self) -> None:
        peers = {n.node: tcp_address(n.endpoint.host, n.data_port) for n in self.nodes.values()}
        for node in self.nodes.values():
            node.socket.send_multipart(
                protocol.make(protocol.START, job=self.job.spec.job_id, peers=peers)
            )
            node.state = "running"
            node.last_heard = time.monotonic()

    def _abort_all(self, reason: str) -> None:
        for node in self.nodes.values():
            if node.state not in ("done", "new", "failed"):
                node.socket.send_multipart(
                    protocol.make(protocol.ABORT, job=self.job.spec.job_id, reason=reason[:2000])
                )

    # -- waiting -----------------------------------------------------------------------

    def _wait(self, done: Callable[[], bool], timeout_s: float | None, what: str) -> None:
        poller = zmq.Poller()
        sockets = {n.socket: n for n in self.nodes.values()}
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not done():
            for sock, _ in poller.poll(int(HEARTBEAT_INTERVAL_S * 250)):
                self._receive(sockets[sock])
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise self._no_answer(timeout_s or 0.0, what)
            self._heartbeat(now)

    def _no_answer(self, timeout_s: float, what: str) -> JobFailed:
        """Why the nodes that should have answered within ``timeout_s`` did not."""
        late = [n.name for n in self.nodes.values() if n.state in ("new", "shipped")]
        preparing = [n for n in self.nodes.values() if n.state == "shipped"]
        if preparing and all(n.heard_since_shipped for n in preparing):
            return JobFailed(
                f"{', '.join(late)} still preparing the job after {timeout_s:g} s "
                "(alive, but loading the codec takes too long?)"
            )
        hint = "is psgd-worker running there?"
        if self.security is not None:
            hint += (
                " With --keys: does that worker use the worker key of your key folder, "
                "and is your public key in its authorized/ folder?"
            )
        else:
            hint += " (a worker started with --keys answers only submitters with --keys)"
        return JobFailed(
            f"no answer from {', '.join(late)} within {timeout_s:g} s "
            f"(waiting for them to {what}): {hint}"
        )

    def _heartbeat(self, now: float) -> None:
        if now - self._last_heartbeat >= HEARTBEAT_INTERVAL_S:
            self._last_heartbeat = now
            for node in self.nodes.values():
                if node.state in LIVE_STATES:
                    node.socket.send_multipart(
                        protocol.make(protocol.HEARTBEAT, job=self.job.spec.job_id)
                    )
        for node in self.nodes.values():
            why = death(node, now, self._shipped_bytes)
            if why is not None and take_waiting(node.socket, partial(self._receive, node)):
                why = death(node, time.monotonic(), self._shipped_bytes)  # we were the late one
            if why is not None:
                node.state = "failed"
                raise JobFailed(why)

    def _receive(self, node: _Node) -> None:
        frames = node.socket.recv_multipart(copy=False)
        try:
            message = protocol.parse(frames, protocol.CONTROL_TYPES)
        except wire.VersionMismatch as exc:
            raise JobFailed(
                f"{node.name} speaks protocol version {exc.theirs!r}, this submitter speaks "
                f"{wire_format.PROTOCOL_VERSION}"
            ) from None
        except MalformedMessage as exc:
            _log.warning("dropped a malformed message from %s: %s", node.name, exc)
            return
        if message.get("job", self.job.spec.job_id) != self.job.spec.job_id:
            return
        node.last_heard = time.monotonic()
        if node.state == "shipped":
            node.heard_since_shipped = True
        handler = self._handlers.get(message.type)
        if handler is not None:
            handler(node, message)

    # -- handlers ----------------------------------------------------------------------

    def _on_hello_reply(self, node: _Node, message: protocol.Message) -> None:
        if message["state"] != "idle":
            raise JobFailed(f"{node.name} is busy with another job")
        node.limits = message.get("limits") or {}
        node.state = "idle"

    def _on_refused(self, node: _Node, message: protocol.Message) -> None:
        raise JobFailed(f"{node.name} refused: {message['reason']}")

    def _on_accepted(self, node: _Node, message: protocol.Message) -> None:
        node.data_port = int(message["data"])
        node.state = "accepted"

    def _on_rejected(self, node: _Node, message: protocol.Message) -> None:
        node.state = "failed"
        raise JobFailed(f"{node.name} rejected the job: {message['reason']}")

    def _on_heartbeat(self, node: _Node, message: protocol.Message) -> None:
        dropped = message.get("dropped")
        if type(dropped) is int and dropped > node.data_dropped:
            node.data_dropped = dropped

    def _on_progress(self, node: _Node, message: protocol.Message) -> None:
        self.emit(message["event"])

    def _on_server_model(self, node: _Node, message: protocol.Message) -> None:
        if self.server_epochs is not None and node.node == Parameter_Server:
            self.server_epochs.received(message["epoch"], message.content)

    def _on_trained(self, node: _Node, message: protocol.Message) -> None:
        node.state = "trained"
        workers = [n for n in self.nodes.values() if n.node != Parameter_Server]
        if not self._finish_sent and all(n.state in ("trained", "done") for n in workers):
            self._finish_sent = True
            for other in self.nodes.values():
                other.socket.send_multipart(
                    protocol.make(protocol.FINISH, job=self.job.spec.job_id)
                )

    def _on_checkpoint(self, node: _Node, message: protocol.Message) -> None:
        if self.checkpoint_dir is None or not isinstance(message.content, dict):
            return
        save_node_checkpoint(self.checkpoint_dir, node.node, message.content)
        _log.info("checkpoint of %s after epoch %d saved", node.name, message["epoch"])

    def _on_done(self, node: _Node, message: protocol.Message) -> None:
        node.state = "done"
        node.report = message["report"]
        node.log = message["log"]
        if isinstance(message.content, dict):
            node.weights = [w.copy() for w in message.content["weights"]]

    def _on_failed(self, node: _Node, message: protocol.Message) -> None:
        node.state = "failed"
        node.log = message["log"]
        if message.get("diverged") is True:
            self.diverged = True
            raise JobFailed(f"{message['error']} ({node.endpoint})")
        raise JobFailed(f"{node.name} failed: {message['error']}")

    # -- result ------------------------------------------------------------------------

    def _result(self, wall_s: float, error: str | None) -> RunResult:
        for node in self.nodes.values():
            if node.data_dropped:
                _log.warning(
                    "%s: its data port dropped %d messages not from this job's members (or "
                    "malformed); see its daemon's log", node.name, node.data_dropped,
                )  # fmt: skip
        reports, weights, logs = [], {}, {}
        ps_bytes = None
        read: set[str] = set()
        for node in self.nodes.values():
            logs[node.node] = node.log
            if node.report is None:
                continue
            read.update(k for k in node.report.get("params_read", ()) if isinstance(k, str))
            if node.weights is not None:  # the server's: its codecs' model, if they keep one
                weights[node.node] = node.weights
            if node.node == Parameter_Server:
                ps_bytes = int(node.report["figures"]["bytes_sent"])
                continue
            reports.append(NodeReport.from_wire(node.report))
        reports.sort(key=lambda r: r.node_id)
        return RunResult(
            reports, ps_bytes, wall_s, error, weights, logs,
            diverged=self.diverged, params_read=sorted(read),
            server_rows=self.server_epochs.rows if self.server_epochs else [],
        )  # fmt: skip
