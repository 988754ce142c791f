"""Log refused CURVE handshakes with the peer's address (libzmq's socket monitor).

ZAP sees clients with the right server key but an unknown client key (``security.py`` logs
those). A client with a wrong server key, or none (plaintext), fails earlier, in the CURVE
handshake itself; the monitor reports that, and the peer address is read from the accepted
connection's file descriptor.
"""

from __future__ import annotations

import logging
import socket
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

__all__ = ["HandshakeMonitor"]

_log = logging.getLogger(__name__)
_QUIET_S = 10.0

_FAILED: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed (plaintext client?)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error (wrong server key?)",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication failed",
}


def _peer_of(fd: int) -> str:
    try:
        with socket.socket(fileno=socket.dup(fd)) as sock:
            host, port = sock.getpeername()[:2]
            return f"{host}:{port}"
    except OSError:
        return "an unknown address (it hung up before it could be read)"


class HandshakeMonitor:
    """Watches one listening socket; call ``drain`` when ``socket`` is readable."""

    def __init__(self, listening: zmq.Socket, name: str) -> None:
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        for event in _FAILED:
            events |= event
        self.socket = listening.get_monitor_socket(events)
        self.name = name
        self.refused = 0
        self._peers: dict[int, str] = {}
        self._last_peer = "an unknown address"
        self._logged: dict[str, float] = {}

    def drain(self) -> None:
        while self.socket.poll(0):
            event = recv_monitor_message(self.socket)
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_ACCEPTED:
                self._last_peer = self._peers[value] = _peer_of(value)
            elif kind == zmq.EVENT_DISCONNECTED:
                self._peers.pop(value, None)
            elif kind in _FAILED:
                self._refuse(_FAILED[kind])

    def _refuse(self, why: str) -> None:
        self.refused += 1
        host = self._last_peer.rsplit(":", 1)[0]
        now = time.monotonic()
        if now - self._logged.get(host, -_QUIET_S) < _QUIET_S:
            return  # a refused client retries every few hundred ms: one line per host and 10 s
        self._logged[host] = now
        _log.warning(
            "refused a connection from %s on %s: %s (%d refused so far)",
            self._last_peer, self.name, why, self.refused,
        )  # fmt: skip

    def close(self) -> None:
        self.socket.close(linger=0)
