"""Compare runs the way papers do: one table row per run, as markdown or CSV.

Each row: the run's label and codec, its final test accuracy, the epochs (or rounds) it ran and,
given a target, the first epoch (or round) whose accuracy reached it, the bytes each worker
sent (and the parameter server, where there is one), and the wall time (and the virtual
clock's, for runs on emulated links or devices). ``psgd compare`` prints
these beside a figure of the runs (``plot.plot_comparison``); ``bench/results.py`` builds the
tables of ``docs/`` with them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psgd.errors import ConfigError
from psgd.results.runs import RunRecords, load_run

__all__ = [
    "CSV_COLUMNS",
    "Row",
    "compare_rows",
    "csv_table",
    "default_labels",
    "find_runs",
    "markdown_table",
]


#: The columns of ``csv_table``: raw numbers (bytes, seconds), empty where unknown.
CSV_COLUMNS = ["label", "run", "codec", "status", "accuracy", "unit", "steps", "target",
               "steps_to_target", "bytes_per_worker", "server_bytes", "wall_s",
               "server_accuracy", "virtual_wall_s"]  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One run in a comparison."""

    label: str
    run: str
    codec: str
    status: str
    accuracy: float
    unit: str
    steps: int
    steps_to_target: int | None
    bytes_per_worker: float
    server_bytes: float | None
    wall_s: float
    #: The server's model's test accuracy (PS and EASGD jobs whose server keeps it).
    server_accuracy: float | None = None
    #: The virtual clock's wall time (``--simulate`` with ``--link``/``--device-speed``/...).
    virtual_wall_s: float | None = None


def find_runs(paths: Sequence[Path]) -> list[RunRecords]:
    """Load each run folder; a folder holding run folders (``runs/``) stands for all of them.

    Raises ``ConfigError`` naming a folder that is neither.
    """
    runs: list[RunRecords] = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "summary.json").exists():
            inner = sorted(p for p in path.iterdir() if (p / "summary.json").is_file())
            if inner:
                runs += [load_run(p) for p in inner]
                continue
        runs.append(load_run(path))
    if not runs:
        raise ConfigError("no run folders given")
    return runs


def default_labels(runs: Sequence[RunRecords]) -> list[str]:
    """Each run's codec; the run folder's name is added where two runs share a codec."""
    codecs = [run.codec for run in runs]
    return [
        f"{run.codec} ({run.name})" if codecs.count(run.codec) > 1 else run.codec for run in runs
    ]


def compare_rows(
    runs: Sequence[RunRecords], labels: Sequence[str] | None = None, target: float | None = None
) -> list[Row]:
    """One ``Row`` per run, in the order given."""
    labels = list(labels) if labels is not None else default_labels(runs)
    if len(labels) != len(runs):
        raise ConfigError(f"{len(labels)} labels for {len(runs)} runs")
    rows = []
    for run, label in zip(runs, labels, strict=True):
        progress = run.progress()
        rows.append(
            Row(
                label=label,
                run=str(run.path),
                codec=run.codec,
                status=str(run.summary.get("status", "?")),
                accuracy=run.accuracy,
                unit=run.unit,
                steps=progress[-1].step if progress else 0,
                steps_to_target=None if target is None else run.steps_to(target),
                bytes_per_worker=run.bytes_per_worker(),
                server_bytes=run.server_bytes(),
                wall_s=run.wall_s,
                server_accuracy=_figure(run.summary.get("server_accuracy")),
                virtual_wall_s=_figure(run.summary.get("virtual_wall_s")),
            )
        )
    return rows


def _unit_header(rows: Sequence[Row]) -> str:
    units = {row.unit for row in rows}
    return f"{units.pop()}s" if len(units) == 1 else "epochs/rounds"


def _mb(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value / 1e6:,.1f}"


def markdown_table(rows: Sequence[Row], target: float | None = None) -> str:
    """The rows as a markdown table (MB = 10^6 bytes); failed runs say so.

    The codec gets a column of its own only where some label is not the codec's name.
    """
    unit = _unit_header(rows)
    with_server = any(row.server_bytes is not None for row in rows)
    with_codec = any(row.label != row.codec for row in rows)
    with_model = any(row.server_accuracy is not None for row in rows)
    with_virtual = any(row.virtual_wall_s is not None for row in rows)
    header = ["run"] + (["codec"] if with_codec else []) + ["accuracy"]
    header += (["server model"] if with_model else []) + [unit]
    if target is not None:
        header.append(f"{unit} to {target:g}")
    header += ["MB per worker"] + (["MB from server"] if with_server else []) + ["wall s"]
    header += ["virtual wall s"] if with_virtual else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        accuracy = f"{row.accuracy:.4f}" if math.isfinite(row.accuracy) else "-"
        if row.status != "completed":
            accuracy = f"{row.status}" if accuracy == "-" else f"{accuracy} ({row.status})"
        codec = [f"`{row.codec}`"] if with_codec else []
        model = row.server_accuracy
        server = ([f"{model:.4f}" if model is not None else "-"]) if with_model else []
        cells = [row.label, *codec, accuracy, *server, str(row.steps)]
        if target is not None:
            reached = row.steps_to_target
            cells.append(str(reached) if reached is not None else f"not in {row.steps}")
        cells.append(_mb(row.bytes_per_worker))
        if with_server:
            cells.append(_mb(row.server_bytes))
        cells.append(f"{row.wall_s:.1f}" if math.isfinite(row.wall_s) else "-")
        if with_virtual:
            virtual = row.virtual_wall_s
            cells.append(f"{virtual:.2f}" if virtual is not None else "-")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def csv_table(rows: Sequence[Row], target: float | None = None) -> str:
    """The rows as CSV with raw numbers (bytes, seconds); empty cells for missing figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.label, row.run, row.codec, row.status, _raw(row.accuracy), row.unit,
                row.steps, "" if target is None else target,
                "" if row.steps_to_target is None else row.steps_to_target,
                _raw(row.bytes_per_worker), _raw(row.server_bytes), _raw(row.wall_s),
                _raw(row.server_accuracy), _raw(row.virtual_wall_s),
            ]
        )  # fmt: skip
    return buffer.getvalue()


def _figure(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def _raw(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"
