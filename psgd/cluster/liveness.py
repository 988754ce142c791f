"""The submitter's side of liveness ("Paranoid Pirate"): when a daemon counts as dead, and why.

Liveness applies from the moment a daemon has a job: it heartbeats as soon as the JOB has
arrived (and on, while it loads the codec), so one that falls silent while it prepares the job
is named as quickly as one that dies while training. Until a daemon first answers after its JOB
was sent, the JOB may still be on its way: the bound is stretched by the transfer time.
"""

from __future__ import annotations

import time
from typing import Protocol

from psgd.net.transport import HEARTBEAT_INTERVAL_S, LIVENESS_INTERVALS

__all__ = ["LIVE_STATES", "MIN_TRANSFER_BYTES_PER_S", "death"]

#: The slowest link a JOB is expected to cross (10 Mbit/s), for the transfer allowance: a job
#: of 94 MB may take 75 s to arrive before its daemon counts as dead (only until it answers).
MIN_TRANSFER_BYTES_PER_S = 1.25e6
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
