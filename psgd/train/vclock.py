"""A computed virtual clock for emulated links and devices: what a run would take, no sleeping.

Model
-----
Every node ``n`` has a clock ``t[n]`` (virtual seconds since the job started), a link
(``psgd.link_spec.Link``: bandwidth and one-way latency of its own connection to a switch) and
a speed factor (0.2: five times slower than this machine).

- Compute: CPU time a node's threads spend (``time.thread_time``) between two clock events,
  divided by the node's speed, advances ``t[n]``. Blocking waits cost no CPU, so only work
  counts, however loaded the machine is.
- A message of ``b`` encoded bytes (the real wire encoding's size) sent by ``s`` at ``t[s]`` to
  ``k`` targets is ``w = b / TCP_PAYLOAD_SHARE`` bytes on the wire per copy (TCP/IPv4/Ethernet
  headers). The copies share ``s``'s uplink: one busy interval of ``k * w * 8 / rate_s``
  starting at the first free moment at or after ``t[s]``; every copy ends with it (fair
  share). Each copy then needs ``w * 8 / rate_r`` of the target's downlink, at the first free
  moment at or after the uplink's start plus ``latency_s`` (a switch forwards as bytes come:
  a message crossing two equal idle links takes ``w * 8 / rate``, not twice that). It arrives
  at ``max(downlink end, uplink end + latency_s) + latency_r``.
- Receive: ``t[r] = max(t[r] + its CPU so far, arrival)``: waiting for a message is idle time.
  Only for the node's own thread (the one that called ``start``): a message handled by a
  background thread (the ASGD receiver) costs CPU but holds nobody up.

Shared cores (``--shared-cores N``): by default every node has a device of its own. With N,
every node's compute is booked on N cores that all nodes share (``psgd.train.shared_cores``),
so nodes computing at once take turns, as hosts emulated on one machine do.

Start: the submitter ships each node its job (its data blocks, the test set and the weights,
images as grey levels as on daemons) over the node's downlink, in parallel, and starts them
all once the last has its job (``ship``).

Queueing: each link direction keeps its busy intervals and a new message takes the first gap
long enough, so messages share a link in turn, and one sent "earlier" in virtual time but
later in real time (threads race) still finds the gap before the others.

Approximations, said plainly: TCP's slow start, windows and ACK traffic are not modelled (the
header share is); a node's threads are charged to one clock, as if it had one core (the
ASGD receiver thread included); the order in which a node handles messages is the order they
reach it in real time, and its clock is the latest arrival it handled; in ASGD a message is
applied when it reaches the node in real time, not at its virtual arrival (staleness is
the simulation's, not the emulated links').

API (the in-process simulation uses it; a round scheduler can too)
-------------------------------------------------------------------
``VirtualClock(links, speeds, shared_cores=None)``
    ``links``: ``{node: Link}``, ``speeds``: ``{node: factor}`` for every node that sends or
    receives (``build_clock`` makes them from a ``JobSpec``'s ``links``/``device_speed``/
    ``shared_cores``).
``clock.start(node)``
    Begin metering the calling thread's CPU for ``node``, and make it the thread that waits for
    ``node``'s messages (call at the top of its thread).
``clock.charge(node)``
    Add the calling thread's CPU since its last charge, scaled, to ``t[node]``; returns it.
``clock.compute(node, seconds)``
    Add ``seconds`` of this machine's compute (measured elsewhere, e.g. in an executor
    process) to ``t[node]``, scaled by its speed.
``clock.ship({node: job_bytes})``
    The job's start: each node's job crosses its downlink, and all begin at the last arrival.
``clock.send(node, targets, nbytes) -> {target: arrival}``
    Charge, then send ``nbytes`` from ``node`` to each target at ``t[node]``; the arrival times
    are what ``receive`` takes (a round deadline compares them with the round's end).
``clock.receive(node, arrival)``
    Charge, then ``t[node] = max(t[node], arrival)``.
``clock.now(node)`` / ``clock.advance_to(node, t)``
    Read ``t[node]`` (after a charge); move it to at least ``t`` (e.g. a round's start).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from psgd.codec import Parameter_Server
from psgd.data.grey_levels import pack_features
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.link_spec import (
    TCP_PAYLOAD_SHARE,
    Link,
    resolve_device_speeds,
    resolve_links,
)
from psgd.train.prepare import PreparedJob
from psgd.train.shared_cores import SharedCores

__all__ = [
    "LinkQueue",
    "VirtualClock",
    "build_clock",
    "check_emulation",
    "job_bytes",
]

#: Busy intervals a link keeps at most (the oldest are forgotten first).
MAX_INTERVALS = 4096


class LinkQueue:
    """One direction of one link: busy intervals, sorted; ``reserve`` takes the first gap."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def reserve(self, ready: float, duration: float) -> float:
        """Book ``duration`` seconds at the first free moment >= ``ready``; returns the start."""
        if duration <= 0:
            return ready
        index = bisect.bisect_right(self.ends, ready)  # intervals ending after ready
        start = ready
        while index < len(self.starts):
            if start + duration <= self.starts[index]:
                break
            start = max(start, self.ends[index])
            index += 1
        self._insert(index, start, start + duration)
        return start

    def _insert(self, index: int, start: float, end: float) -> None:
        if index > 0 and self.ends[index - 1] >= start:  # abuts the previous: merge
            index -= 1
            self.ends[index] = end
        else:
            self.starts.insert(index, start)
            self.ends.insert(index, end)
        if index + 1 < len(self.starts) and self.starts[index + 1] <= self.ends[index]:
            self.ends[index] = self.ends.pop(index + 1)
            self.starts.pop(index + 1)
        if len(self.starts) > MAX_INTERVALS:
            del self.starts[0], self.ends[0]

    def forget_before(self, moment: float) -> None:
        """Drop intervals that end before ``moment`` (no message can be ready that early)."""
        keep = bisect.bisect_left(self.ends, moment)
        del self.starts[:keep], self.ends[:keep]


