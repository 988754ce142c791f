"""Hosts as Linux network namespaces on a bridge, their links shaped with ``tc``.

Each host gets a namespace, a veth pair (one end on the bridge, the other inside the namespace)
and an address in a private ``10.231.X.0/24``; the root namespace holds ``10.231.X.1`` on the
bridge, so a submitter run from here reaches every host. Names carry a tag (random unless
given) so parallel labs never collide; ``Lab.close`` removes everything it made.

A host's link can be shaped (``Lab.add_host(shape=...)`` or ``Lab.shape``): bandwidth with a
``tbf`` qdisc on both ends of its veth (the inside end's egress is the host's uplink, the
bridge end's its downlink), so a message between two hosts crosses the sender's link up and
the receiver's link down, as ``psgd.train.vclock`` models it. Latency and loss need the
``netem`` qdisc (then ``netem`` is the root and ``tbf`` its child); kernels built without it
(``CONFIG_NET_SCH_NETEM``) get ``NetemUnavailable``, which says so, rather than a silent
unshaped link. Rates and delays use ``psgd.link_spec``'s syntax (``100mbit``, ``10ms``).

Used by the multi-host tests (``tests/e2e/netns.py`` re-exports it), the shaped-link bench, and
from a root shell on Linux::

    python bench/netlab.py up --hosts 3 --rate 100mbit [--delay 10ms --loss 0.1] \
        [--tag lab] [--workers-json worker.json]
    ip netns exec psgd-lab-h1 psgd-worker --bind 10.231.X.11 --insecure   # one per host
    python bench/netlab.py show --tag lab
    python bench/netlab.py down --tag lab
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import re
import secrets
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # netshape, when imported from tests

from netshape import (  # noqa: E402
    TCP_PAYLOAD_SHARE,
    NetemUnavailable,
    Shape,
    apply_shape,
    netem_available,
    time_transfer,
)

__all__ = [
    "Daemon",
    "Host",
    "Lab",
    "NetemUnavailable",
    "NetnsUnavailable",
    "Shape",
    "TCP_PAYLOAD_SHARE",
    "netem_available",
    "remove_lab",
    "time_transfer",
]

IP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
SUBNET_ATTEMPTS = 5


class NetnsUnavailable(Exception):
    """This machine (or sandbox) will not let us make namespaces, veths or bridges."""


def _ip(*args: str) -> None:
    """Run ``ip ARGS``; raises ``CalledProcessError`` naming the command and its stderr."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(
            done.returncode, ["ip", *args], done.stdout, done.stderr
        )


def _ip_quiet(*args: str) -> None:
    """``ip ARGS`` for teardown: failures (already gone) are not errors."""
    subprocess.run(["ip", *args], capture_output=True, timeout=IP_TIMEOUT_S, check=False)


def _root_ipv4() -> str:
    """``ip -o -4 addr show`` of the root namespace."""
    return subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=IP_TIMEOUT_S
    ).stdout


def _free_subnet() -> str:
    """``10.231.X`` with an X no interface of the root namespace uses yet."""
    taken = {int(x) for x in re.findall(r"inet 10\.231\.(\d+)\.", _root_ipv4())}
    free = [x for x in range(256) if x not in taken]
    if not free:
        raise NetnsUnavailable("every 10.231.X.0/24 is taken")
    return f"10.231.{random.SystemRandom().choice(free)}"


@dataclass
class Host:
    """One namespace, its address on the lab's bridge and the two ends of its veth."""

    namespace: str
    address: str
    inside: str = ""
    outside: str = ""
    shape: Shape = field(default_factory=Shape)


@dataclass
class Daemon:
    """A process running inside a namespace, with every line it printed so far."""

    host: Host
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


