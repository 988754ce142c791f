"""Soak: 50 short jobs back to back on the same two worker.py daemons, every 5th failing on
purpose; each daemon's open file descriptors, threads and memory stay flat.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from entry_points import WORKER

from psgd.cluster.local import DaemonProcess, start_daemon
from psgd.cluster.probe import wait_idle
from psgd.cluster.submit import Submitter
from psgd.errors import JobFailed
from psgd.job import JobSpec
from psgd.train.prepare import prepare_job

pytestmark = pytest.mark.timeout(180)

JOBS, WARM_UP, FAIL_EVERY = 50, 5, 5
SMALL = {"node_count": 2, "train_samples": 400, "test_samples": 100, "epochs": 1}
#: Slack over the warmed-up figures. Descriptors and threads of a daemon between jobs are a
#: fixed set (control socket, ZeroMQ's threads and their pipes), so the bound is +2 for
#: connections still closing when sampled. Memory: a job ships ~1.5 MB to each daemon
#: (model, data, test set), so keeping every job would add ~70 MB over 45 jobs; 30 MB (or
#: 15 %) leaves room for allocator noise and first-time imports of the later failure paths.
FD_SLACK, THREAD_SLACK = 2, 2
RSS_SLACK_KB, RSS_SLACK_RATIO = 30_000, 0.15

CODECS = textwrap.dedent(
    """
    import os
    import sys

    from psgd import Codec, GlobalSettings, netEncapsulation

    if sys.argv[1:2] == ["--port"] and "worker" in os.path.basename(sys.argv[0]) and WORKER_ONLY:
        import a_module_only_the_submitter_has  # noqa: F401


    class Explodes(Codec):
        def dispose(self):
            pass

        def update_blocks(self, block_weight):
            others = GlobalSettings.get_default().get_adversary(block_weight.block_id)
            self.set_result(block_weight.content)
            return netEncapsulation(others, 1)

        def receive_blocks(self, content):
            raise ZeroDivisionError("boom on the worker")
    """
)


@dataclass(frozen=True)
class Figures:
    """What a daemon holds: open descriptors, threads, resident memory (kB)."""

    fds: int
    threads: int
    rss_kb: int

    def __str__(self) -> str:
        return f"fds {self.fds:3d}  threads {self.threads:2d}  RSS {self.rss_kb / 1000:6.1f} MB"


def figures_of(pid: int, samples: int = 5) -> Figures:
    """Fewest descriptors and threads over a few samples (a closing connection is not a leak)."""
    fds, threads, rss = [], [], 0
    for _ in range(samples):
        fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        threads.append(int(status["Threads"]))
        rss = int(status["VmRSS"].split()[0])
        time.sleep(0.05)
    return Figures(min(fds), min(threads), rss)


@pytest.fixture
def daemon_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The daemons' TMPDIR, so their work folders (``psgd-worker-*``) are visible to the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


@pytest.fixture
def daemons(tmp_path: Path, daemon_tmp: Path) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    try:
        for _ in range(2):
            started.append(start_daemon(tmp_path / "logs", command=WORKER))
        yield started
    finally:
        for daemon in started:
            daemon.stop(timeout_s=10)


@pytest.fixture
def codec_files(tmp_path: Path) -> dict[str, str]:
    """Codec names of the failures: one raising in receive_blocks, one the worker cannot load."""
    folder = tmp_path / "codecs"
    folder.mkdir()
    (folder / "explodes.py").write_text(CODECS.replace("WORKER_ONLY", "False"))
    (folder / "missing_on_worker.py").write_text(CODECS.replace("WORKER_ONLY", "True"))
    return {
        "codec raises": f"{folder / 'explodes.py'}:Explodes",
        "codec missing on the worker": f"{folder / 'missing_on_worker.py'}:Explodes",
    }


def abort_on_first_progress(event: dict[str, Any]) -> None:
    raise JobFailed("soak: aborted on purpose")


FAILURES = ("codec raises", "codec missing on the worker", "submitter aborts")
EXPECTED_ERROR = {
    "codec raises": "ZeroDivisionError: boom on the worker",
    "codec missing on the worker": "a_module_only_the_submitter_has",
    "submitter aborts": "soak: aborted on purpose",
}


def run_job(index: int, daemons: list[DaemonProcess], codecs: dict[str, str]) -> str:
    """Run job ``index`` (every FAIL_EVERY-th fails on purpose); returns what it was."""
    failing = (index + 1) % FAIL_EVERY == 0
    kind = FAILURES[(index // FAIL_EVERY) % len(FAILURES)] if failing else "normal"
    job = prepare_job(JobSpec(codec=codecs.get(kind, "plain.Plain"), seed=index, **SMALL))
    emit = None
    if kind == "submitter aborts":
        job.trainer_config.progress_every = 1
        emit = abort_on_first_progress
    result = Submitter(job, [d.endpoint for d in daemons], emit=emit).run()
    if kind == "normal":
        assert result.error is None, f"job {index}: {result.error}"
        assert [r.batches for r in result.reports] == [job.trainer_config.steps_per_epoch] * 2
    else:
        assert result.error is not None and EXPECTED_ERROR[kind] in result.error, (
            f"job {index} ({kind}): {result.error}"
        )
    for daemon in daemons:
        assert wait_idle(daemon.endpoint) == "idle", f"after job {index} ({kind})"
    return kind


def test_fifty_back_to_back_jobs_keep_fds_threads_and_memory_flat(daemons, codec_files, daemon_tmp):
    started = time.monotonic()
    kinds: dict[str, int] = {}
    warm: list[Figures] = []
    for index in range(JOBS):
        kind = run_job(index, daemons, codec_files)
        kinds[kind] = kinds.get(kind, 0) + 1
        if index == WARM_UP - 1:
            warm = [figures_of(d.process.pid) for d in daemons]
    end = [figures_of(d.process.pid) for d in daemons]

    print(f"\n{JOBS} jobs in {time.monotonic() - started:.1f} s: {kinds}")
    for node, (before, after) in enumerate(zip(warm, end, strict=True)):
        print(f"daemon {node} after job {WARM_UP}: {before}")
        print(f"daemon {node} after job {JOBS}: {after}")
    assert kinds["normal"] == JOBS - JOBS // FAIL_EVERY
    for daemon, before, after in zip(daemons, warm, end, strict=True):
        assert daemon.process.poll() is None
        assert after.fds <= before.fds + FD_SLACK, (before, after)
        assert after.threads <= before.threads + THREAD_SLACK, (before, after)
        rss_bound = before.rss_kb + max(RSS_SLACK_KB, RSS_SLACK_RATIO * before.rss_kb)
        assert after.rss_kb <= rss_bound, (before, after)
    assert not list(daemon_tmp.glob("psgd-worker-*/job-*")), "a job folder was left behind"
    failing = JOBS // FAIL_EVERY
    missing = kinds["codec missing on the worker"]
    rejections = 0
    for daemon in daemons:  # each job ended on each daemon the way it was meant to
        log = (daemon.log / f"worker-{daemon.endpoint.port}.log").read_text()
        outcomes = Counter(re.findall(r"over \((\w+)\); idle", log))
        rejected = len(
            re.findall(r"rejected job #\d+: job \S+ node \d: cannot load the codec", log)
        )
        # Daemons prepare a job in parallel: once one rejects it, the submitter aborts it on
        # the others, which may still be loading the codec.
        dropped = log.count("aborted while it was being prepared")
        print(f"daemon {daemon.endpoint}: {dict(outcomes)}, rejected {rejected}, "
              f"aborted while preparing {dropped}")  # fmt: skip
        assert outcomes["completed"] == JOBS - failing
        assert rejected + dropped == missing
        assert outcomes["failed"] + outcomes["aborted"] == failing - missing
        rejections += rejected
    assert rejections >= missing  # every such job was rejected, naming the codec's error
