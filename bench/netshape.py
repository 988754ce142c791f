"""Shaping a veth with ``tc`` (bandwidth: ``tbf``; latency and loss: ``netem``), and timing it.

``Shape`` is what a host's link should look like; ``apply_shape`` installs it on one network
device, inside a namespace or in the root one; ``netem_available`` tells whether this kernel
has the ``netem`` qdisc at all (many minimal or VM kernels are built without
``CONFIG_NET_SCH_NETEM``: then only bandwidth can be shaped, and asking for latency or loss
raises ``NetemUnavailable`` saying so). ``time_transfer`` sends a known number of bytes over
TCP between two namespaces and returns how long it took: the check that shaping is real.
"""

from __future__ import annotations

import math
import secrets
import subprocess
import sys
from dataclasses import dataclass

from psgd.link_spec import TCP_PAYLOAD_SHARE, parse_duration, parse_rate

__all__ = [
    "NetemUnavailable",
    "Shape",
    "TCP_PAYLOAD_SHARE",
    "apply_shape",
    "netem_available",
    "time_transfer",
]

TC_TIMEOUT_S = 10.0
#: tbf's bucket: this many seconds of the rate, at least two full frames. At 100 Mbit/s that is
#: 70 kB, which holds a whole 64 kB GSO packet: with a smaller bucket tbf cuts every GSO packet
#: into frames in software, which cost about 35 ms of CPU per MB sent on a 2-core VM (6 ms with
#: this bucket; measured with ``time_transfer``), i.e. 40% of a core at 100 Mbit/s. The price:
#: after an idle spell a message may run up to this long ahead of the rate (5% of a 1 MB one
#: at 100 Mbit/s). Slower links get a proportionally smaller bucket (and cost less CPU anyway).
BURST_S = 0.0056
MIN_BURST_BYTES = 2 * 1514
#: tbf's queue: this many seconds of the rate, at least ``MIN_LIMIT_BYTES``, so TCP's bursts
#: (TSQ lets a socket queue ~1 MB) are delayed rather than dropped.
QUEUE_S = 0.25
MIN_LIMIT_BYTES = 1 << 20

_UNKNOWN_QDISC = "qdisc kind is unknown"
_NETEM_MISSING = (
    "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is not set): latency and loss cannot "
    "be emulated here; bandwidth (tbf) still can"
)


class NetemUnavailable(Exception):
    """Latency or loss was asked for, but the kernel has no ``netem`` qdisc."""


@dataclass(frozen=True)
class Shape:
    """A link's shape: bandwidth in bit/s (None: unshaped), one-way delay, loss in percent."""

    rate_bit_s: float | None = None
    delay_s: float = 0.0
    loss_pct: float = 0.0

    @classmethod
    def parse(cls, rate: str | None, delay: str | None = None, loss: float = 0.0) -> Shape:
        """From the command line's ``100mbit``, ``10ms`` and a loss percentage."""
        bits = None if rate is None else parse_rate(rate, "--rate")
        if bits is not None and math.isinf(bits):
            bits = None
        if not 0 <= loss < 100:
            raise ValueError(f"--loss: expected a percentage in [0, 100), got {loss}")
        return cls(bits, parse_duration(delay, "--delay") if delay else 0.0, loss)

    @property
    def needs_netem(self) -> bool:
        return self.delay_s > 0 or self.loss_pct > 0

    def __str__(self) -> str:
        parts = [f"{self.rate_bit_s / 1e6:g} Mbit/s" if self.rate_bit_s else "unshaped"]
        if self.delay_s:
            parts.append(f"{self.delay_s * 1e3:g} ms")
        if self.loss_pct:
            parts.append(f"{self.loss_pct:g}% loss")
        return ", ".join(parts)


def _in(namespace: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv] if namespace else argv


def _tc(namespace: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _in(namespace, ["tc", *args]), capture_output=True, text=True, timeout=TC_TIMEOUT_S
    )


