"""Real run folders for the tests of plots, comparisons and progress: tiny MNIST jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psgd.cluster.runner import Target, run_job
from psgd.job import JobSpec

TINY = {"train_samples": 1200, "test_samples": 200, "epochs": 3, "batch_size": 100}


def make_run(folder: Path, **options: Any) -> Path:
    """Run a tiny in-process job into ``folder`` (quietly) and return the folder."""
    run_job(JobSpec(**{**TINY, **options}), folder, quiet=True, target=Target(simulate=True))
    return folder
