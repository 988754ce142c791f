"""``--local N``: start worker daemons on loopback for one job, stop them afterwards.

The daemons die with the submitter that started them, however it ends: it stops them on exit
(Ctrl-C and SIGTERM included), and each daemon also stops on its own once that submitter is
gone (SIGKILL included): Linux sends it SIGTERM (``PR_SET_PDEATHSIG``), and everywhere it
notices that its parent changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

from psgd.cluster.workers import Endpoint
from psgd.errors import PsgdError
from psgd.nn.blas import BLAS_ENV_VARS

__all__ = ["LocalCluster", "die_with_parent", "start_daemon", "wait_for_endpoint"]

_ADDRESS = re.compile(r"listening on tcp://(?P<host>\[[^\]]+\]|[^\s\[\]]+):(?P<port>\d+)")
START_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the parent process dies (Linux; elsewhere a no-op).

    Returns False if ``parent_pid`` is no longer this process's parent (it died already).
    The daemon also watches its parent pid (``Daemon(parent_pid=...)``), on every system.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the parent-pid watch still stops the daemon
    return os.getppid() == parent_pid


class DaemonProcess:
    """A ``worker.py --port 0`` child process and the endpoint it printed."""

    def __init__(self, process: subprocess.Popen[str], endpoint: Endpoint, log: Path) -> None:
        self.process = process
        self.endpoint = endpoint
        self.log = log

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_daemon(
    log_dir: Path,
    host: str = "127.0.0.1",
    extra: list[str] | None = None,
    command: list[str] | None = None,
) -> DaemonProcess:
    """Start one daemon on an OS-chosen port and wait until it says where it listens.

    ``command`` replaces ``python -m psgd.cli.submit worker`` (e.g. ``[python, "worker.py"]``).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for name in BLAS_ENV_VARS:
        env[name] = "1"  # one BLAS thread per daemon: several share this host's cores
    base = command or [sys.executable, "-m", "psgd.cli", "worker"]
    command = [*base, "--port", "0", "--bind", host, "--log-dir", str(log_dir), *(extra or [])]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    return DaemonProcess(process, wait_for_endpoint(process), log_dir)


def wait_for_endpoint(process: subprocess.Popen[str]) -> Endpoint:
    """Where a ``--port 0`` daemon started as ``process`` says it listens.

    Its output (stdout, text) keeps being drained afterwards, so the daemon never blocks on a
    full pipe. Raises ``PsgdError`` when it exits first or says nothing within
    ``START_TIMEOUT_S``.
    """
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            process.kill()
            raise PsgdError(f"worker did not start within {START_TIMEOUT_S:g} s") from None
        if line is None:
            raise PsgdError("worker exited at start-up:\n" + "".join(seen[-20:]))
        seen.append(line)
        match = _ADDRESS.search(line)
        if match:
            return Endpoint(match["host"].strip("[]"), int(match["port"]))


class LocalCluster:
    """N worker daemons (and optionally one for the PS) on loopback, as a context manager."""

    def __init__(
        self, workers: int, with_ps: bool, log_dir: Path, keys: Path | None = None
    ) -> None:
        self.extra = ["--parent-pid", str(os.getpid())]
        self.extra += ["--keys", str(keys)] if keys else []
        self.count = workers
        self.with_ps = with_ps
        self.log_dir = log_dir
        self.daemons: list[DaemonProcess] = []
        self.ps: DaemonProcess | None = None

    def __enter__(self) -> LocalCluster:
        try:
            for _ in range(self.count):
                self.daemons.append(start_daemon(self.log_dir, extra=self.extra))
            if self.with_ps:
                self.ps = start_daemon(self.log_dir, extra=self.extra)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def workers(self) -> list[Endpoint]:
        return [d.endpoint for d in self.daemons]

    @property
    def ps_endpoint(self) -> Endpoint | None:
        return self.ps.endpoint if self.ps else None

    def stop(self) -> None:
        for daemon in [*self.daemons, *([self.ps] if self.ps else [])]:
            daemon.stop()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
