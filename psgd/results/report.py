"""Build ``summary.json`` and the per-node records of a finished (or failed) job."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from psgd.job import JobSpec
from psgd.results.outcome import NodeReport, RunResult
from psgd.results.records import RunFolder

__all__ = ["build_round_summary", "build_summary", "write_records", "write_round_records"]


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

    With emulated links (``--simulate --link``), ``virtual_wall_s`` is the virtual time at which
    the last worker finished (evaluations included) and ``virtual_train_s`` the longest
    virtual training time of a worker (evaluations excluded, like ``train_s``).
    """
    bytes_sent: dict[str, int] = {str(r.node_id): r.bytes_sent for r in reports}
    if ps_bytes_sent is not None:
        bytes_sent["ps"] = ps_bytes_sent
    virtual = [r for r in reports if r.virtual_s is not None]
    clock = {} if not virtual else {
        "virtual_wall_s": round(max(r.virtual_s or 0.0 for r in virtual), 4),
        "virtual_train_s": round(max(r.virtual_train_s or 0.0 for r in virtual), 4),
    }  # fmt: skip
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
        **clock,
        "bytes_sent": bytes_sent,
        "nodes": [r.figures() for r in reports],
        "spec": spec.to_dict(),
    }


def build_round_summary(spec: JobSpec, result: RunResult, mode: str = "simulate") -> dict[str, Any]:
    """``summary.json`` of a round-based job: the last evaluated round's figures, totals.

    ``samples_per_s`` is client training throughput: samples trained over the summed
    training time of the client runs (so it does not depend on how many executors ran them).
    """
    rows = result.round_rows
    evaluated = [row for row in rows if "accuracy" in row]
    last = evaluated[-1] if evaluated else {}
    samples = sum(row["samples"] for row in rows)
    train_s = result.figures.get("train_s", 0.0)
    summary: dict[str, Any] = {
        "job_id": spec.job_id,
        "status": result.status,
        "error": result.error,
        "mode": mode,
        "accuracy": last.get("accuracy", float("nan")),
        "loss": last.get("loss", float("nan")),
        "rounds": len(rows),
        "evaluated_round": last.get("round"),
        "eval": "clients" if spec.eval == "clients" else "global",
        "samples_per_s": round(samples / train_s, 1) if train_s > 0 else 0.0,
        "samples": samples,
        "wall_s": round(result.wall_s, 3),
        "s_per_round": round(result.wall_s / len(rows), 4) if rows else None,
        "bytes_up": sum(row["bytes_up"] for row in rows),
        "bytes_down": sum(row["bytes_down"] for row in rows),
        "bytes_sent": {"clients": sum(row["bytes_up"] for row in rows), "ps": result.ps_bytes_sent},
        **{k: v for k, v in result.figures.items() if k != "train_s"},
        "spec": spec.to_dict(),
    }
    for key in ("client_accuracy_p10", "client_accuracy_worst"):
        if key in last:
            summary[key] = last[key]
    return summary


def write_records(folder: RunFolder, reports: Sequence[NodeReport]) -> None:
    """Per worker: ``train-node<i>.csv`` (per batch) and ``eval-node<i>.csv`` (per epoch)."""
    for report in reports:
        folder.write_csv(f"train-node{report.node_id}.csv", report.batch_rows)
        folder.write_csv(f"eval-node{report.node_id}.csv", report.epoch_rows)


def write_round_records(folder: RunFolder, result: RunResult) -> None:
    """``rounds.csv`` (one row per round) and, when asked, ``clients.csv`` (per client batch).

    The folder holds the same files whatever the number of clients.
    """
    columns: dict[str, None] = {}
    for row in result.round_rows:
        columns.update(dict.fromkeys(row))
    folder.write_csv(
        "rounds.csv", [{k: row.get(k, "") for k in columns} for row in result.round_rows]
    )
    if result.batch_rows:
        folder.write_csv("clients.csv", result.batch_rows)
