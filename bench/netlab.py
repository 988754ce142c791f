"""Test "hosts" as Linux network namespaces joined by a bridge in the root namespace.

Each host gets a namespace, a veth pair (one end on the bridge, the other inside the namespace)
and an address in a private ``10.231.X.0/24``; the root namespace holds ``10.231.X.1`` on the
bridge, so a submitter run from here reaches every host. Names carry a random suffix so
parallel runs never collide; ``Lab.close`` removes everything it made, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Daemon", "Host", "Lab", "NetnsUnavailable"]

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
    """One namespace and its address on the lab's bridge."""

    namespace: str
    address: str


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

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("the 'ip' command (iproute2) is not installed")
        self.tag = secrets.token_hex(3)
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

    def add_host(self) -> Host:
        """A new namespace with ``lo`` up and one address on the bridge."""
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
        host = Host(namespace, address)
        self.hosts.append(host)
        return host

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


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return f"{' '.join(exc.cmd)}: {(exc.stderr or '').strip() or f'exit {exc.returncode}'}"
    return str(exc)
