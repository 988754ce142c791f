"""The run folder: CSV records, ``summary.json``, written atomically and never overwritten."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psgd.errors import ConfigError

__all__ = ["RunFolder", "atomic_write_bytes", "atomic_write_text"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file and a rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


class RunFolder:
    """One job's output folder.

    Parameters
    ----------
    path:
        The folder; created if missing. A folder that already holds a ``summary.json`` is
        refused, so a finished run is never overwritten.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if (self.path / "summary.json").exists():
            raise ConfigError(
                f"--out {self.path}: already holds a finished run (summary.json); "
                "choose another folder"
            )
        self.path.mkdir(parents=True, exist_ok=True)

    def write_csv(self, name: str, rows: Sequence[dict[str, Any]]) -> Path:
        target = self.path / name
        atomic_write_text(target, _csv_text(rows))
        return target

    def write_json(self, name: str, data: Any) -> Path:
        target = self.path / name
        atomic_write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        atomic_write_text(target, text)
        return target

    def file(self, name: str) -> Path:
        return self.path / name
