"""A worker daemon's control port: the socket, and the edge where hostile bytes stop.

``ControlPort.receive`` hands the daemon only well-formed messages of a type it handles, within
its limits. Everything else is dropped and counted here, logged in bounded volume
(``psgd.net.droplog``): malformed messages, messages over a limit (their sender is told which),
messages of another protocol version (told so too). None of those lines go into job logs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from typing import Any

import zmq

from psgd.errors import MalformedMessage, PsgdError
from psgd.net import protocol, wire, wire_format
from psgd.net.droplog import DAEMON_ONLY, DropLog
from psgd.net.security import Security
from psgd.net.transport import new_socket, tcp_address

__all__ = ["ControlPort"]

_log = logging.getLogger("psgd.cluster.daemon")


class ControlPort:
    """The ROUTER a daemon listens on; owned by the daemon's main thread.

    Parameters
    ----------
    context, bind, port:
        Where to listen (``port`` 0: an OS-chosen port, see ``address``). Raises ``PsgdError``
        when it cannot (port in use, bad address).
    limits, max_job_bytes:
        The largest message and frame count accepted, and the largest JOB.
    security:
        CURVE keys (only authorised submitters get through).
    handled:
        The message types the daemon handles; valid messages of other types are dropped.
    """

    def __init__(
        self,
        context: zmq.Context,
        bind: str,
        port: int,
        limits: wire.Limits,
        max_job_bytes: int,
        security: Security | None,
        handled: Collection[str],
    ) -> None:
        self.limits = limits
        self.max_job_bytes = max_job_bytes
        self.handled = frozenset(handled)
        self.socket = new_socket(
            context, zmq.ROUTER, security=security, server=True, max_frame_bytes=self.largest
        )
        try:
            if port == 0:
                port = self.socket.bind_to_random_port(tcp_address(bind, 0).rsplit(":", 1)[0])
            else:
                self.socket.bind(tcp_address(bind, port))
        except zmq.ZMQError as exc:
            self.socket.close(linger=0)
            raise PsgdError(f"cannot listen on {tcp_address(bind, port)}: {exc}") from None
        self.port = port
        self.address = tcp_address(bind, port)
        where = f"control port {self.address}"
        self.drops = DropLog(_log, where, "malformed control messages dropped", DAEMON_ONLY)
        self.versions = DropLog(
            _log, where, "messages of another protocol version refused", DAEMON_ONLY,
            label="refused",
        )  # fmt: skip
        #: Job messages for another job or from another peer than its submitter.
        self.ignored = DropLog(
            _log, where, "job messages ignored", DAEMON_ONLY, logging.INFO, label="ignored"
        )
        #: JOBs rejected (their senders are told why): in full, but bounded like drops.
        self.rejected = DropLog(_log, where, "jobs rejected", DAEMON_ONLY, label="rejected job")

    @property
    def _logs(self) -> tuple[DropLog, ...]:
        return (self.drops, self.versions, self.ignored, self.rejected)

    @property
    def largest(self) -> int:
        """The largest message accepted (a JOB may be larger than others)."""
        return max(self.limits.max_message_bytes, self.max_job_bytes)

    def receive(self) -> tuple[bytes, protocol.Message] | None:
        """The next message (call when readable) with its sender, or None if it was dropped."""
        frames = self.socket.recv_multipart(copy=False)
        if len(frames) < 2:
            self.drop(frames, "no identity or no body")
            return None
        identity = frames[0].bytes
        size = sum(len(f.buffer) for f in frames[1:])
        if len(frames) - 1 > self.limits.max_frames or size > self.largest:
            self._refuse(identity, frames, size, "")
            return None
        limits = dataclasses.replace(self.limits, max_message_bytes=self.largest)
        try:
            message = protocol.parse(frames[1:], protocol.CONTROL_TYPES, limits)
        except wire.VersionMismatch as exc:
            self.versions.drop("a %r from a peer speaking protocol %r", exc.kind, exc.theirs)
            reason = (
                f"protocol version mismatch: submitter speaks {exc.theirs!r}, "
                f"worker {self.address} speaks {wire_format.PROTOCOL_VERSION}"
            )
            self.send(identity, protocol.make(protocol.REFUSED, reason=reason))
            return None
        except MalformedMessage as exc:
            self.drop(frames, str(exc))
            return None
        cap = self.max_job_bytes if message.type == protocol.JOB else self.limits.max_message_bytes
        if size > cap:
            self._refuse(identity, frames, size, message.type, message.fields)
            return None
        if message.type not in self.handled:
            self.drop(frames, f"{message.type!r} is not for a worker")
            return None
        return identity, message

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
            limit = self.limits.max_message_bytes if kind else self.largest
            reason = (
                f"message of {size / 1e6:.1f} MB exceeds the limit of {limit / 1e6:.1f} MB "
                "(--max-message-mb)"
            )
        reason = f"worker {self.address}: {reason}"
        self.drop(frames, reason)
        if kind == protocol.JOB and fields is not None:
            reply = protocol.make(
                protocol.REJECTED, job=fields["job"], node=fields["node"], reason=reason
            )
        else:
            reply = protocol.make(protocol.REFUSED, reason=reason)
        self.send(identity, reply)

    def drop(self, frames: list[Any], why: str) -> None:
        """Count and (bounded) log a control message that is not handled."""
        head = bytes(frames[-1].buffer[:16]) if frames else b""
        self.drops.drop(
            "control message (%d frames, %d bytes, first bytes %r): %s",
            len(frames), sum(len(f.buffer) for f in frames), head, why,
        )  # fmt: skip

    def send(self, identity: bytes, frames: list[Any]) -> None:
        """Send ``frames`` to the peer ``identity`` (a peer gone meanwhile is logged)."""
        try:
            self.socket.send_multipart([identity, *frames], copy=False)
        except zmq.ZMQError as exc:
            _log.warning("could not answer %r: %s", identity, exc, extra=DAEMON_ONLY)

    def tick(self, now: float) -> None:
        """End the drop logs' intervals that are over."""
        for log in self._logs:
            log.tick(now)

    def close(self) -> None:
        """Log the final drop counts and close the socket."""
        for log in self._logs:
            log.close()
        self.socket.close(linger=0)
