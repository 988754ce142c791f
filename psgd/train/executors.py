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
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from psgd.errors import CodecError, PsgdError
from psgd.train.node import ClientRunner, ClientState, RunOutcome

__all__ = ["Executors", "InlineExecutors", "ProcessExecutors", "default_executor_count"]

_log = logging.getLogger(__name__)

#: How long ``close`` waits for an executor process to exit before killing it.
EXECUTOR_EXIT_S = 5.0


def default_executor_count() -> int:
    """One executor per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Executors(Protocol):
    """Runs clients: ``submit`` a client to executor ``index``, ``wait`` for outcomes."""

    count: int

    def submit(self, index: int, state: ClientState, round_no: int) -> None: ...

    def wait(self, timeout_s: float | None) -> list[tuple[int, RunOutcome]]: ...

    def close(self) -> None: ...


class InlineExecutors:
    """One executor: runs each submitted client at once, in this thread."""

    count = 1

    def __init__(self, make_runner: Callable[[], ClientRunner]) -> None:
        self.runner = make_runner()
        self._done: list[tuple[int, RunOutcome]] = []

    def submit(self, index: int, state: ClientState, round_no: int) -> None:
        self._done.append((index, self.runner.run(state, round_no)))

    def wait(self, timeout_s: float | None) -> list[tuple[int, RunOutcome]]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        return None


def _serve(conn: Connection, make_runner: Callable[[], ClientRunner]) -> None:
    """An executor process: run the clients it is sent until told to stop.

    BLAS keeps the one thread the parent limited it to before forking (threadpoolctl is
    not called again here: re-initialising BLAS thread pools in a forked child can hang).
    """
    runner = make_runner()
    while True:
        try:
            task = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the scheduler is gone
            return
        if task is None:
            return
        state, round_no = task
        outcome = runner.run(state, round_no)
        try:
            answer = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            outcome.state.codecs = []
            outcome.error = f"node {state.node_id}: its codecs cannot be pickled: {exc}"
            answer = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        conn.send_bytes(answer)


class ProcessExecutors:
    """``count`` forked executor processes, one pipe each."""

    def __init__(self, count: int, make_runner: Callable[[], ClientRunner]) -> None:
        context = multiprocessing.get_context("fork")
        self.count = count
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._busy = [0] * count
        for index in range(count):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_serve, args=(child, make_runner), name=f"psgd-executor-{index}",
                daemon=True,
            )  # fmt: skip
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def submit(self, index: int, state: ClientState, round_no: int) -> None:
        try:
            task = pickle.dumps((state, round_no), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            names = sorted({type(c).__name__ for c in state.codecs})
            raise CodecError(
                f"node {state.node_id}: codecs {names} cannot be pickled ({exc}); a virtual "
                "client's codecs move between executor processes: keep locks, files and "
                "threads out of codec attributes, or run with --executors 0"
            ) from None
        self._conns[index].send_bytes(task)
        self._busy[index] += 1

    def wait(self, timeout_s: float | None) -> list[tuple[int, RunOutcome]]:
        waiting = [conn for conn, busy in zip(self._conns, self._busy, strict=True) if busy]
        if not waiting:
            return []
        done = []
        for conn in wait(waiting, timeout_s):
            index = self._conns.index(conn)  # type: ignore[arg-type]
            try:
                outcome = pickle.loads(conn.recv_bytes())  # type: ignore[union-attr]
            except (EOFError, OSError):
                code = self._procs[index].exitcode
                raise PsgdError(f"executor process {index} died (exit code {code})") from None
            self._busy[index] -= 1
            done.append((index, outcome))
        return done

    def close(self) -> None:
        """Stop the processes: idle ones are told to, busy ones (work nobody needs) killed."""
        for conn, proc, busy in zip(self._conns, self._procs, self._busy, strict=True):
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
        for conn in self._conns:
            conn.close()


def make_executors(count: int, make_runner: Callable[[], ClientRunner]) -> Executors:
    """``count`` process executors, or one inline executor for 0 (or without ``fork``)."""
    if count == 0 or "fork" not in multiprocessing.get_all_start_methods():
        return InlineExecutors(make_runner)
    return ProcessExecutors(count, make_runner)
