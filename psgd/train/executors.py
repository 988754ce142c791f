"""Executors: where virtual clients' compute runs, in this process or in worker processes.

At batch size 10 one Python process is bound by the GIL, so ``ProcessExecutors`` forks one
process per core after the job is prepared: they share the parent's dataset pages
(copy-on-write, never written, so the data is held once) and its loaded codec modules. A
task is a pickled ``ClientState`` (codec instances travel with their client); the answer is
a pickled ``RunOutcome``. ``InlineExecutors`` runs clients in the calling thread, for
``--executors 0``, platforms without ``fork``, and daemons.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from psgd.errors import CodecError, PsgdError
from psgd.train.node import ClientRunner, ClientState, EvalOutcome, EvalTask, RunOutcome
from psgd.train.shm import put_messages, read_frames, remove_all

__all__ = [
    "Executors",
    "InlineExecutors",
    "ProcessExecutors",
    "Task",
    "default_executor_count",
    "make_executors",
]

_log = logging.getLogger(__name__)

#: How long ``close`` waits for an executor process to exit before killing it.
EXECUTOR_EXIT_S = 5.0


def default_executor_count() -> int:
    """One executor per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: One client to run: its state, the round it trains for, and the packages sent to it since
#: its last run (encoded frames, or ``SharedFrames`` for process executors).
Task = tuple[ClientState, int, list[Any]]

#: What an executor is given at once: clients to run, or one evaluation.
Work = list[Task] | list[EvalTask]

#: What it answers: one outcome per client run, or the evaluation's.
Outcomes = list[RunOutcome | EvalOutcome]


class Executors(Protocol):
    """Runs clients: ``submit`` a batch of tasks to executor ``index``, ``wait`` for them.

    ``shared`` executors read messages from shared memory (``psgd.train.shm``).
    """

    count: int
    shared: bool

    def submit(self, index: int, tasks: Work) -> None: ...

    def wait(self, timeout_s: float | None) -> list[tuple[int, Outcomes]]: ...

    def fds(self) -> list[int]:
        """File descriptors that become readable when a submitted task is done."""
        ...

    def close(self) -> None: ...


class InlineExecutors:
    """One executor: runs each submitted client at once, in this thread."""

    count = 1
    shared = False

    def __init__(self, make_runner: Callable[[], ClientRunner]) -> None:
        self.runner = make_runner()
        self._done: list[tuple[int, Outcomes]] = []

    def submit(self, index: int, tasks: Work) -> None:
        self._done.append((index, run_work(self.runner, tasks)))

    def wait(self, timeout_s: float | None) -> list[tuple[int, Outcomes]]:
        done, self._done = self._done, []
        return done

    def fds(self) -> list[int]:
        return []  # tasks are done when submit returns

    def close(self) -> None:
        return None


def _serve(
    tasks: Connection,
    outcomes_pipe: Connection,
    make_runner: Callable[[], ClientRunner],
    prefix: str,
) -> None:
    """An executor process: run the clients it is sent until told to stop.

    A reader thread takes tasks off the pipe as they come, so the scheduler can queue the next
    client while this one trains and never blocks on a full pipe. BLAS keeps the one thread
    the parent limited it to before forking (threadpoolctl is not called again here:
    re-initialising BLAS thread pools in a forked child can hang).
    """
    queued: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                queued.put(pickle.loads(tasks.recv_bytes()))
            except (EOFError, OSError):  # the scheduler is gone
                queued.put(None)
                return

    threading.Thread(target=read, name="psgd-executor-reader", daemon=True).start()
    runner = make_runner()
    while True:
        task = queued.get()
        if task is None:
            return
        try:
            outcomes = _run_task(runner, task, prefix)
        except Exception as exc:  # shared memory went away or filled up: fail these runs
            outcomes = [RunOutcome(t[0], t[1], error=f"executor: {exc!r}") if isinstance(t, tuple)
                        else EvalOutcome(t.round_no, t.start, error=f"executor: {exc!r}")
                        for t in task]  # fmt: skip
        try:
            answer = pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            for outcome in outcomes:
                if isinstance(outcome, RunOutcome):
                    outcome.error = outcome.error or _pickle_error(outcome)
                    outcome.state.codecs = []
            answer = pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            outcomes_pipe.send_bytes(answer)
        except OSError:
            return


def run_work(runner: ClientRunner, work: Work) -> Outcomes:
    """Run clients (their packages stay in memory), or an evaluation."""
    outcomes: Outcomes = []
    for task in work:
        outcomes.append(runner.evaluate(task) if isinstance(task, EvalTask) else runner.run(*task))
    return outcomes


