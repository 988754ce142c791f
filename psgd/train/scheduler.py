"""The round scheduler: routes packages, runs the clients that hold work, counts rounds.

It knows everything of an in-process federated job, so it needs no timeouts:

- A client exists once a package is sent to it (a never-picked client costs nothing) and is
  *runnable* when every layer codec holds a result (it was sent a round's model). Runnable
  clients go to the executors; the others wait, parked, as a ``ClientState``.
- The parameter server lives here. Each time all of its layer codecs hold a result, that is
  the new global model: one *round* is complete.
- When no client runs, none is runnable and no package is in flight, nothing can ever happen
  again: the job fails at once with a ``Deadlock`` naming who waits for what.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psgd.codec import Codec, Parameter_Server
from psgd.errors import CodecError, PsgdError
from psgd.net import protocol, wire
from psgd.net.channel import Package
from psgd.train.executors import Executors, Task
from psgd.train.node import ClientState, RunOutcome
from psgd.train.shm import SharedFrames, put_frames, release, take_messages
from psgd.train.sync import CodecSet, build_codecs

__all__ = ["Deadlock", "RoundStats", "Scheduler"]

_log = logging.getLogger(__name__)

#: Tasks given to an executor at once: one training, one queued (hides the hand-over).
TASKS_PER_EXECUTOR = 2

#: Most clients in one task.
MAX_CLIENTS_PER_TASK = 32


class Deadlock(PsgdError):
    """No client can run, none runs and nothing is in flight, before the job's end."""


@dataclass
class RoundStats:
    """What one round cost: the clients that trained for it and the bytes it moved."""

    round_no: int
    clients: set[int] = field(default_factory=set)
    steps: int = 0
    samples: int = 0
    loss_sum: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    train_s: float = 0.0
    batch_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def train_loss(self) -> float:
        return self.loss_sum / self.steps if self.steps else float("nan")


class _Router:
    """The channel of a codec called by the scheduler: encodes now, delivers in order."""

    def __init__(self, scheduler: Scheduler, node_id: int) -> None:
        self.scheduler = scheduler
        self.node_id = node_id
        self.bytes_sent = 0

    def send(self, targets: list[int], items: Sequence[tuple[int, Any]]) -> int:
        job_id = self.scheduler.job_id
        frames = [bytes(f) for f in protocol.make_packages(job_id, self.node_id, items)]
        size = wire.frames_size(frames) * len(targets)
        self.bytes_sent += size
        self.scheduler.post(self.node_id, list(targets), frames, size)
        return size

    def recv(self, timeout_s: float) -> None:
        raise CodecError(f"node {self.node_id}: the scheduler delivers packages itself")


