"""Emulated links and device speeds as typed: ``--link 1=10mbit,50ms``, ``--device-speed``.

Pure parsing and resolution (no clock, no numpy): ``JobSpec`` checks the options with it,
``psgd.train.vclock`` turns the result into a virtual clock, and ``bench/netlab.py`` reads the
same rate and delay syntax for ``tc``.

``--link`` (repeatable): ``BANDWIDTH[,LATENCY]`` for every link, or ``NODE=BANDWIDTH[,LATENCY]``
for one node's link (``ps=...`` for the parameter server's). Bandwidth is in bits per second
with tc's suffixes ``bit``, ``kbit``, ``mbit``, ``gbit`` (``100mbit``), or ``inf``; latency is
one-way, ``us``, ``ms`` or ``s`` (``50ms``). A node's link is its own connection to a switch:
a message from A to B crosses A's link up and B's link down.

``--device-speed`` (repeatable): a factor on measured compute time (0.2: five times slower
than this machine): ``FACTOR`` for every worker, ``NODE=FACTOR`` for one node (``ps=`` too), or
a distribution the workers' factors are drawn from with the job's seed:
``stragglers:FRACTION,FACTOR`` (that share of the workers runs at FACTOR, the rest at 1),
``uniform:LOW,HIGH``, ``lognormal:SIGMA`` (``exp(N(0, SIGMA))``). Per-node entries win.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from psgd.errors import ConfigError

__all__ = [
    "DISTRIBUTIONS",
    "PS_KEY",
    "TCP_PAYLOAD_SHARE",
    "Link",
    "check_device_speeds",
    "check_links",
    "parse_duration",
    "parse_link",
    "parse_rate",
    "resolve_device_speeds",
    "resolve_links",
]

#: How the parameter server is named in ``NODE=...`` items.
PS_KEY = "ps"
#: Distributions ``--device-speed`` draws worker speeds from.
DISTRIBUTIONS = ("stragglers", "uniform", "lognormal")

#: Share of the bytes on a shaped Ethernet link that are TCP payload: 1448 of 1514 per full
#: frame (IPv4 20 + TCP 20 + timestamps 12 + Ethernet 14 bytes of headers).
TCP_PAYLOAD_SHARE = 1448 / 1514

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"


@dataclass(frozen=True)
class Link:
    """One node's link to the switch: bandwidth (bit/s, ``inf`` for unlimited), one-way latency."""

    rate_bit_s: float = math.inf
    latency_s: float = 0.0

    def __str__(self) -> str:
        rate = "inf" if math.isinf(self.rate_bit_s) else f"{self.rate_bit_s / 1e6:g}mbit"
        return f"{rate},{self.latency_s * 1e3:g}ms"


def parse_rate(text: str, option: str = "--link") -> float:
    """``100mbit`` -> 1e8 (bits per second); ``inf`` -> infinity. Bytes (``bps``) are refused."""
    raw = text.strip().lower()
    if raw in ("inf", "unlimited"):
        return math.inf
    match = re.fullmatch(rf"({_NUMBER})\s*([kmg]?bit)", raw)
    if match is None:
        hint = " (tc's 'bps' means bytes/s: write mbit)" if raw.endswith("bps") else ""
        raise ConfigError(
            f"{option}: bandwidth {text!r}: expected a number with bit, kbit, mbit or gbit "
            f"(e.g. 100mbit), or inf{hint}"
        )
    value = float(match.group(1)) * _RATE_UNITS[match.group(3)]
    if not value > 0:
        raise ConfigError(f"{option}: bandwidth {text!r} must be > 0")
    return value


def parse_duration(text: str, option: str = "--link") -> float:
    """``50ms`` -> 0.05 (seconds); units ``us``, ``ms``, ``s``."""
    match = re.fullmatch(rf"({_NUMBER})\s*(us|ms|s)", text.strip().lower())
    if match is None:
        raise ConfigError(f"{option}: latency {text!r}: expected a number with us, ms or s (50ms)")
    return float(match.group(1)) * _TIME_UNITS[match.group(3)]


def parse_link(text: str, option: str = "--link") -> Link:
    """``BANDWIDTH[,LATENCY]`` -> ``Link``."""
    rate, _, latency = text.partition(",")
    return Link(
        parse_rate(rate, option), parse_duration(latency, option) if latency.strip() else 0.0
    )