class VirtualClock:
    """Per-node virtual clocks over emulated links (see the module docstring for the model)."""

    def __init__(
        self,
        links: Mapping[int, Link],
        speeds: Mapping[int, float],
        shared_cores: int | None = None,
    ) -> None:
        self.links = dict(links)
        self.speeds = {node: float(speeds.get(node, 1.0)) for node in self.links}
        self.cores = None if shared_cores is None else SharedCores(shared_cores)
        self._now = dict.fromkeys(self.links, 0.0)
        self._up = {node: LinkQueue() for node in self.links}
        self._down = {node: LinkQueue() for node in self.links}
        self._marks: dict[tuple[int, int], float] = {}
        self._waiters: dict[int, int] = {}
        self._lock = threading.Lock()
        self.messages = 0

    def describe(self) -> dict[str, object]:
        """``{node: {"link": "100mbit,0ms", "speed": 1.0}}`` for the records.

        With shared cores, ``"shared_cores": count`` too.
        """
        described: dict[str, object] = {
            str(n): {"link": str(self.links[n]), "speed": self.speeds[n]} for n in self.links
        }
        if self.cores is not None:
            described["shared_cores"] = self.cores.count
        return described

    # -- compute

    def start(self, node: int) -> None:
        """Meter the calling thread's CPU for ``node`` from now on."""
        with self._lock:
            self._marks[(node, threading.get_ident())] = time.thread_time()
            self._waiters[node] = threading.get_ident()

    def _charge(self, node: int) -> None:
        key = (node, threading.get_ident())
        now = time.thread_time()
        used = now - self._marks.get(key, now)
        self._marks[key] = now
        self._busy(node, used)

    def _busy(self, node: int, seconds: float) -> None:
        """``node`` computes ``seconds`` of this machine's CPU, from its clock on."""
        duration = seconds / self.speeds[node]
        if self.cores is None:
            self._now[node] += duration
        else:
            self._now[node] = self.cores.reserve(self._now[node], duration)

    def charge(self, node: int) -> float:
        """Add the calling thread's CPU since its last charge to ``node``'s clock; return it."""
        with self._lock:
            self._charge(node)
            return self._now[node]

    def compute(self, node: int, seconds: float) -> float:
        """Add ``seconds`` of this machine's compute to ``node``'s clock, scaled by its speed."""
        with self._lock:
            self._busy(node, seconds)
            return self._now[node]

    def now(self, node: int) -> float:
        """``node``'s virtual time, the calling thread's CPU charged first."""
        return self.charge(node)

    def advance_to(self, node: int, moment: float) -> float:
        """Move ``node``'s clock to at least ``moment`` (it idles until then)."""
        with self._lock:
            self._now[node] = max(self._now[node], moment)
            return self._now[node]

    # -- messages

    def ship(self, job_bytes: Mapping[int, int]) -> float:
        """Every node's job arrives over its downlink; all start when the last one has it.

        ``job_bytes``: the encoded size of each node's job (its data, test set, weights). The
        submitter sends every job at 0 from a link of its own (not emulated), so jobs come in
        in parallel; it starts the nodes once all of them have accepted theirs, so every clock
        starts at the latest arrival. Returns that moment.
        """
        with self._lock:
            start = 0.0
            for node, nbytes in job_bytes.items():
                link = self.links[node]
                took = _seconds(nbytes / TCP_PAYLOAD_SHARE * 8, link.rate_bit_s)
                self._down[node].reserve(0.0, took)
                start = max(start, took + link.latency_s)
            for node in self._now:
                self._now[node] = max(self._now[node], start)
            return start

    def send(self, node: int, targets: Sequence[int], nbytes: int) -> dict[int, float]:
        """Send ``nbytes`` of encoding from ``node`` to each target; returns arrival times."""
        with self._lock:
            self._charge(node)
            self.messages += len(targets)
            wire_bits = nbytes / TCP_PAYLOAD_SHARE * 8
            sender = self.links[node]
            up_time = _seconds(wire_bits * len(targets), sender.rate_bit_s)
            up_start = self._up[node].reserve(self._now[node], up_time)
            up_end = up_start + up_time
            arrivals = {}
            for target in targets:
                receiver = self.links[target]
                down_time = _seconds(wire_bits, receiver.rate_bit_s)
                down_start = self._down[target].reserve(up_start + sender.latency_s, down_time)
                ends = max(down_start + down_time, up_end + sender.latency_s)
                arrivals[target] = ends + receiver.latency_s
            self._forget()
            return arrivals

    def receive(self, node: int, arrival: float) -> float:
        """``node`` handles a message that arrives at ``arrival``: it waits for it if early.

        Called from a thread other than the one ``start`` named (a background receiver), it
        only charges that thread's CPU.
        """
        with self._lock:
            self._charge(node)
            if self._waiters.get(node, threading.get_ident()) == threading.get_ident():
                self._now[node] = max(self._now[node], arrival)
            return self._now[node]

    def _forget(self) -> None:
        if self.messages % 256:
            return
        floor = min(self._now.values())
        for queue in (*self._up.values(), *self._down.values()):
            queue.forget_before(floor)
        if self.cores is not None:
            self.cores.forget_before(floor)


