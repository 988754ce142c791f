"""An in-process network of nodes: queues instead of sockets, the real wire encoding.

Every package is encoded exactly as it is on the network (``psgd.net.protocol``) and the
bytes are copied, so byte counts are the real ones, codec content that cannot be sent fails
here first, and no two nodes ever share an array. With a ``VirtualClock`` (emulated links and
devices), every message carries the virtual time it arrives at, computed from its encoded size.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from psgd.errors import CodecError
from psgd.net import protocol, wire
from psgd.net.channel import JobAborted, Package
from psgd.train.vclock import VirtualClock

__all__ = ["InProcessChannel", "InProcessNetwork"]

_ABORT = object()


class InProcessNetwork:
    """A set of nodes that deliver packages to each other through queues.

    Parameters
    ----------
    node_ids:
        Every node of the job (workers and, when there is one, the parameter server).
    clock:
        Emulated links and devices (``psgd.train.vclock``), or None.
    """

    def __init__(
        self, node_ids: list[int], job_id: str = "in-process", clock: VirtualClock | None = None
    ) -> None:
        self.node_ids = list(node_ids)
        self.job_id = job_id
        self.clock = clock
        self._inboxes: dict[int, queue.SimpleQueue[Any]] = {
            n: queue.SimpleQueue() for n in node_ids
        }
        self._aborted = threading.Event()
        self.abort_reason = ""

    def channel(self, node_id: int) -> InProcessChannel:
        """The channel node ``node_id`` sends and receives through."""
        return InProcessChannel(self, node_id)

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def abort(self, reason: str) -> None:
        """Stop the job: every blocked or later ``recv``/``send`` raises ``JobAborted``."""
        if self._aborted.is_set():
            return
        self.abort_reason = reason
        self._aborted.set()
        for inbox in self._inboxes.values():
            inbox.put(_ABORT)

    def deliver(self, sender: int, targets: list[int], items: Sequence[tuple[int, Any]]) -> int:
        if self._aborted.is_set():
            raise JobAborted(self.abort_reason)
        for target in targets:
            if target not in self._inboxes:
                raise CodecError(
                    f"node {sender} layer {items[0][0]}: netEncapsulation target {target} is not "
                    f"a node of this job (nodes: {self.node_ids})"
                )
        frames = protocol.make_packages(self.job_id, sender, items)
        owned = [bytes(frame) for frame in frames]
        size = wire.frames_size(owned)
        arrivals = self.clock.send(sender, targets, size) if self.clock else {}
        for target in targets:
            self._inboxes[target].put((owned, arrivals.get(target)))
        return size * len(targets)

    def receive(self, node_id: int, timeout_s: float) -> list[Package]:
        try:
            item = self._inboxes[node_id].get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return []
        if item is _ABORT:
            self._inboxes[node_id].put(_ABORT)  # keep later calls failing fast too
            raise JobAborted(self.abort_reason)
        frames, arrival = item
        if arrival is not None and self.clock is not None:
            self.clock.receive(node_id, arrival)
        message = protocol.parse(frames, protocol.PEER_TYPES)
        return [Package(*p) for p in protocol.split_packages(message, wire.frames_size(frames))]


class InProcessChannel:
    """One node's end of an ``InProcessNetwork`` (implements ``psgd.net.channel.Channel``)."""

    def __init__(self, network: InProcessNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id
        self.bytes_sent = 0
        self.packages_sent = 0
        self._pending: deque[Package] = deque()

    def send(self, targets: list[int], items: Sequence[tuple[int, Any]]) -> int:
        size = self.network.deliver(self.node_id, targets, items)
        self.bytes_sent += size
        self.packages_sent += len(targets)
        return size

    def virtual_now(self) -> float | None:
        """This node's virtual time with emulated links (its thread's CPU charged), else None."""
        clock = self.network.clock
        return None if clock is None else clock.now(self.node_id)

    def recv(self, timeout_s: float) -> Package | None:
        if not self._pending:
            self._pending.extend(self.network.receive(self.node_id, timeout_s))
        return self._pending.popleft() if self._pending else None
