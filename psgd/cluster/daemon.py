"""The worker daemon: serves jobs one after another, never dies of a bad job or packet.

The main thread owns the control socket (a ROUTER on ``--port``) and dispatches each message
through a dict of small handlers; it never runs shipped code and never waits on a job, so HELLO,
heartbeats and signals are always answered. A job is prepared (its codec loaded) on a thread of
its own, then runs on another with its own data-plane sockets (``transport.PeerChannel``); what
it reports goes through a queue to the main thread.
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

from psgd.cluster.control import ControlPort
from psgd.cluster.jobrun import JobRun
from psgd.cluster.liveness import take_waiting
from psgd.cluster.workers import DEFAULT_PORT
from psgd.errors import PsgdError
from psgd.net import protocol, wire
from psgd.net.droplog import DAEMON_ONLY, RefusalLog
from psgd.net.handshakes import HandshakeMonitor
from psgd.net.security import CONTROL_DOMAIN, Security
from psgd.net.transport import HEARTBEAT_INTERVAL_S, LIVENESS_INTERVALS

__all__ = ["DEFAULT_PORT", "SHUTDOWN_GRACE_S", "Daemon"]

_log = logging.getLogger(__name__)

_POLL_MS = 50
#: On shutdown, how long a job (or a codec still loading) may take to stop before the daemon
#: leaves its thread behind and exits anyway.
SHUTDOWN_GRACE_S = 5.0
#: How often a ``--local`` daemon checks that the submitter that started it is still there.
PARENT_CHECK_S = 0.5


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
    parent_pid:
        Stop when this process (a ``--local`` submitter) is gone.
    """

    def __init__(
        self,
        bind: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        work_dir: Path | None = None,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        max_job_bytes: int = 1 << 30,
        security: Security | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.bind = bind
        self.parent_pid = parent_pid
        self.limits = limits
        self.max_job_bytes = max_job_bytes
        self.security = security
        self.context = zmq.Context()
        self.authenticator = security.start_authenticator(self.context) if security else None
        self._handlers: dict[str, Callable[[bytes, protocol.Message], None]] = {
            protocol.HELLO: self._on_hello,
            protocol.JOB: self._on_job,
            protocol.START: self._on_start,
            protocol.HEARTBEAT: self._on_heartbeat,
            protocol.FINISH: self._on_finish,
            protocol.EVAL: self._on_eval,
            protocol.ABORT: self._on_abort,
        }
        try:
            self.control_port = ControlPort(
                self.context, bind, port, limits, max_job_bytes, security, self._handlers
            )
        except PsgdError:
            if self.authenticator is not None:
                self.authenticator.stop()
            self.context.term()
            raise
        self.control = self.control_port.socket
        self.port = self.control_port.port
        self.address = self.control_port.address
        if security is not None:
            security.names[CONTROL_DOMAIN] = f"control port {self.address}"
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="psgd-worker-"))
        self.outbox: queue.SimpleQueue[tuple[bytes, list[Any]]] = queue.SimpleQueue()
        self.job: JobRun | None = None
        self.stop_event = threading.Event()
        self.jobs_served = 0
        #: True when a job's thread did not stop within ``SHUTDOWN_GRACE_S`` of shutdown.
        self.abandoned = False
        self._last_heartbeat_sent = 0.0
        self._last_parent_check = 0.0

    # -- main loop ---------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until ``stop()`` (or SIGINT/SIGTERM via ``install_signal_handlers``)."""
        _log.info("worker listening on %s (pid %d)", self.address, os.getpid())
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        monitor = None
        if self.security is not None:
            refusals = RefusalLog(_log)
            monitor = HandshakeMonitor(self.control, f"control port {self.address}", refusals,
                                       DAEMON_ONLY)  # fmt: skip
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
            self._stop_job()
            self.close()
        _log.info("worker %s stopped after %d jobs", self.address, self.jobs_served)

    def _stop_job(self) -> None:
        """Abort the current job and wait a bounded time for its threads."""
        job = self.job
        if job is None:
            return
        job.abort("worker shutting down")
        if not job.join(SHUTDOWN_GRACE_S):
            self.abandoned = True
            _log.warning(
                "job %s did not stop within %.0f s (%s); leaving its thread behind",
                job.job_id, SHUTDOWN_GRACE_S,
                "its codec is still loading" if job.state == "preparing" else "a codec hangs",
            )  # fmt: skip
            return
        if job.state == "preparing":
            job.take_preparation()
        if not job.started:
            job.cleanup()
        self._flush_outbox()
        self.job = None

    def stop(self) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        """Ctrl-C and SIGTERM stop the daemon cleanly (call from the main thread)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())

    def close(self) -> None:
        self.control_port.close()
        if self.authenticator is not None:
            self.authenticator.stop()
        if not self.abandoned:  # term() would wait for the sockets of the thread left behind
            self.context.term()
        if self._own_work_dir and not self.abandoned:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _receive(self) -> None:
        received = self.control_port.receive()
        if received is None:
            return
        identity, message = received
        try:
            self._handlers[message.type](identity, message)
        except Exception as exc:
            _log.exception("handler for %r failed; message dropped", message.type)
            self.control_port.drops.drop("%s: handler failed: %s", message.type, exc)

    @property
    def dropped(self) -> int:
        """Control messages dropped so far."""
        return self.control_port.drops.total

    def _send(self, identity: bytes, frames: list[Any]) -> None:
        self.control_port.send(identity, frames)

    def _flush_outbox(self) -> None:
        while True:
            try:
                identity, frames = self.outbox.get_nowait()
            except queue.Empty:
                return
            self._send(identity, frames)

    def _tick(self) -> None:
        now = time.monotonic()
        self.control_port.tick(now)
        self._check_parent(now)
        job = self.job
        if job is None:
            return
        if job.state == "preparing" and job.preparation.done.is_set():
            self._prepared(job)
            if self.job is None:
                return
        if job.started and not job.thread_alive():
            job.join()
            self._flush_outbox()
            self.job = None
            self.jobs_served += 1
            _log.info("job %s over (%s); idle", job.job_id, job.outcome)
            if job.final is not None:  # only now: a submitter that reads DONE finds us idle
                self._send(job.submitter, job.final)
            return
        if now - self._last_heartbeat_sent >= HEARTBEAT_INTERVAL_S:
            self._heartbeat(job)
        limit = HEARTBEAT_INTERVAL_S * LIVENESS_INTERVALS
        if now - job.last_heard > limit and take_waiting(self.control, self._receive):
            now = time.monotonic()  # this loop was late, not necessarily the submitter
        silent = now - job.last_heard
        if silent > limit and not job.aborted and self.job is job:
            _log.warning("job %s: submitter silent for %.1f s; aborting", job.job_id, silent)
            self._abort(job, f"submitter silent for {silent:.1f} s")

    def _heartbeat(self, job: JobRun) -> None:
        """Tell the submitter this daemon lives, and how many strangers' messages the job's
        data port dropped so far."""
        self._last_heartbeat_sent = time.monotonic()
        running = job.state in ("ready", "running")
        dropped = job.channel.dropped if running else 0
        quiet = getattr(job.channel, "quiet", None) if running else None  # round jobs
        extra = {"quiet": list(quiet)} if quiet is not None else {}
        self._send(job.submitter, protocol.make(protocol.HEARTBEAT, job=job.job_id,
                                                dropped=dropped, **extra))  # fmt: skip

    def _prepared(self, job: JobRun) -> None:
        """The job's preparation ended: accept it, reject it, or (aborted meanwhile) drop it."""
        job.take_preparation()
        if job.aborted:
            _log.info("job %s: aborted while it was being prepared; idle", job.job_id)
            self._discard_unstarted(job)
        elif job.state == "rejected":
            self.control_port.rejected.drop("job %.40r node %s: %.2000s", job.job_id, job.node_id,
                                     job.reason)  # fmt: skip
            self._send(job.submitter, protocol.make(
                protocol.REJECTED, job=job.job_id, node=job.node_id, reason=job.reason
            ))  # fmt: skip
            self.job = None
        else:
            _log.info("job %s node %s accepted", job.job_id, job.node_id)
            self._send(job.submitter, protocol.make(
                protocol.ACCEPTED, job=job.job_id, node=job.node_id, data=str(job.data_port)
            ))  # fmt: skip

    def _abort(self, job: JobRun, reason: str) -> None:
        job.abort(reason)
        if job.state == "preparing":
            _log.warning("job %s: its codec is still loading; busy until that returns", job.job_id)
        elif not job.started:
            self._discard_unstarted(job)

    def _discard_unstarted(self, job: JobRun) -> None:
        job.cleanup()
        self.job = None

    def _check_parent(self, now: float) -> None:
        """A ``--local`` daemon stops when the submitter that started it is gone."""
        if self.parent_pid is None or now - self._last_parent_check < PARENT_CHECK_S:
            return
        self._last_parent_check = now
        if os.getppid() != self.parent_pid:
            _log.warning("its submitter (pid %d) is gone; stopping", self.parent_pid)
            self.stop()

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
        }  # never the job's id: anyone may ask
        self._send(identity, protocol.make(protocol.HELLO_REPLY, **fields))

    def _on_job(self, identity: bytes, message: protocol.Message) -> None:
        job_id, node = message["job"], message["node"]
        if self.job is not None:
            reason = f"worker {self.address} is busy with another job"
            self._send(
                identity, protocol.make(protocol.REJECTED, job=job_id, node=node, reason=reason)
            )
            return
        self.job = JobRun(
            message, identity, self.outbox, self.context, self.bind, self.work_dir, self.limits,
            self.security,
        )  # fmt: skip
        _log.info("job %s node %s: preparing", job_id, node)
        self._heartbeat(self.job)  # the job arrived: the submitter's liveness clock starts now

    def _current(self, identity: bytes, message: protocol.Message) -> JobRun | None:
        job = self.job
        if job is None or job.job_id != message["job"] or job.submitter != identity:
            self.control_port.ignored.drop("%r for job %r: not the current job", message.type,
                                    message["job"])  # fmt: skip
            return None
        job.last_heard = time.monotonic()
        return job

    def _on_start(self, identity: bytes, message: protocol.Message) -> None:
        job = self._current(identity, message)
        if job is None or job.state != "ready":
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

    def _on_eval(self, identity: bytes, message: protocol.Message) -> None:
        job = self._current(identity, message)
        if job is not None and job.role == "pool" and job.started:
            job.eval_requests.put(message)

    def _on_abort(self, identity: bytes, message: protocol.Message) -> None:
        job = self._current(identity, message)
        if job is None:
            return
        _log.warning("job %s aborted by the submitter: %.200s", job.job_id, message["reason"])
        self._abort(job, message["reason"])