def _seconds(bits: float, rate_bit_s: float) -> float:
    return 0.0 if math.isinf(rate_bit_s) else bits / rate_bit_s


def build_clock(
    links: Iterable[str],
    device_speed: Iterable[str],
    node_ids: Sequence[int],
    seed: int = 0,
    shared_cores: int | None = None,
) -> VirtualClock | None:
    """The clock of a job's ``--link``/``--device-speed``/``--shared-cores``, or None if none."""
    links, device_speed = list(links), list(device_speed)
    if not links and not device_speed and shared_cores is None:
        return None
    return VirtualClock(
        resolve_links(links, node_ids),
        resolve_device_speeds(device_speed, node_ids, seed),
        shared_cores,
    )


def job_bytes(job: PreparedJob, node: int) -> int:
    """About the bytes the submitter ships ``node`` (arrays only; the headers are small)."""
    total = sum(w.nbytes for w in job.initial_weights)
    if node == Parameter_Server:
        return total
    arrays = [job.dataset.x_test, job.dataset.y_test]
    for x, y in job.node_blocks(node).values():
        arrays += [x, y]
    for array in arrays:
        packed = pack_features(array)
        total += (
            sum(a.nbytes for a in packed.values()) if isinstance(packed, dict) else packed.nbytes
        )
    return total


def check_emulation(spec: JobSpec, simulate: bool) -> None:
    """Refuse ``--link``/``--device-speed`` where nothing emulates them: on daemons."""
    if not (spec.links or spec.device_speed or spec.shared_cores is not None):
        return
    if not simulate:
        raise ConfigError(
            "--link/--device-speed/--shared-cores emulate links and devices in --simulate "
            "runs; on daemons, "
            "shape real links instead (bench/netlab.py, as root)"
        )
