"""Build ``summary.json`` and the per-node records of a finished (or failed) job."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from psgd.job import JobSpec
from psgd.results.outcome import NodeReport, RunResult
from psgd.results.records import RunFolder

__all__ = ["RunResult", "build_summary", "write_records"]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def build_summary(
    spec: JobSpec,
    reports: Sequence[NodeReport],
    wall_s: float,
    ps_bytes_sent: int | None = None,
    error: str | None = None,
    mode: str = "simulate",
    diverged: bool = False,
) -> dict[str, Any]:
    """The content of ``summary.json``.

    ``status`` is ``completed``, ``failed``, or ``diverged`` (a node's loss or weights became
    non-finite; ``error`` names the node and round): a run is completed only without an error.

    ``accuracy``/``loss`` are the mean final test figures over workers (the PS excluded);
    ``samples_per_s`` is the aggregate training throughput (each worker's samples over its
    own training time, excluding data loading and evaluation, summed over workers).
    """
    bytes_sent: dict[str, int] = {str(r.node_id): r.bytes_sent for r in reports}
    if ps_bytes_sent is not None:
        bytes_sent["ps"] = ps_bytes_sent
    return {
        "job_id": spec.job_id,
        "status": ("diverged" if diverged else "failed") if error else "completed",
        "error": error,
        "mode": mode,
        "accuracy": _mean([r.accuracy for r in reports]),
        "loss": _mean([r.loss for r in reports]),
        "epochs": spec.epochs,
        "samples_per_s": round(sum(r.samples_per_s for r in reports), 1),
        "wall_s": round(wall_s, 3),
        "bytes_sent": bytes_sent,
        "nodes": [r.figures() for r in reports],
        "spec": spec.to_dict(),
    }


def write_records(folder: RunFolder, reports: Sequence[NodeReport]) -> None:
    """Per worker: ``train-node<i>.csv`` (per batch) and ``eval-node<i>.csv`` (per epoch)."""
    for report in reports:
        folder.write_csv(f"train-node{report.node_id}.csv", report.batch_rows)
        folder.write_csv(f"eval-node{report.node_id}.csv", report.epoch_rows)