class Scheduler:
    """Runs one round-based job's clients on ``executors`` until ``stop`` says so.

    Parameters
    ----------
    job_id, node_count:
        The job's id (in every package) and its number of clients.
    client_classes, server_classes:
        One codec class per layer for the clients and for the parameter server.
    initial_weights:
        The job's initial model, given to the server codecs' ``initial_weights``.
    executors:
        Where clients train.
    on_round:
        Called with each round's stats and global model (the server's results); returns
        True to stop the job.
    max_rounds:
        The job ends with this round; nothing more is dispatched once it is complete.
    segment_prefix:
        Names of the shared memory segments of messages to process executors start with it.
    """

    def __init__(
        self,
        job_id: str,
        node_count: int,
        client_classes: Sequence[type[Codec]],
        server_classes: Sequence[type[Codec]],
        initial_weights: list[np.ndarray],
        executors: Executors,
        on_round: Callable[[RoundStats, list[np.ndarray]], bool],
        max_rounds: int,
        segment_prefix: str = "psgd",
    ) -> None:
        self.job_id = job_id
        self.node_count = node_count
        self.client_classes = list(client_classes)
        self.executors = executors
        self.on_round = on_round
        self.max_rounds = max_rounds
        self.parked: dict[int, ClientState] = {}
        self.running: dict[int, list[Any]] = {}  # client -> the messages its run carried
        self.pending: dict[int, list[Any]] = {}  # messages not yet given to their client
        self.runnable: deque[int] = deque()  # clients with messages, in arrival order
        self._queued: set[int] = set()
        self._readers: dict[str, int] = {}  # shared message -> runs that still read it
        self.segment_prefix = segment_prefix
        self.in_flight: deque[tuple[int, list[int], list[Any], int]] = deque()
        self.last_round: dict[int, int] = {}  # the round each client last trained for
        self.rounds_done = 0
        self.stopped = False
        self._busy = [0] * executors.count
        self._stats: dict[int, RoundStats] = {}
        self._finished: list[tuple[RoundStats, list[np.ndarray]]] = []
        self._server_channel = _Router(self, Parameter_Server)
        self.server = CodecSet(
            Parameter_Server, server_classes, self._server_channel, initial_weights
        )
        self._server_marks = (0, self._server_channel.bytes_sent)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Route, run and count rounds until ``on_round`` stops the job; raises on failure."""
        while True:
            self._route()
            self._dispatch()
            for stats, model in self._finished:  # evaluated while the executors train
                if self.on_round(stats, model):
                    self.stopped = True
            self._finished.clear()
            if self.stopped:
                return
            if not self.running:
                raise Deadlock(self._deadlock_report())
            for executor, outcomes in self.executors.wait(None):
                self._busy[executor] -= 1
                self._finish(outcomes)

    def post(self, sender: int, targets: list[int], frames: list[Any], size: int) -> None:
        """Queue a message sent by ``sender`` (``size``: its bytes on the wire, all targets)."""
        for target in targets:
            if target != Parameter_Server and not 0 <= target < self.node_count:
                raise CodecError(
                    f"node {sender}: netEncapsulation target {target} is not a node of this job "
                    f"(clients 0..{self.node_count - 1} and Parameter_Server)"
                )
        self.in_flight.append((sender, targets, frames, size))

    # ------------------------------------------------------------------ routing

    def _route(self) -> None:
        while self.in_flight:
            sender, targets, frames, _ = self.in_flight.popleft()
            clients = [t for t in targets if t != Parameter_Server]
            if len(clients) < len(targets):
                message = protocol.parse(frames, protocol.PEER_TYPES)
                for item in protocol.split_packages(message, wire.frames_size(frames)):
                    self.server.deliver(Package(*item))
                self._count_round()
            if not clients:
                continue
            shared: Any = frames
            if self.executors.shared:  # written once, read by every executor that needs it
                shared = put_frames(frames, self.segment_prefix)
                self._readers[shared.path] = len(clients)
            for target in clients:
                self.pending.setdefault(target, []).append(shared)
                if target not in self.running and target not in self._queued:
                    self._queued.add(target)
                    self.runnable.append(target)

    def _count_round(self) -> None:
        if self.stopped or not all(codec.is_done() for codec in self.server.codecs):
            return
        model = [codec.get_result() for codec in self.server.codecs]
        self.rounds_done += 1
        if self.rounds_done >= self.max_rounds:
            self.stopped = True
        stats = self._stats.pop(self.rounds_done, RoundStats(self.rounds_done))
        # The server sends round r+1's model while it finishes round r: round r's download is
        # what it sent while finishing round r-1 (or, for round 1, at the start).
        before, last = self._server_marks
        stats.bytes_down = last - before
        self._server_marks = (last, self._server_channel.bytes_sent)
        self._finished.append((stats, model))

    # ------------------------------------------------------------------ executors

    def _dispatch(self) -> None:
        """Hand runnable clients to the least busy executors, several per task when many wait.

        A task carries about a quarter of an executor's share of the runnable clients (at
        most ``MAX_CLIENTS_PER_TASK``): few hand-overs when thousands of small clients wait,
        and still a balanced finish when ten large ones do.
        """
        while self.runnable and not self.stopped:
            executor = min(range(self.executors.count), key=self._busy.__getitem__)
            if self._busy[executor] >= TASKS_PER_EXECUTOR:
                return
            share = math.ceil(len(self.runnable) / (2 * TASKS_PER_EXECUTOR * self.executors.count))
            tasks = [
                self._task(self.runnable.popleft()) for _ in range(min(share, MAX_CLIENTS_PER_TASK))
            ]
            self._busy[executor] += 1
            self.executors.submit(executor, tasks)

    def _task(self, node: int) -> Task:
        self._queued.discard(node)
        state = self.parked.pop(node, None)
        if state is None:  # first sent something now: the client comes into being
            state = ClientState(node, build_codecs(node, self.client_classes))
        messages = self.pending.pop(node, [])
        round_no = self.rounds_done + 1
        self.running[node] = messages
        self.last_round[node] = round_no
        return state, round_no, messages

    def _finish(self, outcomes: list[RunOutcome]) -> None:
        shared = [m for o in outcomes for _, m in o.messages if isinstance(m, SharedFrames)]
        taken = iter(take_messages(shared)) if shared else iter(())
        for outcome in outcomes:
            state = outcome.state
            node = state.node_id
            for message in self.running.pop(node):
                self._read_once(message)
            if outcome.error:
                raise CodecError(outcome.error)
            self.parked[node] = state
            if outcome.steps:
                self._count_run(outcome)
            for targets, message in outcome.messages:
                frames = next(taken) if isinstance(message, SharedFrames) else message
                self.post(node, targets, frames, wire.frames_size(frames) * len(targets))
            if node in self.pending and node not in self._queued:  # sent more while it ran
                self._queued.add(node)
                self.runnable.append(node)

    def _count_run(self, outcome: RunOutcome) -> None:
        node = outcome.state.node_id
        stats = self._stats.setdefault(outcome.round_no, RoundStats(outcome.round_no))
        stats.clients.add(node)
        stats.steps += outcome.steps
        stats.samples += outcome.samples
        stats.loss_sum += outcome.loss_sum
        stats.bytes_up += outcome.bytes_sent
        stats.train_s += outcome.train_s
        if outcome.batch_losses:
            stats.batch_rows += [
                {"round": outcome.round_no, "node": node, "step": step, "loss": loss}
                for step, loss in enumerate(outcome.batch_losses)
            ]

    def _read_once(self, message: Any) -> None:
        """A run that carried ``message`` is over: free its segment after its last reader."""
        if isinstance(message, SharedFrames):
            self._readers[message.path] -= 1
            if not self._readers[message.path]:
                del self._readers[message.path]
                release(message)

    def release_all(self) -> None:
        """Free every message segment still held (the job is over)."""
        for path in list(self._readers):
            release(SharedFrames(path, ()))
        self._readers.clear()

    # ------------------------------------------------------------------ reports

    def _deadlock_report(self) -> str:
        server_waiting = [i for i, c in enumerate(self.server.codecs) if not c.is_done()]
        waiting = sorted(self.parked)
        shown = ", ".join(
            f"node {n} (layers {_pending(self.parked[n].codecs)}, "
            + (f"last trained for round {self.last_round[n]})" if n in self.last_round
               else "never ran)")
            for n in waiting[:5]
        )  # fmt: skip
        more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        never = self.node_count - len(self.parked)
        return (
            f"deadlock after round {self.rounds_done}: no client can run and no package is in "
            f"flight. The parameter server's layers {server_waiting} wait for updates to "
            f"finish round {self.rounds_done + 1}; {len(waiting)} clients wait for a model: "
            f"{shown or 'none'}{more}; {never} clients were never sent anything"
        )


def _pending(codecs: list[Codec]) -> list[int]:
    return [layer for layer, codec in enumerate(codecs) if not codec.is_done()]
