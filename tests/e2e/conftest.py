"""Real psgd-worker daemons on loopback (OS-chosen ports), killed in teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from entry_points import WORKER

from psgd.cluster.local import DaemonProcess, start_daemon


@pytest.fixture
def spawn_daemons(tmp_path: Path) -> Iterator[Callable[[int], list[DaemonProcess]]]:
    """``spawn_daemons(n)`` starts n real psgd-worker processes; all are stopped afterwards."""
    started: list[DaemonProcess] = []

    def spawn(count: int) -> list[DaemonProcess]:
        fresh = [start_daemon(tmp_path / "daemon-logs", command=WORKER) for _ in range(count)]
        started.extend(fresh)
        return fresh

    yield spawn
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
        daemon.process.wait()