class Lab:
    """A bridge, namespaces on it and the processes run in them; ``close()`` undoes it all."""

    def __init__(self, tag: str | None = None) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("the 'ip' command (iproute2) is not installed")
        if tag is not None and not re.fullmatch(r"[a-z0-9]{1,8}", tag):
            raise ValueError(f"lab tag {tag!r}: expected 1 to 8 lowercase letters or digits")
        self.tag = tag or secrets.token_hex(3)
        self.subnet = ""
        self.bridge = f"psb{self.tag}"
        self.hosts: list[Host] = []
        self.daemons: list[Daemon] = []
        self._namespaces: list[str] = []
        self._veths: list[str] = []
        self._bridge_made = False
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._bridge_made = True
            self.subnet = self._claim_subnet()
            _ip("link", "set", self.bridge, "up")
        except (OSError, subprocess.SubprocessError) as exc:
            self.close()
            raise NetnsUnavailable(f"cannot create bridge {self.bridge}: {_why(exc)}") from None
        except NetnsUnavailable:
            self.close()
            raise

    def _claim_subnet(self) -> str:
        """Put a free ``10.231.X.1/24`` on the bridge; retry if a parallel run took X too."""
        for _ in range(SUBNET_ATTEMPTS):
            subnet = _free_subnet()
            _ip("addr", "add", f"{subnet}.1/24", "dev", self.bridge)
            if _root_ipv4().count(f"inet {subnet}.") == 1:
                return subnet
            _ip("addr", "del", f"{subnet}.1/24", "dev", self.bridge)
        raise NetnsUnavailable(f"no free 10.231.X.0/24 after {SUBNET_ATTEMPTS} attempts")

    def add_host(self, shape: Shape | None = None) -> Host:
        """A new namespace with ``lo`` up and one address on the bridge; its link shaped so."""
        index = len(self.hosts) + 1
        namespace = f"psgd-{self.tag}-h{index}"
        outside, inside = f"pv{self.tag}h{index}", f"pn{self.tag}h{index}"
        address = f"{self.subnet}.{10 + index}"
        try:
            _ip("netns", "add", namespace)
            self._namespaces.append(namespace)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._veths.append(outside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        except (OSError, subprocess.SubprocessError) as exc:
            raise NetnsUnavailable(f"cannot set up namespace {namespace}: {_why(exc)}") from None
        host = Host(namespace, address, inside, outside)
        self.hosts.append(host)
        if shape is not None:
            self.shape(host, shape)
        return host

    def shape(self, host: Host, shape: Shape) -> None:
        """Shape ``host``'s link both ways: its uplink (the inside end) and downlink (the bridge's).

        Raises ``NetemUnavailable`` for latency or loss on a kernel without netem, and
        ``NetnsUnavailable`` if ``tc`` is missing or refuses.
        """
        if shutil.which("tc") is None:
            raise NetnsUnavailable("the 'tc' command (iproute2) is not installed")
        try:
            apply_shape(host.inside, shape, host.namespace)
            apply_shape(host.outside, shape)
        except (OSError, subprocess.SubprocessError) as exc:
            raise NetnsUnavailable(f"cannot shape {host.namespace}'s link: {_why(exc)}") from None
        host.shape = shape

    def start(
        self,
        host: Host,
        argv: list[str],
        ready: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Daemon:
        """Run ``argv`` inside ``host``; return once it prints a line containing ``ready``.

        Raises ``RuntimeError`` with its output if it exits or stays silent for
        ``START_TIMEOUT_S``.
        """
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
        )
        daemon = Daemon(host, process)
        self.daemons.append(daemon)
        arrived: queue.SimpleQueue[str | None] = queue.SimpleQueue()

        def pump() -> None:  # keeps draining the pipe so the daemon never blocks on a full one
            assert process.stdout is not None
            for line in process.stdout:
                daemon.lines.append(line)
                arrived.put(line)
            arrived.put(None)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            try:
                line = arrived.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                raise RuntimeError(
                    f"{argv[:2]} in {host.namespace} printed no {ready!r} within "
                    f"{START_TIMEOUT_S:g} s:\n{daemon.output}"
                ) from None
            if line is None:
                process.wait(STOP_TIMEOUT_S)
                raise RuntimeError(
                    f"{argv[:2]} in {host.namespace} exited ({process.returncode}) at start-up:"
                    f"\n{daemon.output}"
                )
            if ready in line:
                return daemon

    def close(self) -> None:
        """Stop every process, then delete namespaces, veths and the bridge (errors ignored)."""
        for daemon in self.daemons:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                daemon.stop()
        for namespace in self._namespaces:
            _ip_quiet("netns", "del", namespace)
        for veth in self._veths:  # normally gone with its namespace; not if the move failed
            _ip_quiet("link", "del", veth)
        if self._bridge_made:
            _ip_quiet("link", "del", self.bridge)

    def leftovers(self) -> list[str]:
        """Names of this lab's namespaces and links that still exist (empty after ``close``)."""
        links = subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=IP_TIMEOUT_S
        ).stdout
        namespaces = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT_S
        ).stdout
        return re.findall(rf"\S*{self.tag}\S*", links + namespaces)


