"""What a running job shows: a live progress bar on a terminal, concise lines anywhere else.

The runner hands every event the nodes emit to ``open_progress(...)``'s display:

- ``{"type": "progress", "node", "epoch", "batch", "batches", "loss"[, "bytes_sent"]}``
  every few batches of a node;
- ``{"type": "epoch", "node", "epoch", "test_loss", "test_accuracy", "train_s",
  "bytes_sent"}`` after each evaluation of a node;
- ``{"type": "round", "round", "rounds", "clients", "train_loss", "bytes_up", "bytes_down",
  "wall_s"[, "accuracy", "loss", "client_accuracy_p10", "client_accuracy_worst"]}`` after each
  round of a round-based (federated) job (test figures on the rounds that were evaluated).

On a terminal (rich): one bar per job (epochs or rounds, batches, current loss and accuracy,
bytes sent, elapsed and remaining time), and one line per finished epoch (every node
evaluated) or round printed above it, so they stay in the scroll-back. Elsewhere (CI, logs,
``--detach``): the same epoch and round lines, and a line each time the slowest node passes a
quarter of an epoch.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

__all__ = ["JobProgress", "open_progress"]

_MB = 1e6


@dataclass
class _Counts:
    """What the events told so far."""

    done: dict[Any, int] = field(default_factory=dict)  # batches each node finished
    loss: dict[Any, float] = field(default_factory=dict)
    sent: dict[Any, float] = field(default_factory=dict)  # bytes each node sent so far
    evals: dict[int, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    accuracy: float = math.nan
    rounds: int = 0


class JobProgress:
    """Turns events into lines; ``LiveProgress`` adds a bar. Safe from any thread."""

    def __init__(self, epochs: int, batches: int, nodes: int, rounds: int | None = None) -> None:
        self.epochs, self.batches, self.nodes, self.rounds = epochs, batches, nodes, rounds
        self.start = time.perf_counter()
        self.counts = _Counts()
        self.lock = threading.Lock()
        self._quarter = -1  # the last quarter epoch a plain line was printed for
        #: Print a line each quarter epoch (off under a live bar, which shows the batches).
        self.batch_lines = True
        #: How many progress events per epoch a node should send (``progress_every``).
        self.updates_per_epoch = 4
        self._handlers: dict[str, Callable[[dict[str, Any]], str | None]] = {
            "progress": self._on_progress,
            "epoch": self._on_epoch,
            "round": self._on_round,
        }

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type") or ("round" if "round" in event else "")
        handler = self._handlers.get(kind)
        if handler is None:
            return
        with self.lock:
            line = handler(event)
            if line is not None:
                self.line(f"[{time.perf_counter() - self.start:7.1f}s] {line}")
            self.refresh()

    def line(self, text: str) -> None:
        """Print a line that stays (in the scroll-back, or the log)."""
        click.echo(text)

    def refresh(self) -> None:
        """Redraw whatever is live (nothing here)."""

    def close(self) -> None:
        """Stop the display; idempotent."""

    # -- events --------------------------------------------------------------------------

    def _on_progress(self, event: dict[str, Any]) -> str | None:
        counts, node = self.counts, event.get("node")
        counts.done[node] = (int(event["epoch"]) - 1) * self.batches + int(event["batch"])
        counts.loss[node] = float(event["loss"])
        if "bytes_sent" in event:
            counts.sent[node] = float(event["bytes_sent"])
        return self._quarter_line()

    def _quarter_line(self) -> str | None:
        if not self.batch_lines or len(self.counts.done) < self.nodes:
            return None
        slowest = min(self.counts.done.values())
        quarter = slowest * 4 // max(1, self.batches)
        if quarter <= self._quarter or slowest % self.batches == 0:
            return None  # an epoch's end is told by its epoch line
        self._quarter = quarter
        epoch, batch = divmod(slowest - 1, self.batches)
        return (
            f"epoch {epoch + 1}/{self.epochs}  batch {batch + 1}/{self.batches}  "
            f"loss {self.mean_loss():.4f}{self._sent_text()}"
        )

    def _on_epoch(self, event: dict[str, Any]) -> str | None:
        counts, epoch = self.counts, int(event["epoch"])
        rows = counts.evals.setdefault(epoch, {})
        rows[event.get("node")] = event
        node = event.get("node")
        counts.done[node] = max(counts.done.get(node, 0), epoch * self.batches)
        if "bytes_sent" in event:
            counts.sent[node] = float(event["bytes_sent"])
        if len(rows) < self.nodes:
            return None
        del counts.evals[epoch]
        accuracy = [float(r["test_accuracy"]) for r in rows.values()]
        loss = [float(r["test_loss"]) for r in rows.values()]
        counts.accuracy = sum(accuracy) / len(accuracy)
        low, high = min(accuracy), max(accuracy)
        spread = f" (nodes {low:.4f}-{high:.4f})" if high > low else ""
        return (
            f"epoch {epoch}/{self.epochs}  test accuracy {counts.accuracy:.4f}{spread}  "
            f"test loss {sum(loss) / len(loss):.4f}{self._sent_text()}"
        )

    def _on_round(self, event: dict[str, Any]) -> str | None:
        counts = self.counts
        counts.rounds = int(event["round"])
        self.rounds = int(event.get("rounds") or self.rounds or 0) or None
        if "train_loss" in event:
            counts.loss = {None: float(event["train_loss"])}
        line = f"round {counts.rounds}" + (f"/{self.rounds}" if self.rounds else "")
        if "clients" in event:
            line += f"  {event['clients']} clients"
        if "train_loss" in event:
            line += f"  train loss {float(event['train_loss']):.4f}"
        if "accuracy" in event:
            counts.accuracy = float(event["accuracy"])
            line += f"  test loss {float(event.get('loss', math.nan)):.4f}"
            line += f"  accuracy {counts.accuracy:.4f}"
        if "client_accuracy_p10" in event:
            line += (
                f" (clients: p10 {float(event['client_accuracy_p10']):.4f}, "
                f"worst {float(event.get('client_accuracy_worst', math.nan)):.4f})"
            )
        if "bytes_up" in event:
            counts.sent = {None: float(event["bytes_up"]) + counts.sent.get(None, 0.0)}
            up, down = float(event["bytes_up"]), float(event.get("bytes_down", 0))
            line += f"  up {up / _MB:.1f} MB down {down / _MB:.1f} MB"
        return line

    # -- figures ---------------------------------------------------------------------------

    def mean_loss(self) -> float:
        losses = list(self.counts.loss.values())
        return sum(losses) / len(losses) if losses else math.nan

    def sent_per_worker(self) -> float | None:
        sent = list(self.counts.sent.values())
        return sum(sent) / len(sent) if sent else None

    def _sent_text(self) -> str:
        sent = self.sent_per_worker()
        return "" if sent is None else f"  {sent / _MB:,.1f} MB sent per worker"


class LiveProgress(JobProgress):
    """``JobProgress`` with a rich progress bar below the lines."""

    def __init__(
        self, epochs: int, batches: int, nodes: int, rounds: int | None, console: Any
    ) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__(epochs, batches, nodes, rounds)
        self.batch_lines, self.updates_per_epoch = False, 25
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%  {task.fields[figures]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        total = rounds if rounds else epochs * batches * nodes
        self.task = self.bar.add_task("starting", total=total, figures="")
        self.bar.start()
        self._closed = False

    def line(self, text: str) -> None:
        self.bar.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def refresh(self) -> None:
        counts = self.counts
        if self.rounds:
            completed = counts.rounds
            where = f"round {counts.rounds}/{self.rounds}"
            self.bar.update(self.task, total=self.rounds)
        else:
            completed = sum(counts.done.values())
            slowest = min(counts.done.values()) if len(counts.done) >= self.nodes else 0
            epoch, batch = divmod(max(0, slowest - 1), self.batches) if slowest else (0, -1)
            where = f"epoch {epoch + 1}/{self.epochs} batch {batch + 1}/{self.batches}"
        figures = f"loss {self.mean_loss():.4f}"
        if not math.isnan(counts.accuracy):
            figures += f"  acc {counts.accuracy:.4f}"
        sent = self.sent_per_worker()
        if sent is not None:
            figures += f"  {sent / _MB:,.1f} " + ("MB up" if self.rounds else "MB/worker")
        self.bar.update(self.task, completed=completed, description=where, figures=figures)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.bar.stop()


def open_progress(
    epochs: int,
    batches: int,
    nodes: int,
    quiet: bool = False,
    rounds: int | None = None,
    live: bool | None = None,
) -> JobProgress:
    """The display for a job; call ``close()`` when it ends.

    ``live`` forces (or refuses) the progress bar; by default there is one when standard
    output is a terminal. ``quiet`` shows nothing.
    """
    if quiet:
        return _Silent(epochs, batches, nodes, rounds)
    if live is None:
        live = sys.stdout.isatty()
    if live:
        from rich.console import Console

        console = Console(file=sys.stdout, force_terminal=True)
        if not console.is_dumb_terminal:
            return LiveProgress(epochs, batches, nodes, rounds, console)
    return JobProgress(epochs, batches, nodes, rounds)


class _Silent(JobProgress):
    def __call__(self, event: dict[str, Any]) -> None:
        return None
