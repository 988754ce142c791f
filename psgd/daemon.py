"""The worker daemon: serves jobs one after another, never dies of a bad job or packet.

The main thread owns the control socket (a ROUTER on ``--port``) and dispatches each message
through a dict of small handlers. A job runs on a thread of its own with its own data-plane
sockets (``transport.PeerChannel``); what it reports goes through a queue to the main thread.
"""

from __future__ import annotations

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

from psgd import protocol, wire
from psgd.errors import MalformedMessage, PsgdError
from psgd.jobrun import JobRun, prepare_run
from psgd.transport import HEARTBEAT_INTERVAL_S, LIVENESS_INTERVALS, new_socket, tcp_address
from psgd.workers import DEFAULT_PORT

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
    """

    def __init__(
        self,
        bind: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        work_dir: Path | None = None,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
    ) -> None:
        self.bind = bind
        self.limits = limits
        self.context = zmq.Context()
        self.control = new_socket(self.context, zmq.ROUTER)
        try:
            if port == 0:
                port = self.control.bind_to_random_port(tcp_address(bind, 0).rsplit(":", 1)[0])
            else:
                self.control.bind(tcp_address(bind, port))
        except zmq.ZMQError as exc:
            self.control.close(linger=0)
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
        try:
            while not self.stop_event.is_set():
                if poller.poll(_POLL_MS):
                    self._receive()
                self._flush_outbox()
                self._tick()
        finally:
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
        self.context.term()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _receive(self) -> None:
        frames = self.control.recv_multipart(copy=False)
        if len(frames) < 2:
            self._drop(frames, "no identity or no body")
            return
        identity = frames[0].bytes
        try:
            message = protocol.parse(frames[1:], protocol.CONTROL_TYPES)
        except wire.VersionMismatch as exc:
            _log.warning("refused a %r from a peer speaking protocol %r", exc.kind, exc.theirs)
            reason = (
                f"protocol version mismatch: submitter speaks {exc.theirs!r}, "
                f"worker {self.address} speaks {wire.PROTOCOL_VERSION}"
            )
            self._send(identity, protocol.make(protocol.REFUSED, reason=reason))
            return
        except MalformedMessage as exc:
            self._drop(frames, str(exc))
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
        fields: dict[str, Any] = {"state": state, "pid": os.getpid()}
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
                message, identity, self.context, self.bind, self.work_dir, self.outbox
            )
        except Exception as exc:
            _log.warning("job %s node %s rejected: %s", job_id, node, exc)
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
        if job is not None and not job.started:
            job.start(message["peers"])

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
