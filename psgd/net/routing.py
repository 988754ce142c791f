"""The data plane of round jobs on daemons: virtual nodes hosted by a few members.

A round job on daemons has one *member* per daemon: the parameter server (``Parameter_Server``)
and pools ``0..P-1``, pool ``p`` hosting a contiguous range of the job's virtual clients
(``Placement``). Codecs address virtual clients as usual; ``RoutedChannel`` sends a package
once to each member that hosts some of its targets, wrapped in a ROUTE envelope naming them
(plus, optionally, the round the package belongs to and the stats of the run that sent it).

Quiescence: each member counts the messages it sent to other members and those that arrived
(dropped ones included), and a member's loop that finds nothing to do marks itself ``quiet``
with those counts and a line saying what it waits for. The daemon puts that in its heartbeats;
when every member has stayed quiet with unchanged counts and all sent messages have arrived,
nothing can happen any more and the submitter fails the job as a deadlock.

What a member accepts: a ROUTE from a member of the job over that member's own connection
(``PeerChannel``'s rules), for virtual nodes this member hosts, wrapping one PACKAGE whose
sender is hosted by the member that sent it. Anything else is logged, counted and dropped.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from psgd.codec import Parameter_Server
from psgd.errors import CodecError, MalformedMessage
from psgd.net import protocol, wire
from psgd.net.channel import JobAborted
from psgd.net.transport import PeerChannel

__all__ = ["Placement", "Routed", "RoutedChannel"]

#: The ``run`` field of a ROUTE: the stats of the client run that sent it (see ``RUN_FIELDS``).
RUN_FIELDS = ("steps", "samples", "loss_sum", "bytes_sent", "train_s")


@dataclass(frozen=True)
class Placement:
    """Which member hosts each virtual node: the PS hosts itself; pools split the clients.

    Pool ``p`` of ``pools`` hosts clients ``range_of(p)``: contiguous ranges whose sizes differ
    by at most one, in pool order.
    """

    node_count: int
    pools: int

    def __post_init__(self) -> None:
        if not 1 <= self.pools <= self.node_count:
            raise ValueError(f"{self.pools} pools for {self.node_count} clients")

    def range_of(self, pool: int) -> range:
        """The clients pool ``pool`` hosts."""
        size, extra = divmod(self.node_count, self.pools)
        first = pool * size + min(pool, extra)
        return range(first, first + size + (pool < extra))

    def owner(self, node: int) -> int:
        """The member hosting virtual node ``node`` (``Parameter_Server`` for the PS)."""
        if node == Parameter_Server:
            return Parameter_Server
        if not 0 <= node < self.node_count:
            raise KeyError(node)
        firsts = [self.range_of(p).start for p in range(self.pools)]
        return bisect.bisect_right(firsts, node) - 1

    def hosts(self, member: int, node: int) -> bool:
        """True when ``member`` hosts virtual node ``node``."""
        if member == Parameter_Server:
            return node == Parameter_Server
        return 0 <= member < self.pools and node in self.range_of(member)


@dataclass
class Routed:
    """A package that arrived for virtual nodes ``to``: its frames, parsed, and its envelope."""

    to: list[int]
    frames: list[Any]
    message: protocol.Message
    round_no: int | None
    run: dict[str, float] | None
    batch_losses: list[float]

    @property
    def size(self) -> int:
        """The package's bytes (one copy; each target counts them once)."""
        return wire.frames_size(self.frames)


