"""``--detach`` and ``retrieve``: leave a running job and fetch its results later.

A detached job is driven by a background submitter process (its own session, so it survives
the terminal) that writes its progress to ``submitter.log`` in the run folder and the results
there at the end. ``retrieve RUN_DIR`` follows that log until the results are in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from psgd.errors import ConfigError
from psgd.results.records import RunFolder, atomic_write_text

__all__ = ["DETACHED_FILE", "SUBMITTER_LOG", "detach", "retrieve"]

DETACHED_FILE = "detached.json"
SUBMITTER_LOG = "submitter.log"
_FOLLOW_POLL_S = 0.2


def detach(argv: list[str], out: Path, job_id: str) -> int:
    """Start the background submitter for ``argv`` (the options without --detach); its pid."""
    folder = RunFolder(out)
    command = [sys.executable, "-m", "psgd.cli", "submit", *argv, "--out", str(out),
               "--job-id", job_id]  # fmt: skip
    with open(folder.file(SUBMITTER_LOG), "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    record = {"pid": process.pid, "job_id": job_id, "started": time.time(), "command": command}
    atomic_write_text(folder.file(DETACHED_FILE), json.dumps(record, indent=2) + "\n")
    return process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child of ours that nobody reaped yet is a zombie: not alive
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _state(run_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    summary_path, detached_path = run_dir / "summary.json", run_dir / DETACHED_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    detached = json.loads(detached_path.read_text()) if detached_path.exists() else None
    return summary, detached


def retrieve(run_dir: Path, wait: bool, echo: Any) -> dict[str, Any] | None:
    """Follow a detached job's progress (when ``wait``) and return its summary, or None.

    Raises ``ConfigError`` when ``run_dir`` is no run folder or its submitter died without
    results.
    """
    summary, detached = _state(run_dir)
    if summary is not None:
        return summary
    if detached is None:
        raise ConfigError(f"{run_dir}: no run here (no summary.json and no {DETACHED_FILE})")
    log = run_dir / SUBMITTER_LOG
    offset = 0
    while True:
        if log.exists():
            with open(log, encoding="utf-8", errors="replace") as handle:
                handle.seek(offset)
                text = handle.read()
                offset = handle.tell()
            if text:
                echo(text.rstrip("\n"))
        summary, _ = _state(run_dir)
        if summary is not None:
            return summary
        if not _alive(int(detached["pid"])):
            summary, _ = _state(run_dir)
            if summary is not None:
                return summary
            raise ConfigError(
                f"{run_dir}: the detached submitter (pid {detached['pid']}) ended without "
                f"results; see {log}"
            )
        if not wait:
            return None
        time.sleep(_FOLLOW_POLL_S)
