"""ZeroMQ sockets for psgd: one place to make them, and the peer-to-peer data channel.

Every socket psgd opens comes from ``new_socket``, so authentication and encryption (CURVE,
the security issue) switch on here without restructuring anything else. No codec or training
logic lives in this module.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from psgd.errors import CodecError, MalformedMessage
from psgd.net import protocol, wire
from psgd.net.channel import JobAborted, Package
from psgd.net.droplog import DropLog, RefusalLog
from psgd.net.handshakes import HandshakeMonitor
from psgd.net.security import CONTROL_DOMAIN, DATA_DOMAIN, Security

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "LIVENESS_INTERVALS",
    "PeerChannel",
    "member_identity",
    "new_socket",
    "tcp_address",
]

_log = logging.getLogger(__name__)

#: Daemons and submitters send a heartbeat this often while a job runs.
HEARTBEAT_INTERVAL_S = 1.0
#: A side silent for this many intervals is dead ("Paranoid Pirate" liveness).
LIVENESS_INTERVALS = 3
#: How often a blocked receive wakes to check for an abort.
ABORT_POLL_S = 0.1


def new_socket(
    context: zmq.Context,
    kind: int,
    *,
    security: Security | None = None,
    server: bool = False,
    linger_ms: int = 0,
    max_frame_bytes: int = -1,
    domain: str = CONTROL_DOMAIN,
) -> zmq.Socket:
    """A new socket with psgd's options: the single place CURVE is switched on.

    With ``security``, a ``server`` socket (one that binds) authenticates its clients for ZAP
    ``domain`` (``security.CONTROL_DOMAIN`` or ``DATA_DOMAIN``) and a client socket proves its
    key; both encrypt everything. ``max_frame_bytes`` makes libzmq drop a peer that sends a
    larger frame before it is ever buffered. IPv6 is on (IPv4 addresses work as before).
    """
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.IPV6, 1)
    if max_frame_bytes > 0:
        sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
    if security is not None:
        if server:
            security.server(sock, domain)
        else:
            security.client(sock)
    return sock


def tcp_address(host: str, port: int) -> str:
    """``tcp://host:port``, bracketing IPv6 hosts."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def member_identity(secret: bytes, job_id: str, node: int) -> bytes:
    """The routing id node ``node`` of a job connects to its peers with.

    Derived from the job's secret (which only the job's members receive), so a package's
    connection proves which member sent it: nobody else can connect as that node.
    """
    digest = hmac.new(secret, f"{job_id}/{node}".encode(), hashlib.sha256).digest()
    return b"psgd" + digest[:16]  # a routing id must not start with a zero byte


