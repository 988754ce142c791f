"""Log refused CURVE handshakes with the peer's address (libzmq's socket monitor).

ZAP sees clients with the right server key but an unknown client key (``security.py`` logs
those). A client with a wrong server key, or none (plaintext), fails earlier, in the CURVE
handshake itself; the monitor reports that, and the peer address is read from the accepted
connection's file descriptor.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from psgd.net.droplog import RefusalLog, plain_address

__all__ = ["HandshakeMonitor"]

_log = logging.getLogger(__name__)

_FAILED: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed (plaintext client?)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error (wrong server key?)",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication failed",
}


def _peer_of(fd: int) -> str:
    try:
        with socket.socket(fileno=socket.dup(fd)) as sock:
            host, port = sock.getpeername()[:2]
            return plain_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except OSError:
        return "an unknown address (it hung up before it could be read)"


class HandshakeMonitor:
    """Watches one listening socket; call ``drain`` when ``socket`` is readable.

    ``name`` says which socket it is in the log lines (``control port tcp://...``); refusals
    are logged through ``refusals`` (one line per host and interval, with counts).
    """

    def __init__(
        self,
        listening: zmq.Socket,
        name: str,
        refusals: RefusalLog | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
        for event in _FAILED:
            events |= event
        self.listening = listening
        self.socket = listening.get_monitor_socket(events)
        self.name = name
        self.refusals = refusals or RefusalLog(_log)
        self.extra = extra
        self._peers: dict[int, str] = {}
        self._last_peer = "an unknown address"

    @property
    def refused(self) -> int:
        return self.refusals.total

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
        host = self._last_peer.rsplit(":", 1)[0]
        self.refusals.refuse(host, self._last_peer, self.name, why, self.extra)

    def close(self) -> None:
        """Stop monitoring, then close the monitor socket (call from the listening socket's
        thread). In that order: libzmq's I/O thread blocks sending an event to a closed one."""
        with contextlib.suppress(zmq.ZMQError):  # the listening socket is gone already
            self.listening.disable_monitor()
        self.socket.close(linger=0)
