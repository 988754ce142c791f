"""Run a round-based federated job in this process: the scheduler, executors, evaluation.

A round is the server's aggregation step. Each round's global model (the server codecs'
results) is evaluated where FL evaluates it: by default once on the test set (``--eval
global``); with ``--eval clients`` every client's own model (the global model with the
client's personal state, e.g. FedEM's mixture weights) on the client's held-out split, reported
as the distribution over clients (mean, 10th percentile, worst). ``--eval-every N`` evaluates
every N rounds (and always the last); ``--target-accuracy A`` ends the job at the first
evaluated round at or above A.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from psgd.codec import Parameter_Server
from psgd.errors import Diverged, PsgdError
from psgd.nn.blas import blas_threads
from psgd.results.outcome import RunResult
from psgd.settings import GlobalSettings
from psgd.train.evaluation import Evaluator
from psgd.train.executors import default_executor_count, make_executors
from psgd.train.node import ClientRunner
from psgd.train.prepare import PreparedJob
from psgd.train.round_clock import EmulatedScheduler
from psgd.train.scheduler import Scheduler
from psgd.train.server_side import RoundStats
from psgd.train.shm import job_prefix, remove_stale
from psgd.train.vclock import build_clock

__all__ = ["DEFAULT_ROUNDS", "RoundRecorder", "is_round_job", "round_result", "run_rounds"]

_log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]

#: Rounds a round-based job runs when ``--rounds`` is not given.
DEFAULT_ROUNDS = 10


def is_round_job(job: PreparedJob) -> bool:
    """True when the clients' codecs wait for a model (round-based federated codecs)."""
    return any(getattr(cls, "waits_for_model", False) for cls in job.codec_classes)


class RoundRecorder:
    """Turns each finished round into a record; evaluates on a thread, in round order.

    Evaluating the global model takes as long as several clients' training: it runs on a
    thread of its own (numpy releases the GIL), so the scheduler hands out the next round's
    clients meanwhile. Rows are completed, emitted and checked against the target in order.
    """

    def __init__(self, job: PreparedJob, rounds: int, emit: Emit) -> None:
        self.job, self.rounds, self.emit = job, rounds, emit
        self.spec = job.spec
        self.evaluate = Evaluator(job, job.build_model())
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="psgd-eval")
        self.waiting: deque[tuple[dict[str, Any], Future[dict[str, float]] | None, Any]] = deque()
        self.rows: list[dict[str, Any]] = []
        self.batch_rows: list[dict[str, Any]] = []
        self.model: list[np.ndarray] = job.initial_weights
        self.target_round: int | None = None
        self.train_s = 0.0
        self.start = time.perf_counter()
        #: Each client's personal state as of a round (``ClientHost.personal_at``).
        self.personal: Callable[[int], dict[int, Any]] = lambda round_no: {}
        #: Evaluates elsewhere (a round job's pools on daemons): ``(round, model)`` -> future.
        self.remote: Callable[[int, list[np.ndarray]], Future[dict[str, float]]] | None = None

    def start_clock(self) -> None:
        """The rounds start now (daemons: once they are told to start; wall times from here)."""
        self.start = time.perf_counter()

    def __call__(self, stats: RoundStats, model: list[np.ndarray]) -> bool:
        """Record round ``stats`` with global ``model``; True once the job should stop."""
        _check_finite(stats, model)
        last = stats.round_no >= self.rounds
        row: dict[str, Any] = {
            "round": stats.round_no,
            "clients": len(stats.clients),
            "samples": stats.samples,
            "train_loss": round(stats.train_loss, 6),
            "bytes_up": stats.bytes_up,
            "bytes_down": stats.bytes_down,
            "wall_s": round(time.perf_counter() - self.start, 4),
        }
        if stats.virtual_s is not None:  # emulated links and devices: the virtual clock
            row["virtual_s"] = round(stats.virtual_s, 4)
        self.train_s += stats.train_s
        self.batch_rows.extend(stats.batch_rows)
        evaluation = None
        if last or stats.round_no % self.spec.eval_every == 0:
            if self.remote is not None:
                evaluation = self.remote(stats.round_no, model)
            else:
                personal = self.personal(stats.round_no)
                evaluation = self.pool.submit(self.evaluate, model, personal)
        self.waiting.append((row, evaluation, model))
        return self.complete(wait=last and self.remote is None)

    def complete(self, wait: bool) -> bool:
        """Record the rounds whose evaluation is done (all, if ``wait``); True at the target."""
        while self.waiting:
            row, evaluation, model = self.waiting[0]
            if evaluation is not None and not (wait or evaluation.done()):
                return False
            self.waiting.popleft()
            if evaluation is not None:
                row.update({k: round(v, 6) for k, v in evaluation.result().items()})
            self.rows.append(row)
            self.model = model
            self.emit({"type": "round", "rounds": self.rounds, **row})
            target = self.spec.target_accuracy
            if target is not None and row.get("accuracy", 0.0) >= target:
                self.target_round = row["round"]
                self.waiting.clear()  # later rounds ran while this one was evaluated
                return True
        return False

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _check_finite(stats: RoundStats, model: list[np.ndarray]) -> None:
    """A round whose training loss or global model is not finite ends the job ``diverged``."""
    if stats.steps and not np.isfinite(stats.train_loss):  # no steps: no loss, not nan
        raise Diverged(
            f"round {stats.round_no} diverged: the clients' training loss is {stats.train_loss} "
            f"(clients {sorted(stats.clients)[:10]})"
        )
    for layer, value in enumerate(model):
        if not np.isfinite(value).all():
            raise Diverged(
                f"node {Parameter_Server} (the server) diverged: layer {layer} of the global "
                f"model became non-finite (nan or inf) in round {stats.round_no}"
            )


