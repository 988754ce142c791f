"""Bounded logging of dropped and refused traffic: a few lines in full, then a count.

Hostile peers can send thousands of bad messages a second; a line for each would fill the disk
(and the job log sent to the submitter). A ``DropLog`` logs the first ``DETAILED_PER_INTERVAL``
drops of each ``DROP_LOG_INTERVAL_S`` in full, counts the rest, and logs one summary line for
them when the interval ends (on the next drop or ``tick``) and a last one on ``close``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = [
    "DAEMON_ONLY",
    "DAEMON_ONLY_ATTR",
    "DETAILED_PER_INTERVAL",
    "DROP_LOG_INTERVAL_S",
    "DropLog",
    "RefusalLog",
    "plain_address",
]

#: Length of one counting interval.
DROP_LOG_INTERVAL_S = 10.0
#: Drops logged in full per interval; the others are counted in the interval's summary line.
DETAILED_PER_INTERVAL = 10
#: A record with this attribute set belongs to the daemon's log only, never to a job's log.
DAEMON_ONLY_ATTR = "psgd_daemon_only"
#: ``extra`` that marks a record so.
DAEMON_ONLY = {DAEMON_ONLY_ATTR: True}


class DropLog:
    """Counts the drops of one place (a control port, a data port) and logs them, bounded.

    Parameters
    ----------
    logger:
        Where the lines go.
    where:
        Names the place in every line (``control port tcp://127.0.0.1:15387``).
    what:
        What the drops are, plural, for the summary lines (``malformed messages dropped``).
    label:
        Starts each line logged in full, before the drop's number (``dropped``).
    extra:
        ``extra`` for every record (``DAEMON_ONLY`` keeps them out of job logs).
    level:
        Level of the lines (WARNING; INFO for what is merely ignored).
    """

    def __init__(
        self,
        logger: logging.Logger,
        where: str,
        what: str = "malformed messages dropped",
        extra: dict[str, Any] | None = None,
        level: int = logging.WARNING,
        interval_s: float = DROP_LOG_INTERVAL_S,
        detailed: int = DETAILED_PER_INTERVAL,
        label: str = "dropped",
    ) -> None:
        self.logger = logger
        self.label = label
        self.level = level
        self.where = where
        self.what = what
        self.extra = extra
        self.interval_s = interval_s
        self.detailed = detailed
        #: Every drop so far.
        self.total = 0
        self._start = time.monotonic()
        self._in_interval = 0
        self._unlogged = 0
        self._last: tuple[str, tuple[Any, ...]] | None = None

    def drop(self, fmt: str, *args: Any) -> None:
        """Count one drop; log ``fmt % args`` (prefixed with the drop's number) if in budget."""
        self.tick()
        self.total += 1
        self._in_interval += 1
        if self._in_interval <= self.detailed:
            self.logger.log(
                self.level, "%s: %s #%d: " + fmt, self.where, self.label, self.total, *args,
                extra=self.extra,
            )  # fmt: skip
        else:
            self._unlogged += 1
            self._last = (fmt, args)

    def tick(self, now: float | None = None) -> None:
        """End the interval if it is over: log the summary of what was not logged in full."""
        now = time.monotonic() if now is None else now
        if now - self._start < self.interval_s:
            return
        self._summarise(now)
        self._start, self._in_interval = now, 0

    def close(self) -> None:
        """Log the summary of the current interval, if any drop went unlogged, and the total."""
        self._summarise(time.monotonic())
        if self.total:
            self.logger.log(
                self.level, "%s: %d %s in all", self.where, self.total, self.what,
                extra=self.extra,
            )  # fmt: skip

    def _summarise(self, now: float) -> None:
        if not self._unlogged:
            return
        assert self._last is not None
        fmt, args = self._last
        self.logger.log(
            self.level,
            "%s: %d more %s in the last %.1f s (%d in all so far); the last: " + fmt,
            self.where, self._unlogged, self.what, now - self._start, self.total, *args,
            extra=self.extra,
        )  # fmt: skip
        self._unlogged, self._last = 0, None


def plain_address(address: str) -> str:
    """``127.0.0.1`` for ``::ffff:127.0.0.1`` (how IPv6-enabled sockets see IPv4 peers)."""
    mapped = "::ffff:"
    rest = address.removeprefix("[").removeprefix(mapped) if mapped in address else address
    if rest != address and "." in rest.split(":", 1)[0].split("]", 1)[0]:
        return rest.replace("]", "", 1)
    return address


class RefusalLog:
    """Refused connections: one line per peer host and place per interval, with counts.

    A refused client retries every few hundred milliseconds; the first refusal of a host at a
    place is logged at once, further ones within ``interval_s`` are counted into its next line.
    """

    #: Hosts remembered at most (a flood from many addresses cannot grow this without bound).
    MAX_HOSTS = 1024

    def __init__(self, logger: logging.Logger, interval_s: float = DROP_LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        #: Every refusal so far.
        self.total = 0
        self._hosts: dict[tuple[str, str], tuple[float, int]] = {}

    def refuse(
        self, host: str, peer: str, where: str, why: str, extra: dict[str, Any] | None = None
    ) -> None:
        """Count a refused connection from ``peer`` (at ``host``) on ``where``; log if due."""
        host, peer = plain_address(host), plain_address(peer)
        self.total += 1
        now = time.monotonic()
        key = (host, where)
        last, unlogged = self._hosts.get(key, (-self.interval_s, 0))
        if now - last < self.interval_s:
            self._hosts[key] = (last, unlogged + 1)
            return
        if len(self._hosts) >= self.MAX_HOSTS and key not in self._hosts:
            self._hosts.clear()
        self._hosts[key] = (now, 0)
        since = f", {unlogged} more from {host} since its last line" if unlogged else ""
        self.logger.warning(
            "refused a connection from %s on %s: %s (%d refused in all%s)",
            peer, where, why, self.total, since, extra=extra,
        )  # fmt: skip