def _run_task(runner: ClientRunner, task: Work, prefix: str) -> Outcomes:
    """Run a task's clients; their packages go out in one shared memory file."""
    if task and isinstance(task[0], EvalTask):
        return run_work(runner, task)
    outcomes: Outcomes = []
    copies: dict[Any, list[memoryview]] = {}  # a broadcast is read once per task
    for state, round_no, messages in _clients(task):
        for ref in messages:
            if ref not in copies:
                copies[ref] = read_frames(ref)
        outcomes.append(runner.run(state, round_no, [copies[ref] for ref in messages]))
    runs = [outcome for outcome in outcomes if isinstance(outcome, RunOutcome)]
    sent = [frames for outcome in runs for _, frames in outcome.messages]
    refs = iter(put_messages(sent, prefix) if sent else [])
    for outcome in runs:
        outcome.messages = [(targets, next(refs)) for targets, _ in outcome.messages]
    return outcomes


def _clients(work: Work) -> list[Task]:
    return [task for task in work if isinstance(task, tuple)]


def _pickle_error(outcome: RunOutcome) -> str | None:
    try:
        pickle.dumps(outcome.state)
    except Exception as exc:
        return f"node {outcome.state.node_id}: its codecs cannot be pickled: {exc}"
    return None


class ProcessExecutors:
    """``count`` forked executor processes, a task pipe and an outcome pipe each.

    Messages travel through shared memory segments named ``<prefix>-...``.
    """

    shared = True

    def __init__(
        self, count: int, make_runner: Callable[[], ClientRunner], prefix: str = "psgd"
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.count = count
        self.prefix = prefix
        self._tasks: list[Connection] = []
        self._outcomes: list[Connection] = []
        self._procs: list[Any] = []
        self._busy = [0] * count
        for index in range(count):
            task_read, task_write = context.Pipe(duplex=False)
            outcome_read, outcome_write = context.Pipe(duplex=False)
            proc = context.Process(
                target=_serve, args=(task_read, outcome_write, make_runner, prefix),
                name=f"psgd-executor-{index}", daemon=True,
            )  # fmt: skip
            proc.start()
            task_read.close()
            outcome_write.close()
            self._tasks.append(task_write)
            self._outcomes.append(outcome_read)
            self._procs.append(proc)

    def submit(self, index: int, tasks: Work) -> None:
        try:
            task = pickle.dumps(tasks, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            for state, _, _ in _clients(tasks):
                try:
                    pickle.dumps(state)
                except Exception as exc:
                    names = sorted({type(c).__name__ for c in state.codecs})
                    raise CodecError(
                        f"node {state.node_id}: codecs {names} cannot be pickled ({exc}); a "
                        "virtual client's codecs move between executor processes: keep locks, "
                        "files and threads out of codec attributes, or run with --executors 0"
                    ) from None
            raise
        try:
            self._tasks[index].send_bytes(task)
        except OSError:
            raise self._died(index) from None
        self._busy[index] += 1

    def wait(self, timeout_s: float | None) -> list[tuple[int, Outcomes]]:
        waiting = [self._outcomes[i] for i, busy in enumerate(self._busy) if busy]
        if not waiting:
            return []
        done = []
        for conn in wait(waiting, timeout_s):
            index = self._outcomes.index(conn)  # type: ignore[arg-type]
            try:
                outcome = pickle.loads(self._outcomes[index].recv_bytes())
            except (EOFError, OSError):
                raise self._died(index) from None
            self._busy[index] -= 1
            done.append((index, outcome))
        return done

    def fds(self) -> list[int]:
        pairs = zip(self._outcomes, self._busy, strict=True)
        return [conn.fileno() for conn, busy in pairs if busy]

    def _died(self, index: int) -> PsgdError:
        self._procs[index].join(1.0)
        code = self._procs[index].exitcode
        return PsgdError(f"executor process {index} died (exit code {code})")

    def close(self) -> None:
        """Stop the processes: idle ones are told to, busy ones (work nobody needs) killed."""
        for conn, proc, busy in zip(self._tasks, self._procs, self._busy, strict=True):
            if busy:
                proc.kill()
                continue
            with contextlib.suppress(OSError):
                conn.send_bytes(pickle.dumps(None))
        for proc in self._procs:
            proc.join(EXECUTOR_EXIT_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._tasks + self._outcomes:
            conn.close()
        remove_all(self.prefix)


def make_executors(
    count: int, make_runner: Callable[[], ClientRunner], prefix: str = "psgd"
) -> Executors:
    """``count`` process executors, or one inline executor for 0 (or without ``fork``)."""
    if count == 0 or "fork" not in multiprocessing.get_all_start_methods():
        return InlineExecutors(make_runner)
    return ProcessExecutors(count, make_runner, prefix)
