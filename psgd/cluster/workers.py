"""``worker.json``: where the daemons are, as Parallel-SGD users write it.

``{"PS": "host[:port]", "Worker": ["host[:port]", ...]}``; ``PS`` is optional and the port
defaults to 15387. Several workers on one host are told apart by port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psgd.errors import ConfigError
from psgd.net.transport import tcp_address

__all__ = ["DEFAULT_PORT", "Endpoint", "WorkerList", "load_workers", "parse_endpoint"]

DEFAULT_PORT = 15387


@dataclass(frozen=True)
class Endpoint:
    """A daemon's host and control port."""

    host: str
    port: int

    @property
    def address(self) -> str:
        return tcp_address(self.host, self.port)

    def __str__(self) -> str:
        """``host:port``, ``[v6]:port`` for IPv6 (as worker.json writes it)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class WorkerList:
    """The parameter server (optional) and the workers, in node order."""

    ps: Endpoint | None
    workers: list[Endpoint]


def parse_endpoint(value: Any, where: str) -> Endpoint:
    """``host`` or ``host:port`` (``[v6]:port`` for IPv6); errors name ``where``."""
    expected = f'{where}: expected "host" or "host:port", got {value!r}'
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(expected)
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(expected)
    if not port_text:
        return Endpoint(host, DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{where}: port must be 1..65535, got {port_text!r} in {value!r}")
    return Endpoint(host, int(port_text))


def load_workers(path: Path) -> WorkerList:
    """Read and check a worker.json; every error names the field and the bad value."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give --workers or use --local N)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected an object like {{"Worker": ["host:port"]}}')
    unknown = sorted(set(data) - {"PS", "Worker"})
    if unknown:
        raise ConfigError(f"{path}: unknown fields {unknown}; expected PS and Worker")
    workers = data.get("Worker")
    if not isinstance(workers, list) or not workers:
        raise ConfigError(f"{path}: Worker: expected a non-empty list of hosts, got {workers!r}")
    endpoints = [parse_endpoint(w, f"{path}: Worker[{i}]") for i, w in enumerate(workers)]
    ps = parse_endpoint(data["PS"], f"{path}: PS") if data.get("PS") is not None else None
    seen: dict[Endpoint, str] = {}
    for name, endpoint in [("PS", ps), *((f"Worker[{i}]", e) for i, e in enumerate(endpoints))]:
        if endpoint is None:
            continue
        if endpoint in seen:
            raise ConfigError(f"{path}: {name}: {endpoint} is listed twice (also {seen[endpoint]})")
        seen[endpoint] = name
    return WorkerList(ps, endpoints)
