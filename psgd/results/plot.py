"""Figures of runs, drawn with matplotlib (Agg, no display needed).

``plot_run`` draws one run's ``plot.png``: training loss per batch (epochs on a second axis),
test accuracy per epoch or round (and the server model's, when the job has one), and the same
accuracy against the bytes each worker sent and against the time spent (and, for a run on
emulated links or devices, against the virtual clock, a dotted line: the slowest worker's
training time per epoch, the round's end per round). ``plot_comparison`` overlays several
runs (``psgd compare``): accuracy against epochs or rounds, against bytes sent per worker,
against time.

matplotlib is imported when a figure is drawn, not with this module, and no pyplot state is
used: figures are plain ``matplotlib.figure.Figure`` objects, safe from any thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from psgd.results.records import atomic_write_bytes
from psgd.results.runs import Point, RunRecords

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["comparison_figure", "plot_comparison", "plot_run", "run_figure", "save_figure"]

#: More series than this in one panel: no legend entry each (the mean is still drawn).
LEGEND_MAX = 10
_MB = 1e6


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG, atomically (temporary file, then rename); returns ``path``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def _finite(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _line(ax: Axes, xs: Sequence[float], ys: Sequence[float], **style: Any) -> bool:
    """Draw the finite points of a series; markers when there are few. False if none."""
    xs, ys = _finite(xs, ys)
    if not xs:
        return False
    style.setdefault("marker", "o" if len(xs) <= 30 else None)
    style.setdefault("markersize", 3.5)
    ax.plot(xs, ys, **style)
    return True


def _finish(
    ax: Axes, title: str, xlabel: str, ylabel: str, drew: bool, legend: bool, whole_x: bool = False
) -> None:
    from matplotlib.ticker import MaxNLocator

    if title:
        ax.set_title(title, fontsize=10)
    if whole_x:  # epochs, rounds, batches
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if not drew:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    elif legend:
        ax.legend(fontsize=8)


def _node_style(index: int, count: int) -> dict[str, Any]:
    if count > LEGEND_MAX:
        return {"color": f"C{index % 10}", "linewidth": 0.6, "alpha": 0.5}
    return {"color": f"C{index % 10}", "linewidth": 1.2, "label": f"node {index}"}


def _loss_panel(ax: Axes, run: RunRecords) -> None:
    if run.rounds:
        rounds = [row.get("round", math.nan) for row in run.rounds]
        losses = [row.get("train_loss", math.nan) for row in run.rounds]
        drew = _line(ax, rounds, losses, color="C0", label="clients' training loss")
        _finish(ax, "", "round", "training loss", drew, legend=False, whole_x=True)
        return
    drew = False
    steps_per_epoch = 0
    for i, node in enumerate(run.nodes):
        losses = [row.get("loss", math.nan) for row in node.batches]
        steps = list(range(1, len(losses) + 1))
        style = {**_node_style(i, len(run.nodes)), "marker": None}
        drew |= _line(ax, steps, losses, **style)
        first = node.batches[0].get("epoch") if node.batches else None
        steps_per_epoch = steps_per_epoch or sum(1 for r in node.batches if r.get("epoch") == first)
    _finish(ax, "", "batch", "training loss", drew, len(run.nodes) <= LEGEND_MAX, whole_x=True)
    if drew and steps_per_epoch:
        per = float(steps_per_epoch)

        def to_epoch(step: Any) -> Any:
            return step / per

        def to_step(epoch: Any) -> Any:
            return epoch * per

        top = ax.secondary_xaxis("top", functions=(to_epoch, to_step))
        top.set_xlabel("epoch")


def _accuracy_panels(axes: Sequence[Axes], run: RunRecords) -> None:
    """Accuracy against epoch/round, MB sent per worker and time, per node and their mean."""
    unit = run.unit
    xs_of = {
        0: lambda p: p.step,
        1: lambda p: p.bytes_per_worker / _MB,
        2: lambda p: p.time_s,
    }
    sender = "worker" if unit == "epoch" else "client"
    xlabels = [
        unit,
        f"MB sent per {sender}",
        "training time (s)" if unit == "epoch" else "wall (s)",
    ]
    titles = [f"test accuracy per {unit}", "accuracy against bytes sent", "accuracy against time"]
    curves: list[tuple[dict[str, Any], list[Point]]] = []
    if run.rounds:
        curves.append(({"color": "black", "linewidth": 1.6, "label": "global model"},
                       run.progress()))  # fmt: skip
    else:
        for i, node in enumerate(run.nodes):
            points = [
                Point(int(r["epoch"]), r.get("test_accuracy", math.nan), math.nan,
                      r.get("bytes_sent", math.nan), r.get("train_s", math.nan))
                for r in node.evals
            ]  # fmt: skip
            curves.append((_node_style(i, len(run.nodes)), points))
        if len(run.nodes) > 1:
            style = {"color": "black", "linewidth": 1.8, "label": "mean", "linestyle": "--"}
            curves.append((style, run.progress()))
        if run.server:
            style = {"color": "black", "linewidth": 2.4, "label": "server model"}
            curves.append((style, run.server_progress()))
    for panel, ax in enumerate(axes):
        drew = False
        for style, points in curves:
            xs = [xs_of[panel](p) for p in points]
            drew |= _line(ax, xs, [p.accuracy for p in points], **style)
        virtual_xs, virtual_ys = _virtual_curve(run) if panel == 2 else ([], [])
        emulated = _line(ax, virtual_xs, virtual_ys, color="black", linestyle=":",
                         linewidth=1.8, label="virtual clock")  # fmt: skip
        legend = (
            panel == 0 and len(curves) > 1 and any("label" in s for s, _ in curves)
        ) or emulated
        _finish(ax, titles[panel], xlabels[panel], "test accuracy", drew, legend, panel == 0)


def _virtual_curve(run: RunRecords) -> tuple[list[float], list[float]]:
    """Accuracy against the virtual clock, if links or devices were emulated.

    Per round: the global model's accuracy against the round's virtual end. Per epoch: the
    workers' mean accuracy against the slowest worker's virtual training time.
    """
    if run.rounds:
        rows = [
            r for r in run.rounds
            if not math.isnan(r.get("virtual_s", math.nan))
            and not math.isnan(r.get("accuracy", math.nan))
        ]  # fmt: skip
        return [r["virtual_s"] for r in rows], [r["accuracy"] for r in rows]
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for node in run.nodes:
        for row in node.evals:
            if "virtual_train_s" in row:
                by_epoch.setdefault(int(row["epoch"]), []).append(row)
    epochs = sorted(by_epoch)
    xs = [max(float(r["virtual_train_s"]) for r in by_epoch[e]) for e in epochs]
    ys = [float(np.mean([float(r["test_accuracy"]) for r in by_epoch[e]])) for e in epochs]
    return xs, ys


def _log_if_wide(ax: Axes) -> None:
    """A log scale for an axis whose data spans more than two decades (compression vs not)."""
    xs = [x for line in ax.get_lines() for x in np.asarray(line.get_xdata(), float) if x > 0]
    if xs and max(xs) > 100 * min(xs):
        ax.set_xscale("log")
        ax.set_xlabel(f"{ax.get_xlabel()} (log scale)")


def run_figure(run: RunRecords) -> Figure:
    """The figure of one run (see the module docstring)."""
    figure = _figure(11, 7.5)
    axes = figure.subplots(2, 2)
    status = "" if run.completed else f" ({run.summary.get('status', '?')})"
    figure.suptitle(f"{run.name}: {run.codec}{status}", fontsize=11)
    _loss_panel(axes[0][0], run)
    _accuracy_panels([axes[0][1], axes[1][0], axes[1][1]], run)
    return figure


def plot_run(path: Path, run: RunRecords) -> Path:
    """Write the figure of ``run`` to ``path`` (``plot.png`` of its folder); returns ``path``."""
    return save_figure(run_figure(run), path)


def comparison_figure(runs: Sequence[RunRecords], labels: Sequence[str]) -> Figure:
    """Accuracy of several runs against epoch or round, bytes sent per worker, and time.

    When every run has a virtual clock (emulated links or devices), time is the virtual one.
    """
    units = {run.unit for run in runs}
    unit = units.pop() if len(units) == 1 else "epoch or round"
    figure = _figure(15, 4.8)
    axes = figure.subplots(1, 3)
    virtual = [_virtual_curve(run) for run in runs]
    emulated = all(xs for xs, _ in virtual)
    panels = [
        (f"test accuracy per {unit}", unit, lambda p: p.step),
        ("accuracy against bytes sent", "MB sent per worker", lambda p: p.bytes_per_worker / _MB),
        ("accuracy against time", "virtual clock (s)" if emulated else "time (s)",
         lambda p: p.time_s),
    ]  # fmt: skip
    for panel, (ax, (title, xlabel, x_of)) in enumerate(zip(axes, panels, strict=True)):
        drew = False
        for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
            points = run.progress()
            xs, ys = [x_of(p) for p in points], [p.accuracy for p in points]
            if panel == 2 and emulated:
                xs, ys = virtual[i]
            style = {"color": f"C{i % 10}", "linewidth": 1.4, "label": label}
            drew |= _line(ax, xs, ys, **style)
        _finish(ax, title, xlabel, "test accuracy", drew, legend=False, whole_x=panel == 0)
        if panel == 1:
            _log_if_wide(ax)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)),
                      fontsize=8)  # fmt: skip
    return figure


def plot_comparison(path: Path, runs: Sequence[RunRecords], labels: Sequence[str]) -> Path:
    """Write ``comparison_figure`` to ``path`` as a PNG; returns ``path``."""
    return save_figure(comparison_figure(runs, labels), path)
