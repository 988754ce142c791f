"""Round jobs over emulated links and devices: the in-process scheduler on a virtual clock.

With ``--link`` or ``--device-speed`` a round job in ``--simulate`` keeps a virtual clock per
client and for the server (``psgd.train.vclock``): a client starts when the round's model
reaches it, computes for the CPU time its run took here divided by its device's speed, and its
update arrives after its encoded size crossed its link up and the server's link down. Nothing
sleeps: the clock is computed, and executors train as fast as the hardware allows.

The server handles updates in the order they arrive in virtual time, not in the order the
executors finish them: an update is delivered once no running or waiting client could still
send one that arrives earlier. ``--round-deadline S`` is virtual too: S seconds after the
server sent a round's model it closes the round with the updates that arrived; stragglers'
updates come too late and are dropped. Each round's ``virtual_s`` is the server's clock when
the round was complete.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from psgd.codec import Parameter_Server
from psgd.net import protocol, wire
from psgd.train.hosting import run_stats
from psgd.train.node import RunOutcome
from psgd.train.scheduler import Scheduler
from psgd.train.vclock import VirtualClock

__all__ = ["EmulatedScheduler"]

#: A client run's stats on their way to the server: round, client, figures, batch losses.
Run = tuple[int, int, dict[str, Any], list[float]]


class EmulatedScheduler(Scheduler):
    """A ``Scheduler`` whose routing and deadlines follow a ``VirtualClock``.

    Takes the ``Scheduler``'s arguments, plus ``clock`` (with a link and a speed for every
    client and for ``Parameter_Server``) and ``deadline_s`` (``--round-deadline``, virtual
    seconds, or ``None``).
    """

    def __init__(
        self, *args: Any, clock: VirtualClock, deadline_s: float | None = None, **kwargs: Any
    ) -> None:
        self.clock = clock
        self.deadline_s = deadline_s
        #: Beside each ``in_flight`` message: its arrival per target, and the stats of the run
        #: that sent it (counted when it reaches the server, in virtual time: not if late).
        self._arrivals: deque[tuple[dict[int, float], Run | None]] = deque()
        self._heap: list[tuple[float, int, list[Any], Run | None]] = []  # the server's
        self._unsent: dict[int, Run] = {}  # client -> its last run's stats, not yet sent
        self._sequence = 0
        self.ready_at: dict[int, float] = {}  # client -> when its newest package arrives
        self.started_at: dict[int, float] = {}  # running client -> when its run started
        self.round_started: dict[int, float] = {}  # round -> when the server sent its model
        kwargs["deadline"] = False  # deadlines come from the clock, not from quiescence
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ messages

    def post(self, sender: int, targets: list[int], frames: list[Any], size: int) -> None:
        super().post(sender, targets, frames, size)
        others = [t for t in targets if t != sender]
        run = self._unsent.pop(sender, None) if Parameter_Server in targets else None
        self.clock.start(sender)  # the clock charges no CPU of this thread: runs are measured
        self._arrivals.append((self.clock.send(sender, others, wire.frames_size(frames)), run))

    def _post_server_sends(self) -> None:
        for targets, frames, round_no in self.server.take_sends():
            self.round_started.setdefault(round_no, self._server_now())
            self.post(Parameter_Server, targets, frames, wire.frames_size(frames) * len(targets))

    def _route(self) -> None:
        while True:
            while self.in_flight:
                _, targets, frames, _ = self.in_flight.popleft()
                arrivals, run = self._arrivals.popleft()
                clients = [t for t in targets if t != Parameter_Server]
                if len(clients) < len(targets):
                    self._sequence += 1
                    entry = (arrivals[Parameter_Server], self._sequence, frames, run)
                    heapq.heappush(self._heap, entry)
                for client in clients:
                    self.ready_at[client] = max(self.ready_at.get(client, 0.0), arrivals[client])
                if clients:
                    self.enqueue(clients, frames)
            if not self._serve_due():
                return

    # ------------------------------------------------------------------ the server

    def _serve_due(self) -> bool:
        """Deliver the next message due, or apply a due deadline, in virtual time.

        One at a time: what the server sends must reach its clients (and so bound what may
        come next) before anything else is due. True if something was done.
        """
        if self.server.stopped:
            return False
        bound = self._earliest_send()
        arrival = self._heap[0][0] if self._heap else math.inf
        deadline = self._deadline_at()
        if deadline is not None and deadline < arrival and deadline <= bound:
            self.clock.advance_to(Parameter_Server, deadline)
            self._server_call(self.server.deadline)
            return True
        if not self._heap or arrival > bound:
            return False
        _, _, frames, run = heapq.heappop(self._heap)
        self.clock.advance_to(Parameter_Server, arrival)
        if run is not None:  # a run for a round already closed is not counted
            self.server.add_run(*run)
        message = protocol.parse(frames, protocol.PEER_TYPES)
        self._server_call(self.server.deliver, message, wire.frames_size(frames))
        return True

    def _server_call(self, call: Callable[..., object], *args: Any) -> None:
        started = time.thread_time()
        call(*args)
        self.clock.compute(Parameter_Server, time.thread_time() - started)
        now = self._server_now()
        for stats, _ in self.server.finished:
            if stats.virtual_s is None:
                stats.virtual_s = now
        self._post_server_sends()

    def _server_now(self) -> float:
        return self.clock.advance_to(Parameter_Server, -math.inf)

    def _deadline_at(self) -> float | None:
        if self.deadline_s is None or not self.server.deadline_pending:
            return None
        started = self.round_started.get(self.server.rounds_done + 1)
        return None if started is None else started + self.deadline_s

    def _earliest_send(self) -> float:
        """No client that runs or waits to run can send anything that leaves before this."""
        running = (self.started_at[n] for n in self.running)
        waiting = (self.ready_at.get(n, 0.0) for n in self.runnable)
        return min((*running, *waiting), default=math.inf)

    # ------------------------------------------------------------------ clients

    def _task(self, node: int) -> Any:
        task = super()._task(node)
        self.started_at[node] = self.clock.advance_to(node, self.ready_at.get(node, 0.0))
        return task

    def count_run(self, outcome: RunOutcome) -> None:
        node = outcome.state.node_id
        self._unsent[node] = (outcome.round_no, node, run_stats(outcome), outcome.batch_losses)

    def _finish(self, outcomes: list[RunOutcome]) -> None:
        for outcome in outcomes:  # the run's compute, before what it sent leaves
            self.clock.compute(outcome.state.node_id, outcome.cpu_s)
        super()._finish(outcomes)
