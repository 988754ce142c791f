"""Hosting virtual clients: who is parked, who is runnable, handing them to executors.

``ClientHost`` is the executor-facing half of a round job, shared by the in-process scheduler
(``psgd.train.scheduler``, which also hosts the parameter server) and a daemon's pool of
clients (``psgd.train.pool``, whose server is elsewhere on the network):

- A client exists once a package is sent to it (a never-picked client costs nothing) and is
  *runnable* once it has packages it has not seen; the others wait, parked, as a
  ``ClientState``.
- Runnable clients go to the executors in tasks of several clients when many wait; what
  each run sends comes back to ``post``, which the subclass routes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Any

from psgd.codec import Codec
from psgd.errors import CodecError
from psgd.net import wire
from psgd.train.executors import Executors, Task
from psgd.train.node import ClientState, EvalOutcome, RunOutcome
from psgd.train.shm import SharedFrames, put_frames, release, take_messages
from psgd.train.sync import build_codecs

__all__ = ["MAX_CLIENTS_PER_TASK", "TASKS_PER_EXECUTOR", "ClientHost"]

#: Tasks given to an executor at once: one training, one queued (hides the hand-over).
TASKS_PER_EXECUTOR = 2

#: Most clients in one task.
MAX_CLIENTS_PER_TASK = 32

#: Personal states kept per client (evaluations may lag training by a few rounds).
PERSONAL_KEPT = 4


class ClientHost(ABC):
    """Runs the virtual clients sent packages on ``executors``.

    Parameters
    ----------
    client_classes:
        One codec class per layer for the clients.
    executors:
        Where clients train.
    segment_prefix:
        Names of the shared memory segments of messages to process executors start with it.
    """

    def __init__(
        self,
        client_classes: Sequence[type[Codec]],
        executors: Executors,
        segment_prefix: str = "psgd",
    ) -> None:
        self.client_classes = list(client_classes)
        self.executors = executors
        self.segment_prefix = segment_prefix
        self.parked: dict[int, ClientState] = {}
        self.running: dict[int, list[Any]] = {}  # client -> the messages its run carried
        self.pending: dict[int, list[Any]] = {}  # messages not yet given to their client
        self.runnable: deque[int] = deque()  # clients with messages, in arrival order
        self.last_round: dict[int, int] = {}  # the round each client last ran for
        self.trained: set[int] = set()  # clients that trained at least one step
        #: Each client's personal learner state after its last few runs: ``[(round, state)]``.
        self.personal: dict[int, list[tuple[int, Any]]] = {}
        self.stopped = False
        self._queued: set[int] = set()
        self._readers: dict[str, int] = {}  # shared message -> runs that still read it
        self._busy = [0] * executors.count

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    def post(self, sender: int, targets: list[int], frames: list[Any], size: int) -> None:
        """Route a message client ``sender`` sent (``size``: its bytes, all targets)."""

    @abstractmethod
    def round_for(self, node: int) -> int:
        """The round client ``node`` trains for in the run it is about to start."""

    @abstractmethod
    def count_run(self, outcome: RunOutcome) -> None:
        """Account for a run that trained (steps, samples, loss, bytes)."""

    # ------------------------------------------------------------------ clients

    def enqueue(self, targets: Sequence[int], frames: list[Any]) -> None:
        """Give one message to clients ``targets``: each becomes runnable."""
        shared: Any = frames
        if self.executors.shared:  # written once, read by every executor that needs it
            shared = put_frames(frames, self.segment_prefix)
            self._readers[shared.path] = len(targets)
        for target in targets:
            self.pending.setdefault(target, []).append(shared)
            if target not in self.running and target not in self._queued:
                self._queued.add(target)
                self.runnable.append(target)

    def dispatch(self) -> None:
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
        round_no = self.round_for(node)
        messages = self.pending.pop(node, [])
        self.running[node] = messages
        self.last_round[node] = round_no
        return state, round_no, messages

    def collect(self, timeout_s: float | None) -> int:
        """Take the outcomes of finished tasks (waiting up to ``timeout_s``); how many tasks."""
        done = self.executors.wait(timeout_s)
        for executor, outcomes in done:
            self._busy[executor] -= 1
            self._finish([o for o in outcomes if isinstance(o, RunOutcome)])
            for outcome in outcomes:
                if isinstance(outcome, EvalOutcome):
                    self.evaluated(outcome)
        return len(done)

    def evaluated(self, outcome: EvalOutcome) -> None:
        """An evaluation given to an executor is done (hosts that evaluate override this)."""
        raise AssertionError("this host gives its executors no evaluations")

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
                self.trained.add(node)
                self.count_run(outcome)
                if state.personal is not None:
                    kept = self.personal.setdefault(node, [])
                    kept.append((outcome.round_no, state.personal))
                    del kept[:-PERSONAL_KEPT]
            for targets, message in outcome.messages:
                frames = next(taken) if isinstance(message, SharedFrames) else message
                self.post(node, targets, frames, wire.frames_size(frames) * len(targets))
            if node in self.pending and node not in self._queued:  # sent more while it ran
                self._queued.add(node)
                self.runnable.append(node)

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

    def personal_at(self, round_no: int) -> dict[int, Any]:
        """Each client's personal state as it was when round ``round_no`` was complete.

        That is, after its last run for a round up to ``round_no``: what evaluating round
        ``round_no`` needs while some clients may already train for later rounds.
        """
        states = {}
        for node, kept in self.personal.items():
            before = [state for trained, state in kept if trained <= round_no]
            if before:
                states[node] = before[-1]
        return states

    @property
    def can_dispatch(self) -> bool:
        """Some executor has room for another task."""
        return min(self._busy) < TASKS_PER_EXECUTOR

    @property
    def idle(self) -> bool:
        """No client runs and none is runnable."""
        return not self.running and not self.runnable

    def pending_layers(self, node: int) -> list[int]:
        """The layers parked client ``node`` waits on (codecs without a result)."""
        codecs = self.parked[node].codecs
        return [layer for layer, codec in enumerate(codecs) if not codec.is_done()]

    def waiting_report(self, node_count: int) -> str:
        """Who waits for what: up to five parked clients, and how many never ran."""
        waiting = sorted(self.parked)
        shown = ", ".join(
            f"node {n} (layers {self.pending_layers(n)}, "
            + (f"last trained for round {self.last_round[n]})" if n in self.last_round
               else "never ran)")
            for n in waiting[:5]
        )  # fmt: skip
        more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
        never = node_count - len(self.parked)
        return (
            f"{len(waiting)} clients wait for a model: {shown or 'none'}{more}; "
            f"{never} clients were never sent anything"
        )


def run_stats(outcome: RunOutcome) -> dict[str, Any]:
    """A run's stats as they travel to the server (``psgd.net.routing.RUN_FIELDS``)."""
    stats: dict[str, Any] = {
        "steps": outcome.steps,
        "samples": outcome.samples,
        "loss_sum": float(outcome.loss_sum),
        "bytes_sent": outcome.bytes_sent,
        "train_s": float(outcome.train_s),
    }
    if outcome.batch_losses:
        stats["losses"] = [float(v) for v in outcome.batch_losses]
    return stats
