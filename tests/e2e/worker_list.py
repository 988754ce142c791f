"""Writing a worker.json for daemons a test started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_workers(path: Path, daemons: list[Any], ps: Any = None) -> Path:
    """A worker.json listing ``daemons`` (and ``ps`` as the PS entry); returns ``path``."""
    data: dict[str, Any] = {"Worker": [str(d.endpoint) for d in daemons]}
    if ps is not None:
        data["PS"] = str(ps.endpoint)
    path.write_text(json.dumps(data))
    return path