class RoutedChannel(PeerChannel):
    """A member's data plane in a round job on daemons (``place`` it before use).

    Sends go through ``send_frames``: an encoded PACKAGE of one of this member's virtual nodes,
    to virtual targets. Packages for virtual nodes this member hosts itself never touch a
    socket. ``receive`` returns what arrived, waiting on extra file descriptors too (the
    executors' pipes), so one loop serves both.
    """

    placement: Placement | None = None
    #: ``(messages sent, messages arrived, what it waits for)`` while this member's loop has
    #: nothing to do; ``None`` while it works.
    quiet: tuple[int, int, str] | None = None

    def place(self, placement: Placement) -> None:
        """Set who hosts which virtual node (the job's pools and client count)."""
        self.placement = placement
        self._routed: deque[Routed] = deque()
        self.messages_sent = 0
        self.messages_arrived = 0

    def note_quiet(self, waiting: Callable[[], str] | None) -> None:
        """The loop has nothing to do (``waiting()`` says what for); ``None``: it works."""
        if waiting is None:
            self.quiet = None
        elif self.quiet is None or self.quiet[:2] != (self.messages_sent, self.messages_arrived):
            self.quiet = (self.messages_sent, self.messages_arrived, waiting())

    def _owners(self, targets: Iterable[int]) -> dict[int, list[int]]:
        assert self.placement is not None, "place() the channel first"
        groups: dict[int, list[int]] = {}
        for target in targets:
            try:
                owner = self.placement.owner(target)
            except KeyError:
                raise CodecError(
                    f"member {self.node_id}: netEncapsulation target {target} is not a node of "
                    f"this job (clients 0..{self.placement.node_count - 1} and Parameter_Server)"
                ) from None
            groups.setdefault(owner, []).append(target)
        return groups

    def send_frames(
        self,
        targets: Sequence[int],
        frames: list[Any],
        round_no: int | None = None,
        run: dict[str, Any] | None = None,
    ) -> int:
        """Send one encoded PACKAGE to virtual ``targets``; returns its bytes times targets.

        ``round_no`` tags the package with the round it belongs to (the PS's models); ``run``
        carries the stats of the client run that produced it (``RUN_FIELDS``, and optionally
        ``losses``, its batch losses) to the PS.
        """
        if self.aborted():
            raise JobAborted("job aborted")
        extra: dict[str, Any] = {}
        if round_no is not None:
            extra["round"] = round_no
        if run is not None:
            extra["run"] = run
        size = wire.frames_size(frames)
        for owner, group in self._owners(targets).items():
            if owner == self.node_id:
                message = protocol.parse(list(frames), protocol.PEER_TYPES, self.limits)
                self._routed.append(_routed(group, list(frames), message, extra))
                continue
            envelope = protocol.make(protocol.ROUTE, job=self.job_id, to=group, **extra)
            with self._send_lock:
                self.peers[owner].send_multipart([*envelope, *frames], copy=False)
                self.messages_sent += 1
        sent = size * len(targets)
        self.bytes_sent += sent
        return sent

    def receive(self, timeout_s: float, fds: Sequence[int] = ()) -> list[Routed]:
        """What arrived, waiting up to ``timeout_s`` for a package or for one of ``fds``."""
        if self.aborted():
            raise JobAborted("job aborted")
        got, self._routed = list(self._routed), deque()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.monitor is not None:
            poller.register(self.monitor.socket, zmq.POLLIN)
        for fd in fds:
            poller.register(fd, zmq.POLLIN)
        ready = dict(poller.poll(0 if got else int(timeout_s * 1000)))
        if self.monitor is not None and self.monitor.socket in ready:
            self.monitor.drain()
        self.drops.tick()
        started = time.monotonic()
        while self.router in ready or self.router.poll(0):
            ready = {}
            frames = self.router.recv_multipart(copy=False)
            self.messages_arrived += 1
            routed = self._accept_routed(frames)
            if routed is not None:
                got.append(routed)
            if time.monotonic() - started > timeout_s:  # let the caller serve its clients
                break
        return got

    def _accept_routed(self, frames: list[zmq.Frame]) -> Routed | None:
        assert self.placement is not None, "place() the channel first"
        try:
            sender = self._sender(frames, 3, "no package after the route envelope")
            envelope = protocol.parse(frames[1:2], protocol.ROUTE_TYPES, self.limits)
            inner = [f.buffer for f in frames[2:]]
            message = protocol.parse(inner, protocol.PEER_TYPES, self.limits)
            self._check(envelope, message, sender)
            return _routed(envelope["to"], inner, message, envelope.fields)
        except MalformedMessage as exc:
            self._drop(frames, "routed message", exc)
            return None

    def _check(self, envelope: protocol.Message, message: protocol.Message, sender: int) -> None:
        assert self.placement is not None
        for job in (envelope["job"], message["job"]):
            if job != self.job_id:
                raise MalformedMessage(f"package of job {job!r:.40}, not {self.job_id}")
        to = envelope["to"]
        if not to or not all(type(n) is int and self.placement.hosts(self.node_id, n) for n in to):
            raise MalformedMessage(f"addressed to {to!r:.60}, not all hosted by {self.node_id}")
        src = message["src"]
        if type(src) is not int or not self.placement.hosts(sender, src):
            raise MalformedMessage(f"claims to be node {src!r:.20}, not hosted by {sender}")
        round_no = envelope.get("round")
        if round_no is not None and (type(round_no) is not int or round_no < 1):
            raise MalformedMessage(f"round {round_no!r:.20} is not a positive integer")
        run = envelope.get("run")
        if run is not None and not _valid_run(run):
            raise MalformedMessage("run stats are not numbers")


def _valid_run(run: Any) -> bool:
    if not isinstance(run, dict):
        return False
    numbers = all(type(run.get(k)) in (int, float) for k in RUN_FIELDS)
    losses = run.get("losses", [])
    return numbers and isinstance(losses, list) and all(type(v) is float for v in losses)


def _routed(
    to: list[int], frames: list[Any], message: protocol.Message, fields: dict[str, Any]
) -> Routed:
    run = fields.get("run")
    losses = list(run.get("losses", [])) if run else []
    stats = {k: float(run[k]) for k in RUN_FIELDS} if run else None
    return Routed(list(to), frames, message, fields.get("round"), stats, losses)