def _split_node(item: str, option: str, node_ids: Sequence[int] | None) -> tuple[int | None, str]:
    """``"2=..."`` -> (2, "..."); ``"ps=..."`` -> (-2, ...); a bare value -> (None, value)."""
    head, sep, rest = item.partition("=")
    if not sep:
        return None, item
    key = head.strip().lower()
    if key == PS_KEY:
        node = -2  # psgd.codec.Parameter_Server (not imported: the contract stays flat)
    else:
        try:
            node = int(key)
        except ValueError:
            raise ConfigError(
                f"{option} {item!r}: expected NODE=... with a node number or '{PS_KEY}'"
            ) from None
    if node_ids is not None and node not in node_ids:
        shown = [PS_KEY if n == -2 else n for n in node_ids]
        raise ConfigError(f"{option} {item!r}: no node {head.strip()} in this job ({shown})")
    return node, rest


def resolve_links(items: Sequence[str], node_ids: Sequence[int]) -> dict[int, Link]:
    """Every node's ``Link``: the last bare item for all, ``NODE=`` items for one; else inf."""
    default = Link()
    own: dict[int, Link] = {}
    for item in items:
        node, value = _split_node(item, "--link", node_ids)
        if node is None:
            default = parse_link(value)
        else:
            own[node] = parse_link(value)
    return {node: own.get(node, default) for node in node_ids}


def check_links(items: Sequence[str]) -> None:
    """Raise ``ConfigError`` for the first malformed ``--link`` item (node ids not checked)."""
    for item in items:
        parse_link(_split_node(item, "--link", None)[1])


def _factor(text: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"--device-speed {item!r}: expected a factor > 0, got {text!r}")
    return value


def _number(text: str, item: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--device-speed {item!r}: {text!r} is not a number") from None


def _distribution(item: str) -> tuple[str, list[float]]:
    name, _, args = item.partition(":")
    name = name.strip().lower()
    if name not in DISTRIBUTIONS:
        raise ConfigError(
            f"--device-speed {item!r}: unknown distribution {name!r}; expected one of "
            f"{', '.join(DISTRIBUTIONS)}"
        )
    values = [_number(a, item) for a in args.split(",")]
    wanted = {"stragglers": 2, "uniform": 2, "lognormal": 1}[name]
    if len(values) != wanted:
        usage = {"stragglers": "stragglers:FRACTION,FACTOR", "uniform": "uniform:LOW,HIGH",
                 "lognormal": "lognormal:SIGMA"}[name]  # fmt: skip
        raise ConfigError(f"--device-speed {item!r}: expected {usage}")
    if name == "stragglers" and not 0 <= values[0] <= 1:
        raise ConfigError(f"--device-speed {item!r}: FRACTION must be in [0, 1]")
    if any(not v > 0 for v in values[name == "stragglers" :]):
        raise ConfigError(f"--device-speed {item!r}: factors must be > 0")
    if name == "uniform" and values[0] > values[1]:
        raise ConfigError(f"--device-speed {item!r}: LOW must be <= HIGH")
    return name, values


def _draw(name: str, args: list[float], workers: Sequence[int], seed: int) -> dict[int, float]:
    rng = random.Random(f"psgd-device-speed-{seed}")
    if name == "stragglers":
        slow = set(rng.sample(list(workers), round(args[0] * len(workers))))
        return {w: args[1] if w in slow else 1.0 for w in workers}
    if name == "uniform":
        return {w: rng.uniform(args[0], args[1]) for w in workers}
    return {w: math.exp(rng.gauss(0.0, args[0])) for w in workers}


def resolve_device_speeds(
    items: Sequence[str], node_ids: Sequence[int], seed: int = 0
) -> dict[int, float]:
    """Every node's speed factor (1.0 unless set); distributions draw workers' (node >= 0)."""
    speeds = dict.fromkeys(node_ids, 1.0)
    workers = [n for n in node_ids if n >= 0]
    for item in items:  # in order: a later item overrides an earlier one
        node, value = _split_node(item, "--device-speed", node_ids)
        if node is not None:
            speeds[node] = _factor(value, item)
        elif ":" in value:
            speeds.update(_draw(*_distribution(value), workers, seed))
        else:
            speeds.update(dict.fromkeys(workers, _factor(value, item)))
    return speeds


def check_device_speeds(items: Sequence[str]) -> None:
    """Raise ``ConfigError`` for the first malformed ``--device-speed`` item."""
    for item in items:
        node, value = _split_node(item, "--device-speed", None)
        if node is None and ":" in value:
            _distribution(value)
        else:
            _factor(value, item)