class PeerChannel:
    """A node's data plane: a ROUTER others send to, a DEALER to each peer.

    Implements ``psgd.net.channel.Channel``. ``recv`` is called by one thread at a time; ``send``
    may be called from the trainer and the ASGD receiver thread (serialised by a lock).

    A package is accepted only from a member of the job, over that member's own connection:
    each node connects with a routing id derived from the job's ``secret``
    (``member_identity``), which the ROUTER sees with every message, and the header's sender
    must be the node that routing id belongs to. With ``security`` the connection must also
    hold the workers' key. Everything else is dropped and counted (``DropLog``).

    Parameters
    ----------
    context:
        The process's ZeroMQ context.
    node_id, job_id:
        Who this is and which job; packages of another job are dropped.
    bind_host:
        Interface to bind the ROUTER on (an OS-chosen port).
    aborted:
        Returns True once the job is aborted; checked while waiting.
    secret:
        The job's secret, sent by the submitter to the job's members only.
    """

    def __init__(
        self,
        context: zmq.Context,
        node_id: int,
        job_id: str,
        bind_host: str,
        aborted: Callable[[], bool],
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        security: Security | None = None,
        secret: bytes = b"",
    ) -> None:
        self.context = context
        self.node_id = node_id
        self.job_id = job_id
        self.aborted = aborted
        self.limits = limits
        self.bytes_sent = 0
        self.security = security
        self.secret = secret
        self.router = new_socket(
            context, zmq.ROUTER, security=security, server=True,
            max_frame_bytes=limits.max_message_bytes, domain=DATA_DOMAIN,
        )  # fmt: skip
        port = self.router.bind_to_random_port(tcp_address(bind_host, 0).rsplit(":", 1)[0])
        self.address = tcp_address(bind_host, port)
        where = f"data port {self.address} (job {job_id} node {node_id})"
        self.drops = DropLog(_log, where, "peer messages dropped (malformed, or not from a member)")
        self.monitor: HandshakeMonitor | None = None
        if security is not None:
            security.names[DATA_DOMAIN] = where
            self.monitor = HandshakeMonitor(self.router, where, RefusalLog(_log))
        self.peers: dict[int, zmq.Socket] = {}
        self._members: dict[bytes, int] = {}
        self._user_id = security.worker_user_id if security is not None else None
        self._local: deque[Package] = deque()
        self._send_lock = threading.Lock()
        self._poller = zmq.Poller()
        self._poller.register(self.router, zmq.POLLIN)
        if self.monitor is not None:
            self._poller.register(self.monitor.socket, zmq.POLLIN)

    @property
    def dropped(self) -> int:
        """Messages dropped on this data port so far."""
        return self.drops.total

    def connect(self, peers: dict[int, str]) -> None:
        """Open a DEALER to every other node's data address, as this node's member identity."""
        self._members = {member_identity(self.secret, self.job_id, n): n for n in peers}
        identity = member_identity(self.secret, self.job_id, self.node_id)
        for node, address in peers.items():
            if node == self.node_id:
                continue
            sock = new_socket(self.context, zmq.DEALER, security=self.security)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.ROUTING_ID, identity)
            sock.connect(address)
            self.peers[node] = sock

    def send(self, targets: list[int], items: Sequence[tuple[int, Any]]) -> int:
        if self.aborted():
            raise JobAborted("job aborted")
        unknown = [t for t in targets if t != self.node_id and t not in self.peers]
        if unknown:
            raise CodecError(
                f"node {self.node_id} layer {items[0][0]}: netEncapsulation target {unknown[0]} "
                f"is not a node of this job (nodes: {sorted([self.node_id, *self.peers])})"
            )
        frames = protocol.make_packages(self.job_id, self.node_id, items)
        size = wire.frames_size(frames)
        with self._send_lock:
            for target in targets:
                if target == self.node_id:
                    self._local.extend(self._decode([bytes(f) for f in frames], self.node_id))
                    continue
                self.peers[target].send_multipart(frames, copy=False)
        sent = size * sum(1 for t in targets if t != self.node_id)
        self.bytes_sent += sent
        return sent

    def recv(self, timeout_s: float) -> Package | None:
        if self._local:
            return self._local.popleft()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.aborted():
                raise JobAborted("job aborted")
            remaining = deadline - time.monotonic()
            wait_ms = int(max(0.0, min(remaining, ABORT_POLL_S)) * 1000)
            ready = dict(self._poller.poll(wait_ms))
            if self.monitor is not None and self.monitor.socket in ready:
                self.monitor.drain()
            self.drops.tick()
            if self.router in ready:
                frames = self.router.recv_multipart(copy=False)
                self._local.extend(self._accept(frames))
                if self._local:
                    return self._local.popleft()
            elif remaining <= 0:
                return None

    def _accept(self, frames: list[zmq.Frame]) -> list[Package]:
        try:
            return self._decode(frames[1:], self._sender(frames, 2, "no body"))
        except MalformedMessage as exc:
            self._drop(frames, "peer message", exc)
            return []

    def _sender(self, frames: list[zmq.Frame], least: int, short: str) -> int:
        """The member that sent ``frames`` (its routing id first), checked; else raises."""
        sender = self._members.get(frames[0].bytes)
        if sender is None:
            raise MalformedMessage("not from a member of this job (unknown connection)")
        if len(frames) < least:
            raise MalformedMessage(short)
        if self._user_id is not None and frames[1].get("User-Id") != self._user_id:
            raise MalformedMessage("connection does not hold the workers' key")
        return sender

    def _drop(self, frames: list[zmq.Frame], what: str, exc: MalformedMessage) -> None:
        head = bytes(frames[1].buffer[:16]) if len(frames) > 1 else b""
        self.drops.drop(
            "%s (%d frames, %d bytes, first bytes %r): %s",
            what, len(frames) - 1, sum(len(f.buffer) for f in frames[1:]), head, exc,
        )  # fmt: skip

    def _decode(self, frames: list[Any], sender: int) -> list[Package]:
        message = protocol.parse(frames, protocol.PEER_TYPES, self.limits)
        if message["job"] != self.job_id:
            raise MalformedMessage(f"package of job {message['job']!r:.40}, not {self.job_id}")
        if message["src"] != sender:
            raise MalformedMessage(f"claims to be node {message['src']}, sent by node {sender}")
        return [
            Package(*item) for item in protocol.split_packages(message, wire.frames_size(frames))
        ]

    def close(self) -> None:
        """Close every socket (no linger: the job is over) and log the drop count."""
        if self.monitor is not None:
            self.monitor.drain()
            self.monitor.close()
        self.drops.close()
        for sock in self.peers.values():
            sock.close(linger=0)
        self.peers.clear()
        self.router.close(linger=0)