def _check(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        if _UNKNOWN_QDISC in done.stderr and "netem" in done.args:
            raise NetemUnavailable(_NETEM_MISSING)
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)


def _tbf_args(rate_bit_s: float) -> list[str]:
    rate_bytes = rate_bit_s / 8
    burst = max(MIN_BURST_BYTES, round(rate_bytes * BURST_S))
    limit = max(MIN_LIMIT_BYTES, round(rate_bytes * QUEUE_S))
    return ["tbf", "rate", f"{round(rate_bit_s)}bit", "burst", str(burst), "limit", str(limit)]


def apply_shape(device: str, shape: Shape, namespace: str | None = None) -> None:
    """Shape the egress of ``device`` (in ``namespace``, or the root one); replaces any shaping.

    Bandwidth only: ``tbf`` as the root qdisc. With delay or loss: ``netem`` as the root and
    ``tbf`` as its child (``NetemUnavailable`` if the kernel lacks netem).
    """
    _tc(namespace, "qdisc", "del", "dev", device, "root")  # nothing there yet is fine
    if not shape.needs_netem:
        if shape.rate_bit_s:
            _check(
                _tc(namespace, "qdisc", "add", "dev", device, "root", *_tbf_args(shape.rate_bit_s))
            )
        return
    netem = ["netem", "limit", "100000"]
    if shape.delay_s:
        netem += ["delay", f"{shape.delay_s * 1e6:.0f}us"]
    if shape.loss_pct:
        netem += ["loss", f"{shape.loss_pct:g}%"]
    _check(_tc(namespace, "qdisc", "add", "dev", device, "root", "handle", "1:", *netem))
    if shape.rate_bit_s:
        tbf = _tbf_args(shape.rate_bit_s)
        _check(
            _tc(namespace, "qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", *tbf)
        )


def netem_available() -> bool:
    """Whether this kernel has ``netem``: tried on the loopback of a throwaway namespace."""
    probe = f"psgd-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=TC_TIMEOUT_S)
    if made.returncode != 0:
        return False
    try:
        done = _tc(probe, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
        return done.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=TC_TIMEOUT_S)


_RECEIVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print("listening on", server.getsockname()[1], flush=True)
conn, _ = server.accept()
left = int(sys.argv[2])
while left > 0:
    chunk = conn.recv(min(left, 1 << 20))
    if not chunk:
        sys.exit("sender closed early")
    left -= len(chunk)
conn.sendall(b"k")
conn.close()
"""

_SENDER = """
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
payload = bytes(1 << 20)
left = int(sys.argv[3])
start = time.perf_counter()
while left > 0:
    step = min(left, len(payload))
    conn.sendall(payload[:step])
    left -= step
if conn.recv(1) != b"k":
    sys.exit("no acknowledgement")
print(time.perf_counter() - start)
"""


def time_transfer(
    sender_ns: str | None, receiver_ns: str, receiver_address: str, nbytes: int, timeout_s: float
) -> float:
    """Seconds for ``nbytes`` to go over TCP from ``sender_ns`` (None: root) to the receiver.

    Timed by the sender from its first byte to the receiver's acknowledgement of the last.
    """
    receiver = subprocess.Popen(
        _in(receiver_ns, [sys.executable, "-c", _RECEIVER, receiver_address, str(nbytes)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        line = receiver.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"receiver in {receiver_ns} did not start: {line!r}")
        port = line.split()[-1]
        done = subprocess.run(
            _in(sender_ns, [sys.executable, "-c", _SENDER, receiver_address, port, str(nbytes)]),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"transfer to {receiver_address} failed: {done.stderr.strip()}")
        return float(done.stdout.strip())
    finally:
        if receiver.poll() is None:
            receiver.kill()
        receiver.wait(TC_TIMEOUT_S)
        for stream in (receiver.stdout, receiver.stderr):
            if stream is not None:
                stream.close()
