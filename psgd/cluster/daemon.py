"""The worker daemon: serves jobs one after another, never dies of a bad job or packet.

The main thread owns the control socket (a ROUTER on ``--port``) and dispatches each message
through a dict of small handlers. A job runs on a thread of its own with its own data-plane
sockets (``transport.PeerChannel``); what it reports goes through a queue to the main thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from psgd.cluster.jobrun import JobRun, prepare_run
from psgd.cluster.workers import DEFAULT_PORT
from psgd.errors import MalformedMessage, PsgdError
from psgd.net import protocol, wire, wire_format
from psgd.net.handshakes import HandshakeMonitor
from psgd.net.security import Security
from psgd.net.transport import HEARTBEAT_INTERVAL_S, LIVENESS_INTERVALS, new_socket, tcp_address

__all__ = ["DEFAULT_PORT", "Daemon"]

_log = logging.getLogger(__name__)

_POLL_MS = 50


class Daemon:
    """A long-lived worker daemon.

    Parameters
    ----------
    bind:
        Interface to listen on (``127.0.0.1`` by default).
    port:
        Control port; 0 picks a free one (see ``address``).
    work_dir:
        Where jobs unpack their codec bundles (a temp folder by default).
    limits:
        Largest message and frame count (``wire.Limits``) accepted, and ``max_job_bytes``
        for a job (its data and code).
    security:
        CURVE keys: only authorised clients get through, everything is encrypted.
    """

    def __init__(
        self,
        bind: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        work_dir: Path | None = None,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        max_job_bytes: int = 1 << 30,
        security: Security | None = None,
    ) -> None:
        self.bind = bind
        self.limits = limits
        self.max_job_bytes = max_job_bytes
        self.security = security
        self.context = zmq.Context()
        self.authenticator = security.start_authenticator(self.context) if security else None
        self.control = new_socket(
            self.context, zmq.ROUTER, security=security, server=True,
            max_frame_bytes=self._largest,
        )  # fmt: skip
        try:
            if port == 0:
                port = self.control.bind_to_random_port(tcp_address(bind, 0).rsplit(":", 1)[0])
            else:
                self.control.bind(tcp_address(bind, port))
        except zmq.ZMQError as exc:
            self.control.close(linger=0)
            if self.authenticator is not None:
                self.authenticator.stop()
            self.context.term()
            raise PsgdError(f"cannot listen on {tcp_address(bind, port)}: {exc}") from None
        self.port = port
        self.address = tcp_address(bind, port)
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="psgd-worker-"))
        self.outbox: queue.SimpleQueue[tuple[bytes, list[Any]]] = queue.SimpleQueue()
        self.job: JobRun | None = None
        self.stop_event = threading.Event()
        self.dropped = 0
        self.jobs_served = 0
        self._handlers: dict[str, Callable[[bytes, protocol.Message], None]] = {
            protocol.HELLO: self._on_hello,
            protocol.JOB: self._on_job,
            protocol.START: self._on_start,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.FINISH: self._on_finish,
            protocol.ABORT: self._on_abort,
        }
        self._last_heartbeat_sent = 0.0

    # -- main loop ---------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until ``stop()`` (or SIGINT/SIGTERM via ``install_signal_handlers``)."""
        _log.info("worker listening on %s (pid %d)", self.address, os.getpid())
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        monitor = HandshakeMonitor(self.control, self.address) if self.security else None
        if monitor is not None:
            poller.register(monitor.socket, zmq.POLLIN)
        try:
            while not self.stop_event.is_set():
                ready = dict(poller.poll(_POLL_MS))
                if self.control in ready:
                    self._receive()
                if monitor is not None and monitor.socket in ready:
                    monitor.drain()
                self._flush_outbox()
                self._tick()
        finally:
            if monitor is not None:
                monitor.close()
            if self.job is not None:
                self.job.abort("worker shutting down")
                self.job.join()
                self._flush_outbox()
                self.job = None
            self.close()
        _log.info("worker %s stopped after %d jobs", self.address, self.jobs_served)

    def stop(self) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        """Ctrl-C and SIGTERM stop the daemon cleanly (call from the main thread)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())

    def close(self) -> None:
        self.control.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()
        self.context.term()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _receive(self) -> None:
        frames = self.control.recv_multipart(copy=False)
        if len(frames) < 2:
            self._drop(frames, "no identity or no body")
            return
        identity = frames[0].bytes
        size = sum(len(f.buffer) for f in frames[1:])
        if len(frames) - 1 > self.limits.max_frames or size > self._largest:
            self._refuse(identity, frames, size, "")
            return
        try:
            message = protocol.parse(frames[1:], protocol.CONTROL_TYPES, self._decode_limits)
        except wire.VersionMismatch as exc:
            _log.warning("refused a %r from a peer speaking protocol %r", exc.kind, exc.theirs)
            reason = (
                f"protocol version mismatch: submitter speaks {exc.theirs!r}, "
                f"worker {self.address} speaks {wire_format.PROTOCOL_VERSION}"
            )
            self._send(identity, protocol.make(protocol.REFUSED, reason=reason))
            return
        except MalformedMessage as exc:
            self._drop(frames, str(exc))
            return
        if size > (
            self.max_job_bytes if message.type == protocol.JOB else self.limits.max_message_bytes
        ):
            self._refuse(identity, frames, size, message.type, message.fields)
            return
        handler = self._handlers.get(message.type)
        if handler is None:
            self._drop(frames, f"{message.type!r} is not for a worker")
            return
        try:
            handler(identity, message)
        except Exception:
            _log.exception("handler for %r failed; message dropped", message.type)
            self.dropped += 1

    @property
    def _largest(self) -> int:
        return max(self.limits.max_message_bytes, self.max_job_bytes)

    @property
    def _decode_limits(self) -> wire.Limits:
        return dataclasses.replace(self.limits, max_message_bytes=self._largest)

    def _refuse(
        self,
        identity: bytes,
        frames: list[Any],
        size: int,
        kind: str,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Drop a message over this worker's limits and tell its sender which limit."""
        parts = len(frames) - 1
        if parts > self.limits.max_frames:
            reason = f"{parts} frames exceed the limit of {self.limits.max_frames} (--max-frames)"
        elif kind == protocol.JOB:
            reason = (
                f"job of {size / 1e6:.1f} MB exceeds the limit of "
                f"{self.max_job_bytes / 1e6:.1f} MB (--max-job-mb)"
            )
        else:
            limit = self.limits.max_message_bytes if kind else self._largest
            reason = (
                f"message of {size / 1e6:.1f} MB exceeds the limit of {limit / 1e6:.1f} MB "
                "(--max-message-mb)"
            )
        reason = f"worker {self.address}: {reason}"
        self._drop(frames, reason)
        if kind == protocol.JOB and fields is not None:
            reply = protocol.make(
                protocol.REJECTED, job=fields["job"], node=fields["node"], reason=reason
            )
        else:
            reply = protocol.make(protocol.REFUSED, reason=reason)
        self._send(identity, reply)

    def _drop(self, frames: list[Any], why: str) -> None:
        self.dropped += 1
        head = bytes(frames[-1].buffer[:16]) if frames else b""
        _log.warning(
            "dropped malformed control message #%d (%d frames, %d bytes, first bytes %r): %s",
            self.dropped,
            len(frames),
            sum(len(f.buffer) for f in frames),
            head,
            why,
        )

    def _send(self, identity: bytes, frames: list[Any]) -> None:
        try:
            self.control.send_multipart([identity, *frames], copy=False)
        except zmq.ZMQError as exc:
            _log.warning("could not answer %r: %s", identity, exc)

    def _flush_outbox(self) -> None:
        while True:
            try:
                identity, frames = self.outbox.get_nowait()
            except queue.Empty:
                return
            self._send(identity, frames)

    def _tick(self) -> None:
        job = self.job
        if job is None:
            return
        now = time.monotonic()
        if not job.thread_alive() and job.started:
            job.join()
            self._flush_outbox()
            self.job = None
            self.jobs_served += 1
            _log.info("job %s over (%s); idle", job.job_id, job.outcome)
            if job.final is not None:  # only now: a submitter that reads DONE finds us idle
                self._send(job.submitter, job.final)
            return
        if now - self._last_heartbeat_sent >= HEARTBEAT_INTERVAL_S:
            self._last_heartbeat_sent = now
            self._send(job.submitter, protocol.make(protocol.HEARTBEAT, job=job.job_id))
        silent = now - job.last_heard
        if silent > HEARTBEAT_INTERVAL_S * LIVENESS_INTERVALS and not job.aborted:
            _log.warning("job %s: submitter silent for %.1f s; aborting", job.job_id, silent)
            job.abort(f"submitter silent for {silent:.1f} s")
            if not job.started:
                self._discard_unstarted(job)

    def _discard_unstarted(self, job: JobRun) -> None:
        job.cleanup()
        self.job = None

    # -- handlers ----------------------------------------------------------------------

    def _on_hello(self, identity: bytes, message: protocol.Message) -> None:
        state = "idle" if self.job is None else "busy"
        fields: dict[str, Any] = {
            "state": state,
            "pid": os.getpid(),
            "limits": {
                "max_message_bytes": self.limits.max_message_bytes,
                "max_job_bytes": self.max_job_bytes,
                "max_frames": self.limits.max_frames,
            },
        }
        if self.job is not None:
            fields["busy_with"] = self.job.job_id
        self._send(identity, protocol.make(protocol.HELLO_REPLY, **fields))

    def _on_job(self, identity: bytes, message: protocol.Message) -> None:
        job_id, node = message["job"], message["node"]
        if self.job is not None:
            reason = f"worker {self.address} is busy with job {self.job.job_id}"
            self._send(
                identity, protocol.make(protocol.REJECTED, job=job_id, node=node, reason=reason)
            )
            return
        try:
            run = prepare_run(
                message, identity, self.context, self.bind, self.work_dir, self.outbox,
                self.limits, self.security,
            )  # fmt: skip
        except Exception as exc:
            _log.warning("job %.40r node %s rejected: %.2000s", job_id, node, exc)
            self._send(
                identity, protocol.make(protocol.REJECTED, job=job_id, node=node, reason=str(exc))
            )
            return
        self.job = run
        port = run.data_port
        self._send(
            identity, protocol.make(protocol.ACCEPTED, job=job_id, node=node, data=str(port))
        )

    def _current(self, identity: bytes, message: protocol.Message) -> JobRun | None:
        job = self.job
        if job is None or job.job_id != message["job"] or job.submitter != identity:
            _log.info("ignored %r for job %r: not the current job", message.type, message["job"])
            return None
        job.last_heard = time.monotonic()
        return job

    def _on_start(self, identity: bytes, message: protocol.Message) -> None:
        job = self._current(identity, message)
        if job is None or job.started:
            return
        try:
            peers = {int(node): str(address) for node, address in message["peers"].items()}
            if any(not a.startswith("tcp://") for a in peers.values()):
                raise ValueError("peer addresses must be tcp://host:port")
            job.start(peers)
        except (ValueError, TypeError, zmq.ZMQError) as exc:
            reason = f"bad START for job {job.job_id}: {exc}"
            _log.warning("%s", reason)
            self._send(identity, protocol.make(protocol.FAILED, job=job.job_id, node=job.node_id,
                                               error=reason, log=""))  # fmt: skip
            self._discard_unstarted(job)

    def _on_heartbeat(self, identity: bytes, message: protocol.Message) -> None:
        self._current(identity, message)

    def _on_finish(self, identity: bytes, message: protocol.Message) -> None:
        job = self._current(identity, message)
        if job is not None:
            job.finish()

    def _on_abort(self, identity: bytes, message: protocol.Message) -> None:
        job = self._current(identity, message)
        if job is None:
            return
        _log.warning("job %s aborted by the submitter: %s", job.job_id, message["reason"])
        job.abort(message["reason"])
        if not job.started:
            self._discard_unstarted(job)
