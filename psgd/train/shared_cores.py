"""Cores that emulated nodes share: when k nodes compute at once on c < k cores, each is slower.

The virtual clock (``psgd.train.vclock``) learns of a node's compute after the fact, in the
order threads happen to run, so it cannot re-time work it has already booked. ``SharedCores``
books each new stretch of work as a fluid: the node's work of ``d`` seconds, ready at ``r``,
ends at the first ``T >= r + d`` where the cores' capacity over ``[r, T]`` covers it and the
work already booked in that window::

    count * (T - r) >= d + booked_work(r, T)

and is recorded as running at rate ``d / (T - r)`` over ``[r, T]``. Three nodes that each
compute ``w`` at once on two cores end at ``w``, ``w`` and ``1.5 w``: a step that waits for all
of them takes ``1.5 w``, as time sharing would make it; work that finds a core idle runs at
full speed. Approximations, said plainly: work booked earlier keeps its times (the
latecomer takes the whole slow-down), and the capacity is checked over the window as a
whole, not at every moment.
"""

from __future__ import annotations

import bisect

from psgd.errors import ConfigError

__all__ = ["SharedCores"]

#: Stretches of work kept at most (the oldest are forgotten first).
MAX_BOOKED = 4096


class SharedCores:
    """``count`` cores shared by every node's compute (see the module docstring)."""

    def __init__(self, count: int) -> None:
        if not isinstance(count, int) or count < 1:
            raise ConfigError(f"--shared-cores: must be a whole number >= 1, got {count!r}")
        self.count = count
        #: Booked stretches as parallel lists, sorted by their end.
        self._ends: list[float] = []
        self._starts: list[float] = []
        self._rates: list[float] = []

    def reserve(self, ready: float, work: float) -> float:
        """Book ``work`` seconds of one core's compute from ``ready`` on; returns when it ends."""
        if work <= 0:
            return ready
        first = bisect.bisect_right(self._ends, ready)  # stretches still running after ready
        live = [
            (max(self._starts[i], ready), self._ends[i], self._rates[i])
            for i in range(first, len(self._ends))
        ]
        end = self._finish(ready, work, live)
        self._book(ready, end, work / (end - ready))
        return end

    def _finish(self, ready: float, work: float, live: list[tuple[float, float, float]]) -> float:
        """The first ``T >= ready + work`` with ``count * (T - ready) >= work + booked``.

        One sweep over the booked stretches' starts and ends: between two of them the spare
        capacity changes at a constant rate, ``count`` minus the booked rates running.
        """
        changes = sorted(
            [(start, rate) for start, _, rate in live] + [(end, -rate) for _, end, rate in live]
        )
        moment, spare, busy, index = ready, -work, 0.0, 0
        earliest = ready + work
        while index < len(changes) and changes[index][0] <= earliest:
            at, change = changes[index]
            spare += (self.count - busy) * (at - moment)
            moment, busy, index = at, busy + change, index + 1
        spare += (self.count - busy) * (earliest - moment)
        moment = earliest
        if spare >= 0:
            return moment
        for at, change in changes[index:]:
            slope = self.count - busy
            if slope > 0 and spare + slope * (at - moment) >= 0:
                return moment - spare / slope
            spare += slope * (at - moment)
            moment, busy = at, busy + change
        return moment - spare / self.count  # every booked stretch has ended

    def _book(self, start: float, end: float, rate: float) -> None:
        index = bisect.bisect_right(self._ends, end)
        self._ends.insert(index, end)
        self._starts.insert(index, start)
        self._rates.insert(index, rate)
        if len(self._ends) > MAX_BOOKED:
            del self._ends[0], self._starts[0], self._rates[0]

    def forget_before(self, moment: float) -> None:
        """Drop stretches that end before ``moment`` (no work can be ready that early)."""
        keep = bisect.bisect_left(self._ends, moment)
        del self._ends[:keep], self._starts[:keep], self._rates[:keep]
