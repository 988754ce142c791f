"""Two real ZeroMQ sockets joined over loopback on an OS-chosen port, for unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import zmq


@contextmanager
def loopback_pair(
    bound_type: int, connected_type: int, options: dict[int, int] | None = None
) -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """``(bound, connected)``: a socket bound to 127.0.0.1 and one connected to it.

    ``options`` (``{zmq.LINGER: 0, ...}``) are set on both before they bind or connect; both
    sockets and their context are closed on exit.
    """
    context = zmq.Context()
    bound, connected = context.socket(bound_type), context.socket(connected_type)
    try:
        for sock in (bound, connected):
            for option, value in (options or {}).items():
                sock.setsockopt(option, value)
        port = bound.bind_to_random_port("tcp://127.0.0.1")
        connected.connect(f"tcp://127.0.0.1:{port}")
        yield bound, connected
    finally:
        bound.close(linger=0)
        connected.close(linger=0)
        context.term()
