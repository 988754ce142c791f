"""The interface between a node's training loop and whatever carries its packages.

The trainer and the sync drivers only ever see a ``Channel``: the in-process network
(``psgd.train.inprocess``) and the ZeroMQ transport implement it, so the training loop is one
piece of code wherever it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from psgd.errors import PsgdError

__all__ = ["Channel", "JobAborted", "Package"]


class JobAborted(PsgdError):
    """The job was stopped from outside (another node failed, or the submitter said so)."""


@dataclass(frozen=True)
class Package:
    """One received package: who sent it, for which layer codec, and its content."""

    sender: int
    layer: int
    content: Any
    nbytes: int


class Channel(Protocol):
    """What a node uses to talk to the others.

    ``send`` encodes once and delivers one message to every target; ``recv`` returns the next
    package (a message carrying several layers' items yields them one by one) or None after
    ``timeout_s``; both raise ``JobAborted`` once the job is aborted.
    """

    node_id: int
    bytes_sent: int

    def send(self, targets: list[int], items: Sequence[tuple[int, Any]]) -> int:
        """Send ``(layer, content)`` items to ``targets``; returns bytes put on the wire."""
        ...

    def recv(self, timeout_s: float) -> Package | None:
        """The next package for this node, or None when ``timeout_s`` passes first."""
        ...