def run_rounds(job: PreparedJob, emit: Emit | None = None) -> RunResult:
    """Run ``job`` round by round; never raises for the job's own failure (see ``error``)."""
    spec = job.spec
    rounds = spec.rounds or DEFAULT_ROUNDS
    GlobalSettings.set_default(job.settings)
    data = job.dataset
    clients = job.client_train_indices()
    count = default_executor_count() if spec.executors is None else spec.executors

    def make_runner() -> ClientRunner:
        return ClientRunner(
            job.build_model(), data.x_train, data.y_train, clients, spec.batch_size,
            spec.optimizer, spec.learn_rate, spec.seed, spec.job_id, spec.batch_records,
            (data.x_test, data.y_test), spec.dropout,
        )  # fmt: skip

    record = RoundRecorder(job, rounds, emit or (lambda event: None))
    nodes = [*range(spec.node_count), Parameter_Server]
    clock = build_clock(spec.links, spec.device_speed, nodes, spec.seed, spec.shared_cores)
    error, diverged = None, False
    scheduler: Scheduler | None = None
    remove_stale()  # files of earlier jobs that were killed
    prefix = job_prefix()
    with blas_threads(1):
        executors = make_executors(count, make_runner, prefix)
        try:
            args = (
                spec.job_id, spec.node_count, job.codec_classes, job.ps_classes or [],
                job.initial_weights, executors, record, rounds, prefix,
            )  # fmt: skip
            if clock is None:
                scheduler = Scheduler(*args, deadline=spec.round_deadline is not None)
            else:
                scheduler = EmulatedScheduler(*args, clock=clock, deadline_s=spec.round_deadline)
            record.personal = scheduler.personal_at
            if executors.shared and spec.eval != "clients":  # evaluated on every core
                scheduler.test_rows = len(data.y_test)
                record.remote = scheduler.evaluate_on_executors
                scheduler.on_evaluated = lambda: record.complete(wait=False)
            scheduler.run()
            scheduler.finish_evaluations()
            record.complete(wait=True)
        except PsgdError as exc:
            error, diverged = str(exc), isinstance(exc, Diverged)
            _log.error("%s", error)
        finally:
            executors.close()  # first: queued runs may still read the messages released next
            if scheduler is not None:
                scheduler.release_all()
            record.close()
    result = round_result(
        record, error, diverged,
        ps_bytes_sent=scheduler.server.bytes_sent if scheduler is not None else 0,
        clients_trained=len(scheduler.trained) if scheduler is not None else 0,
        executors=count,
    )  # fmt: skip
    if clock is not None:  # the options, not every client's draw: the folder stays O(1)
        result.emulated = {
            "links": list(spec.links),
            "device_speed": list(spec.device_speed),
            "shared_cores": spec.shared_cores,
        }
        virtual = [row["virtual_s"] for row in record.rows if "virtual_s" in row]
        result.figures["virtual_wall_s"] = virtual[-1] if virtual else None
    return result


def round_result(
    record: RoundRecorder,
    error: str | None,
    diverged: bool,
    ps_bytes_sent: int,
    clients_trained: int,
    executors: int,
    logs: dict[int, str] | None = None,
    end: float | None = None,
) -> RunResult:
    """The result of a round job ``record`` followed (in-process or on daemons).

    Its wall time runs from ``record.start`` to ``end`` (a ``perf_counter`` reading; now if
    ``None``).
    """
    wall = (time.perf_counter() if end is None else end) - record.start
    return RunResult(
        reports=[],
        ps_bytes_sent=ps_bytes_sent,
        wall_s=wall,
        error=error,
        weights={Parameter_Server: list(record.model)},
        logs=logs or {},
        round_rows=record.rows,
        batch_rows=record.batch_rows,
        diverged=diverged,
        figures={
            "rounds": len(record.rows),
            "target_accuracy": record.spec.target_accuracy,
            "target_round": record.target_round,
            "executors": executors,
            "clients_trained": clients_trained,
            "train_s": record.train_s,
        },
    )