def remove_lab(tag: str) -> list[str]:
    """Delete the namespaces ``psgd-<tag>-h*`` and the bridge ``psb<tag>``; returns their names."""
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT_S
    ).stdout
    removed = re.findall(rf"^(psgd-{re.escape(tag)}-h\d+)", listed, re.MULTILINE)
    for namespace in removed:
        _ip_quiet("netns", "del", namespace)
    links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=IP_TIMEOUT_S
    ).stdout
    for link in re.findall(rf"^\d+: ((?:psb|pv){re.escape(tag)}\w*)[@:]", links, re.MULTILINE):
        _ip_quiet("link", "del", link)
        removed.append(link)
    return removed


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return f"{' '.join(exc.cmd)}: {(exc.stderr or '').strip() or f'exit {exc.returncode}'}"
    return str(exc)


# --------------------------------------------------------------------------- command line


def _up(args: argparse.Namespace) -> int:
    shape = Shape.parse(args.rate, args.delay, args.loss)
    if shape.needs_netem and not netem_available():
        print(f"netlab: {NetemUnavailable.__name__}: {_NETEM_HINT}", file=sys.stderr)
        return 2
    lab = Lab(args.tag)
    try:
        hosts = [lab.add_host(shape) for _ in range(args.hosts)]
    except BaseException:
        lab.close()
        raise
    print(f"lab {lab.tag}: bridge {lab.bridge}, {lab.subnet}.1 in the root namespace")
    for host in hosts:
        print(f"  {host.namespace}  {host.address}  link {host.shape}")
    if args.workers_json:
        listing = {"Worker": [f"{h.address}:{args.port}" for h in hosts]}
        Path(args.workers_json).write_text(json.dumps(listing, indent=2) + "\n", encoding="utf-8")
        print(f"  {args.workers_json}: {len(hosts)} workers on port {args.port}")
    first = hosts[0]
    print(f"start a daemon per host, e.g.:\n  ip netns exec {first.namespace} psgd-worker "
          f"--bind {first.address} --port {args.port} --insecure")  # fmt: skip
    print(f"remove it all: python bench/netlab.py down --tag {lab.tag}")
    return 0


def _show(args: argparse.Namespace) -> int:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    namespaces = re.findall(rf"^(psgd-{re.escape(args.tag)}-h\d+)", listed, re.MULTILINE)
    if not namespaces:
        print(f"no lab {args.tag!r}")
        return 1
    for namespace in namespaces:
        outside = f"pv{args.tag}{namespace.rsplit('-', 1)[1]}"  # the bridge end: its downlink
        shown = []
        for where in (["ip", "netns", "exec", namespace], []):
            command = [*where, "tc", "qdisc", "show"] + ([] if where else ["dev", outside])
            shown += subprocess.run(command, capture_output=True, text=True).stdout.splitlines()
        print(namespace)
        print("".join(f"  {line}\n" for line in shown if "noqueue" not in line), end="")
    return 0


def _down(args: argparse.Namespace) -> int:
    removed = remove_lab(args.tag)
    print(f"removed {', '.join(removed)}" if removed else f"no lab {args.tag!r}")
    return 0


_NETEM_HINT = (
    "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): --delay and --loss cannot be "
    "emulated here; --rate (tbf) alone still works"
)


def main(argv: list[str] | None = None) -> int:
    """``python bench/netlab.py up|show|down ...`` (as root)."""
    parser = argparse.ArgumentParser(prog="netlab.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="make the hosts and shape their links")
    up.add_argument("--hosts", type=int, default=3, help="namespaces to make (default 3)")
    up.add_argument("--rate", default=None, help="bandwidth of each host's link, e.g. 100mbit")
    up.add_argument("--delay", default=None, help="one-way delay per link, e.g. 10ms (netem)")
    up.add_argument("--loss", type=float, default=0.0, help="loss per link in percent (netem)")
    up.add_argument("--tag", default="lab", help="name of the lab (default lab)")
    up.add_argument("--workers-json", default=None, help="also write a worker.json here")
    up.add_argument("--port", type=int, default=15387, help="daemon port for worker.json")
    for name, helptext in (("show", "print each host's qdiscs"), ("down", "remove the lab")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--tag", default="lab", help="name of the lab (default lab)")
    args = parser.parse_args(argv)
    try:
        return {"up": _up, "show": _show, "down": _down}[args.command](args)
    except (NetnsUnavailable, NetemUnavailable, ValueError) as exc:
        print(f"netlab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
