"""Read a run folder back: its summary and per-node records, as curves to plot and compare.

A run folder (see ``records.RunFolder``) holds ``summary.json``, ``train-node<i>.csv`` (one row
per batch) and ``eval-node<i>.csv`` (one row per evaluation, i.e. per epoch); a round-based run
writes ``rounds.csv`` instead (one row per round: ``round``, ``clients``, ``train_loss``,
``bytes_up``, ``bytes_down``, ``wall_s``, and ``accuracy``/``loss`` on the rounds that were
evaluated). A job whose server keeps the model (PS, EASGD) adds ``server_eval.csv``: the
server model's ``test_loss`` and ``test_accuracy`` per ``epoch`` (``psgd.train.server_model``).
``load_run`` reads them; ``RunRecords.progress`` gives the test figures
against epochs or rounds, with the bytes each worker had sent and the time spent by then.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psgd.errors import ConfigError

__all__ = ["NodeRecords", "Point", "RunRecords", "load_run"]

_NODE_FILE = re.compile(r"(train|eval)-node(\d+)\.csv$")


@dataclass(frozen=True)
class Point:
    """The run's test figures after one epoch or round.

    ``step`` is the epoch (or round) number; ``accuracy``/``loss`` the mean over the workers
    evaluated then (a round's: the global model's); ``bytes_per_worker`` what a worker (a
    client, in a round job) had sent by then, on average;
    ``time_s`` the time spent by then (the slowest worker's training time, or the round's
    wall time).
    """

    step: int
    accuracy: float
    loss: float
    bytes_per_worker: float
    time_s: float


@dataclass
class NodeRecords:
    """One worker's rows: ``batches`` from ``train-node<i>.csv``, ``evals`` from ``eval-...``."""

    node: int
    batches: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)


@dataclass
class RunRecords:
    """A finished (or failed) run as read from its folder."""

    path: Path
    summary: dict[str, Any]
    nodes: list[NodeRecords]
    rounds: list[dict[str, float]] = field(default_factory=list)
    #: The server model's rows (``server_eval.csv``), when the job has one.
    server: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def unit(self) -> str:
        """``"round"`` for a round-based run, else ``"epoch"``."""
        return "round" if self.rounds else "epoch"

    @property
    def codec(self) -> str:
        """The codec as given on the command line, with the PS codec after a ``+``."""
        spec = self.summary.get("spec") or {}
        codec = spec.get("codec", "?")
        codec = codec if isinstance(codec, str) else ",".join(f"{k}={v}" for k, v in codec.items())
        return f"{codec} + {spec['ps_codec']}" if spec.get("ps_codec") else codec

    @property
    def completed(self) -> bool:
        return self.summary.get("status") == "completed"

    @property
    def accuracy(self) -> float:
        return float(self.summary.get("accuracy", math.nan))

    @property
    def wall_s(self) -> float:
        return float(self.summary.get("wall_s", math.nan))

    def clients(self) -> int:
        return max(1, int((self.summary.get("spec") or {}).get("node_count") or 1))

    def bytes_per_worker(self) -> float:
        """Bytes each worker sent in the whole run (mean over workers; the PS left out)."""
        if self.rounds:
            return sum(_zero_nan(r.get("bytes_up", 0.0)) for r in self.rounds) / self.clients()
        sent = [v for k, v in (self.summary.get("bytes_sent") or {}).items() if k != "ps"]
        return sum(sent) / len(sent) if sent else math.nan

    def server_bytes(self) -> float | None:
        """Bytes the parameter server sent, or None without one."""
        value = (self.summary.get("bytes_sent") or {}).get("ps")
        return None if value is None else float(value)

    def progress(self) -> list[Point]:
        """Test figures after each epoch (mean over workers) or each round."""
        if self.rounds:
            points, up = [], 0.0
            for r in self.rounds:
                up += _zero_nan(r.get("bytes_up", 0.0))
                if math.isnan(r.get("accuracy", math.nan)):
                    continue  # not evaluated
                loss, wall = r.get("loss", math.nan), r.get("wall_s", math.nan)
                points.append(
                    Point(int(r["round"]), r["accuracy"], loss, up / self.clients(), wall)
                )
            return points
        by_step: dict[int, list[dict[str, float]]] = {}
        for node in self.nodes:
            for row in node.evals:
                by_step.setdefault(int(row["epoch"]), []).append(row)
        return [
            Point(
                step,
                _mean([r.get("test_accuracy", math.nan) for r in rows]),
                _mean([r.get("test_loss", math.nan) for r in rows]),
                _mean([r.get("bytes_sent", math.nan) for r in rows]),
                max(r.get("train_s", math.nan) for r in rows),
            )
            for step, rows in sorted(by_step.items())
        ]

    def server_progress(self) -> list[Point]:
        """The server model's figures per epoch, with the workers' bytes and time by then."""
        workers = {p.step: p for p in self.progress()}
        points = []
        for row in self.server:
            epoch = int(row["epoch"])
            at = workers.get(epoch)
            sent, spent = (at.bytes_per_worker, at.time_s) if at else (math.nan, math.nan)
            accuracy, loss = row.get("test_accuracy", math.nan), row.get("test_loss", math.nan)
            points.append(Point(epoch, float(accuracy), float(loss), sent, spent))
        return points

    def steps_to(self, target: float) -> int | None:
        """The first epoch (or round) whose accuracy reached ``target``, or None."""
        return next((p.step for p in self.progress() if p.accuracy >= target), None)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _zero_nan(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _read_csv(path: Path) -> list[dict[str, float]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc


def load_run(path: Path) -> RunRecords:
    """Read the run folder ``path``.

    Raises
    ------
    ConfigError
        If ``path`` is not a run folder (no ``summary.json``) or a record cannot be read;
        the message names the file.
    """
    path = Path(path)
    summary_path = path / "summary.json"
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run folder")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no summary.json (not a run folder, or the run has not finished)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{summary_path}: cannot read ({exc})") from exc
    if not isinstance(summary, dict):
        raise ConfigError(f"{summary_path}: expected a JSON object")
    nodes: dict[int, NodeRecords] = {}
    for csv_path in sorted(path.glob("*-node*.csv")):
        match = _NODE_FILE.match(csv_path.name)
        if match:
            node = nodes.setdefault(int(match[2]), NodeRecords(int(match[2])))
            rows = _read_csv(csv_path)
            if match[1] == "train":
                node.batches = rows
            else:
                node.evals = rows
    rounds = _read_csv(path / "rounds.csv") if (path / "rounds.csv").is_file() else []
    server = path / "server_eval.csv"
    server_rows = _read_csv(server) if server.is_file() else []
    return RunRecords(path, summary, [nodes[n] for n in sorted(nodes)], rounds, server_rows)
