"""The in-process round scheduler: routes packages, hosts the parameter server, counts rounds.

It knows everything of an in-process federated job, so it needs no timeouts:

- Clients are hosted as on a daemon's pool (``psgd.train.hosting``): parked until sent a
  package, then run on the executors.
- The parameter server (``psgd.train.server_side``) lives here. Each time all of its layer
  codecs hold a result, that is the new global model: one *round* is complete.
- When no client runs, none is runnable and no package is in flight, nothing can ever happen
  again: the job fails at once with a ``Deadlock`` naming who waits for what.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from psgd.codec import Codec, Parameter_Server
from psgd.errors import CodecError, PsgdError
from psgd.net import protocol, wire
from psgd.train.evaluation import EVAL_CHUNK, combine_chunks
from psgd.train.executors import Executors
from psgd.train.hosting import ClientHost, run_stats
from psgd.train.node import EvalOutcome, EvalTask, RunOutcome
from psgd.train.server_side import RoundStats, ServerSide

__all__ = ["Deadlock", "RoundStats", "Scheduler"]

_log = logging.getLogger(__name__)


class Deadlock(PsgdError):
    """No client can run, none runs and nothing is in flight, before the job's end."""


class Scheduler(ClientHost):
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
    deadline:
        ``--round-deadline``: when nothing can run, the round's deadline has passed (every
        client that can answer has answered) and the server codecs are told so.
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
        deadline: bool = False,
    ) -> None:
        super().__init__(client_classes, executors, segment_prefix)
        self.deadline = deadline
        self.job_id = job_id
        self.node_count = node_count
        self.on_round = on_round
        self.in_flight: deque[tuple[int, list[int], list[Any], int]] = deque()
        self.server = ServerSide(job_id, server_classes, initial_weights, max_rounds)
        self._post_server_sends()
        self.test_rows = 0  # rows of the test set the executors hold (``evaluate_on_executors``)
        #: Called when an evaluation on the executors completes; True ends the job.
        self.on_evaluated: Callable[[], bool] = lambda: False
        self._evaluations: dict[int, tuple[Future[dict[str, float]], dict[int, Any], int]] = {}

    @property
    def rounds_done(self) -> int:
        return self.server.rounds_done

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Route, run and count rounds until ``on_round`` stops the job; raises on failure."""
        while True:
            self._route()
            self.stopped = self.stopped or self.server.stopped
            self.dispatch()
            for stats, model in self.server.take_finished():  # evaluated while clients train
                if self.on_round(stats, model):
                    self.stopped = True
            if self.stopped:
                return
            if not self.running and not self._evaluations:
                if self.deadline and not self.runnable and self.server.deadline():
                    self._post_server_sends()
                    continue
                raise Deadlock(self._deadlock_report())
            self.collect(None)  # a pending evaluation may still reach the target

    def evaluate_on_executors(
        self, round_no: int, model: list[np.ndarray]
    ) -> Future[dict[str, float]]:
        """Evaluate ``model`` on the test set, split over the executors; its figures, later."""
        future: Future[dict[str, float]] = Future()
        chunks = math.ceil(self.test_rows / EVAL_CHUNK)
        per = math.ceil(chunks / self.executors.count) * EVAL_CHUNK
        starts = range(0, self.test_rows, per)
        self._evaluations[round_no] = (future, {}, len(starts))
        for executor, start in enumerate(starts):
            task = EvalTask(round_no, model, start, min(start + per, self.test_rows))
            self._busy[executor] += 1
            self.executors.submit(executor, [task])
        return future

    def evaluated(self, outcome: EvalOutcome) -> None:
        if outcome.error:
            raise PsgdError(outcome.error)
        future, parts, expected = self._evaluations[outcome.round_no]
        parts[outcome.start] = outcome.parts
        if len(parts) < expected:
            return
        del self._evaluations[outcome.round_no]
        ordered = [part for start in sorted(parts) for part in parts[start]]
        future.set_result(combine_chunks(ordered, self.test_rows))
        if self.on_evaluated():
            self.stopped = True

    def finish_evaluations(self) -> None:
        """Wait for the evaluations still on the executors (the job's rounds are over)."""
        while self._evaluations:
            self.collect(None)

    def post(self, sender: int, targets: list[int], frames: list[Any], size: int) -> None:
        """Queue a message sent by ``sender`` (``size``: its bytes on the wire, all targets)."""
        for target in targets:
            if target != Parameter_Server and not 0 <= target < self.node_count:
                raise CodecError(
                    f"node {sender}: netEncapsulation target {target} is not a node of this job "
                    f"(clients 0..{self.node_count - 1} and Parameter_Server)"
                )
        self.in_flight.append((sender, targets, frames, size))

    def round_for(self, node: int) -> int:
        return self.server.rounds_done + 1

    def count_run(self, outcome: RunOutcome) -> None:
        run = run_stats(outcome)
        self.server.add_run(outcome.round_no, outcome.state.node_id, run, outcome.batch_losses)

    # ------------------------------------------------------------------ routing

    def _route(self) -> None:
        while self.in_flight:
            _, targets, frames, _ = self.in_flight.popleft()
            clients = [t for t in targets if t != Parameter_Server]
            if len(clients) < len(targets):
                message = protocol.parse(frames, protocol.PEER_TYPES)
                self.server.deliver(message, wire.frames_size(frames))
                self._post_server_sends()
            if clients:
                self.enqueue(clients, frames)

    def _post_server_sends(self) -> None:
        for targets, frames, _ in self.server.take_sends():
            self.post(Parameter_Server, targets, frames, wire.frames_size(frames) * len(targets))

    # ------------------------------------------------------------------ reports

    def _deadlock_report(self) -> str:
        hint = ""
        if self.deadline:
            hint = (
                " (--round-deadline passed: the server codecs define no round_deadline, or "
                "theirs published no model)"
            )
        return (
            f"deadlock after round {self.rounds_done}: no client can run and no package is in "
            f"flight. The parameter server's layers {self.server.waiting_layers()} wait for "
            f"updates to finish round {self.rounds_done + 1}; "
            + self.waiting_report(self.node_count)
            + hint
        )
