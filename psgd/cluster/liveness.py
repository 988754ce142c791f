"""Liveness ("Paranoid Pirate"): when the submitter counts a daemon as dead, and why; reading
what is waiting before either side calls the other silent.

Liveness applies from the moment a daemon has a job: it heartbeats as soon as the JOB has
arrived (and on, while it loads the codec), so one that falls silent while it prepares the job
is named as quickly as one that dies while training. Until a daemon first answers after its JOB
was sent, the JOB may still be on its way: the bound is stretched by the transfer time.

Both sides read what is waiting before they call the other silent (``take_waiting``): on a
loaded machine the one that stalled may be the checker, its peer's heartbeats unread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import zmq

from psgd.net.transport import HEARTBEAT_INTERVAL_S, LIVENESS_INTERVALS

__all__ = ["LATE_GRACE_S", "LIVE_STATES", "MIN_TRANSFER_BYTES_PER_S", "death", "take_waiting"]

#: The slowest link a JOB is expected to cross (10 Mbit/s), for the transfer allowance: a job
#: of 94 MB may take 75 s to arrive before its daemon counts as dead (only until it answers).
MIN_TRANSFER_BYTES_PER_S = 1.25e6
#: How long a peer about to be called silent may still be heard (its messages may be waiting
#: in this process's I/O thread, which a stall held up too).
LATE_GRACE_S = 0.25
#: States in which a node has a job: heartbeats both ways, liveness applies.
LIVE_STATES = ("shipped", "accepted", "running", "trained")


class Watched(Protocol):
    """What liveness reads of a submitter's node."""

    @property
    def name(self) -> str: ...

    state: str
    last_heard: float
    shipped_at: float
    heard_since_shipped: bool


def death(node: Watched, now: float, shipped_bytes: int) -> str | None:
    """Why ``node`` counts as dead at ``now`` (``shipped_bytes``: all JOBs sent), or None."""
    if node.state not in LIVE_STATES:
        return None
    limit = HEARTBEAT_INTERVAL_S * LIVENESS_INTERVALS
    if node.state == "shipped" and not node.heard_since_shipped:
        waited = now - node.shipped_at
        if waited > limit + shipped_bytes / MIN_TRANSFER_BYTES_PER_S:
            return f"{node.name} died: no answer for {waited:.1f} s after its job was sent"
        return None
    silent = now - node.last_heard
    if silent <= limit:
        return None
    seen = time.strftime("%H:%M:%S", time.localtime(time.time() - silent))
    doing = " while preparing the job" if node.state == "shipped" else ""
    return f"{node.name} died{doing}: no heartbeat for {silent:.1f} s (last heard at {seen})"


def take_waiting(
    sock: zmq.Socket, receive: Callable[[], object], grace_s: float = LATE_GRACE_S
) -> bool:
    """Handle what ``sock`` holds, or receives within ``grace_s``; True if anything came.

    ``receive`` reads and handles one message. Called before a peer is declared silent.
    """
    deadline = time.monotonic() + grace_s
    heard = False
    while sock.poll(max(0, round((deadline - time.monotonic()) * 1000)), zmq.POLLIN):
        receive()
        heard = True
        if time.monotonic() >= deadline:
            break
    return heard
