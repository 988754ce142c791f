"""Ask a worker daemon how it is: ``idle``, ``busy`` or ``silent`` (no answer in time)."""

from __future__ import annotations

import time

import zmq

from psgd.cluster.workers import Endpoint
from psgd.errors import MalformedMessage
from psgd.net import protocol
from psgd.net.security import Security
from psgd.net.transport import new_socket

__all__ = ["ask_state", "wait_idle"]

_POLL_S = 0.02


def ask_state(endpoint: Endpoint, timeout_s: float = 5.0, security: Security | None = None) -> str:
    """The daemon's answer to a hello: ``idle``, ``busy``, or ``silent`` without one."""
    context = zmq.Context()
    sock = new_socket(context, zmq.DEALER, security=security)
    try:
        sock.connect(endpoint.address)
        sock.send_multipart(protocol.make(protocol.HELLO))
        if not sock.poll(int(timeout_s * 1000)):
            return "silent"
        try:
            reply = protocol.parse(sock.recv_multipart(), protocol.CONTROL_TYPES)
        except MalformedMessage:
            return "silent"
        return str(reply.get("state", "silent"))
    finally:
        sock.close(linger=0)
        context.term()


def wait_idle(endpoint: Endpoint, timeout_s: float = 20.0) -> str:
    """Ask until the daemon says ``idle`` or ``timeout_s`` passes; its last answer."""
    deadline = time.monotonic() + timeout_s
    state = "silent"
    while time.monotonic() < deadline:
        state = ask_state(endpoint, timeout_s=max(0.1, deadline - time.monotonic()))
        if state == "idle":
            return state
        time.sleep(_POLL_S)
    return state
