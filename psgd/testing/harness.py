"""Codec test scripts: run a codec on a simulated topology, no sockets, no threads.

::

    python -m psgd.testing p2p plain.Plain --nodes 4 --rounds 5
    python -m psgd.testing ps fedavg.FedAvgClient fedavg.FedAvgServer --param local_steps=2

Each round every node hands each of its blocks (random arrays, the same for every holder of
a block) to ``update_blocks``; packages are encoded with the real wire format (so bytes are
the real ones and unsendable content fails here) and delivered one by one until the network
is quiet (a codec with an ``initial_weights`` hook first gets zeros of the shape, on every
node; ``--param learn_rate=`` sets ``GlobalSettings.learn_rate``, default 0.01). In
``ssgd`` mode every node must then have a result; a node without one gets one
``do_something_to_save_yourself()`` call and is counted as a timeout. In ``asgd`` mode
packages are delivered late and in random order, and results are taken when present. Where
a codec defines ``expected(self, blocks)`` (``blocks``: this round's ``{block_id: array}``),
its results must equal what that returns, so a numerically wrong codec fails. A round-based
client (``waits_for_model = True``) takes part in a round only while it holds a model: it
gets ``update_blocks`` only then, and waiting for a model is not a timeout.

From pytest: ``check_p2p("plain.Plain").assert_ok()``.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psgd.codec import BlockWeight, Codec, Parameter_Server, collect_packages
from psgd.codec_params import unread_warnings
from psgd.errors import CodecError, ConfigError, EncodeError
from psgd.loader import codec_name, forget_codec_modules, resolve_codec
from psgd.net import wire
from psgd.net.wire_objects import ContentClasses
from psgd.settings import GlobalSettings

__all__ = ["CodecCheck", "RoundRecord", "check_p2p", "check_ps"]

#: Deliveries allowed per round before the codecs are said to be in a message storm.
MAX_DELIVERIES_PER_ROUND = 100_000


class CheckFailed(Exception):
    """Internal: stops a check with the reason it failed."""


@dataclass
class RoundRecord:
    """What one node did in one round."""

    round: int
    node: int
    packages: int = 0
    bytes: int = 0
    result: bool = False
    expected: str = "-"
    timeouts: int = 0
    retries: int = 0


@dataclass
class CodecCheck:
    """The outcome of a codec check: per node and round records, PASS or FAIL and why."""

    title: str
    records: list[RoundRecord] = field(default_factory=list)
    passed: bool = False
    reason: str = ""
    server_packages: int = 0
    server_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The per node and round report, as printed by the command line."""
        lines = [
            self.title,
            "round  node  packages      bytes  result  expected  timeouts  retries",
        ]
        for r in self.records:
            node = "PS" if r.node == Parameter_Server else str(r.node)
            lines.append(
                f"{r.round:5d}  {node:>4}  {r.packages:8d}  {r.bytes:9d}  "
                f"{'yes' if r.result else 'no':>6}  {r.expected:>8}  "
                f"{r.timeouts:8d}  {r.retries:7d}"
            )
        if self.server_packages:
            lines.append(f"server: {self.server_packages} packages, {self.server_bytes} bytes")
        lines += [f"warning: {warning}" for warning in self.warnings]
        lines.append(("PASS: " if self.passed else "FAIL: ") + self.reason)
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with the whole table when the check failed."""
        assert self.passed, self.table()


class _Cluster:
    """Codecs of every node, a FIFO of encoded packages, and per-round counters."""

    def __init__(self, codecs: dict[int, Codec], rng: np.random.Generator, shuffle: bool) -> None:
        self.codecs = codecs
        # Objects of the codecs' own classes travel as their state, as on a real network.
        self.classes = ContentClasses.for_codecs({type(c) for c in codecs.values()})
        self.queue: deque[tuple[int, int, list[bytes]]] = deque()
        self.rng = rng
        self.shuffle = shuffle
        self.sent: dict[int, list[int]] = {n: [0, 0] for n in codecs}

    def call(self, node: int, method: str, *args: Any) -> None:
        codec = self.codecs[node]
        where = f"node {node}: {type(codec).__name__}.{method}"
        try:
            packages = collect_packages(codec, method, getattr(codec, method)(*args))
        except CodecError as exc:
            raise CheckFailed(str(exc)) from None
        except Exception as exc:
            raise CheckFailed(
                f"{where} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            ) from None
        for package in packages:
            for target in package.target():
                if target not in self.codecs:
                    raise CheckFailed(
                        f"{where} sent to {target}, which is not a node "
                        f"(nodes: {sorted(self.codecs)})"
                    )
            try:
                frames = [
                    bytes(f)
                    for f in wire.encode({"src": node}, package.content, classes=self.classes)
                ]
            except EncodeError as exc:
                raise CheckFailed(f"{where} returned content that cannot be sent: {exc}") from None
            size = wire.frames_size(frames)
            for target in package.target():
                self.queue.append((node, target, frames))
                self.sent[node][0] += 1
                self.sent[node][1] += size

    def deliver(self, limit: int | None = None) -> None:
        """Deliver queued packages (all, or at most ``limit``), including those they cause."""
        if self.shuffle and self.queue:
            items = list(self.queue)
            self.rng.shuffle(items)
            self.queue = deque(items)
        delivered = 0
        while self.queue and (limit is None or delivered < limit):
            delivered += 1
            if delivered > MAX_DELIVERIES_PER_ROUND:
                raise CheckFailed(
                    f"more than {MAX_DELIVERIES_PER_ROUND} deliveries in one round: the codecs "
                    "keep answering each other (message storm)"
                )
            _, target, frames = self.queue.popleft()
            _, content = wire.decode(frames, classes=self.classes)
            self.call(target, "receive_blocks", content)

    def take_counts(self, node: int) -> tuple[int, int]:
        packages, size = self.sent[node]
        self.sent[node] = [0, 0]
        return packages, size


def _compare(codec: Codec, result: Any, blocks: dict[int, np.ndarray]) -> str:
    hook = getattr(codec, "expected", None)
    if hook is None:
        return "-"
    try:
        reference = hook(blocks)
    except Exception as exc:
        raise CheckFailed(
            f"{type(codec).__name__}.expected raised {type(exc).__name__}: {exc}"
        ) from None
    if reference is None:
        return "-"
    try:
        equal = np.allclose(np.asarray(result), np.asarray(reference), rtol=1e-5, atol=1e-6)
    except (ValueError, TypeError):
        equal = False
    if not equal:
        diff = "shapes differ"
        if np.shape(result) == np.shape(reference):
            diff = f"max abs diff {np.max(np.abs(np.asarray(result) - np.asarray(reference))):.3g}"
        raise CheckFailed(f"node {codec.node_id}: result differs from expected() ({diff})")
    return "ok"


def _run(
    title: str,
    worker_class: type[Codec],
    server_class: type[Codec] | None,
    nodes: int,
    rounds: int,
    redundancy: int,
    assignment: str,
    shape: Sequence[int],
    sync: str,
    params: dict[str, Any] | None,
    seed: int,
) -> CodecCheck:
    check = CodecCheck(title)
    settings = GlobalSettings.get_default()
    rng = np.random.default_rng(seed)
    try:
        codecs: dict[int, Codec] = {}
        for node in range(nodes):
            codecs[node] = _construct(worker_class, node)
        if server_class is not None:
            codecs[Parameter_Server] = _construct(server_class, Parameter_Server)
        cluster = _Cluster(codecs, rng, shuffle=sync == "asgd")
        start = np.zeros(tuple(shape), dtype=np.float32)
        for node, codec in codecs.items():
            if callable(getattr(codec, "initial_weights", None)):
                cluster.call(node, "initial_weights", start.copy())
        cluster.deliver()
        results_seen = dict.fromkeys(range(nodes), 0)
        waits = bool(getattr(worker_class, "waits_for_model", False))
        for round_no in range(rounds):
            blocks = {
                b: rng.standard_normal(tuple(shape)).astype(np.float32) for b in settings.blocks
            }
            for node in range(nodes):
                if waits and not codecs[node].is_done():
                    continue  # a round-based client not picked: it trains nothing
                if waits:
                    codecs[node].get_result()  # the model it trains from
                for block_id in settings.node_2_block[node]:
                    cluster.call(
                        node, "update_blocks", BlockWeight(blocks[block_id].copy(), block_id)
                    )
            if sync == "ssgd":
                cluster.deliver()
            else:
                cluster.deliver(limit=len(cluster.queue) // 2)
            for node in range(nodes):
                record = RoundRecord(round_no, node)
                codec = codecs[node]
                if waits:  # waiting for a model is not a timeout; a model is its result
                    record.result = codec.is_done()
                    results_seen[node] += record.result
                    record.packages, record.bytes = cluster.take_counts(node)
                    check.records.append(record)
                    continue
                if sync == "ssgd" and not codec.is_done():
                    record.timeouts = 1
                    record.retries = 1
                    cluster.call(node, "do_something_to_save_yourself")
                    cluster.deliver()
                    if not codec.is_done():
                        record.packages, record.bytes = cluster.take_counts(node)
                        check.records.append(record)
                        raise CheckFailed(
                            f"node {node} round {round_no}: no result after every package was "
                            "delivered and do_something_to_save_yourself() was called"
                        )
                if codec.is_done():
                    result = codec.get_result()
                    record.result = True
                    results_seen[node] += 1
                    if sync == "ssgd":
                        record.expected = _compare(codec, result, blocks)
                record.packages, record.bytes = cluster.take_counts(node)
                check.records.append(record)
        cluster.deliver()
        if server_class is not None:
            check.server_packages, check.server_bytes = cluster.take_counts(Parameter_Server)
        silent = [n for n, count in results_seen.items() if count == 0]
        if waits and len(silent) == nodes:
            raise CheckFailed(f"no client was ever sent a model in {rounds} rounds")
        if silent and not waits:  # a round-based client may never be picked
            raise CheckFailed(f"nodes {silent} never produced a result in {rounds} rounds")
        for codec in codecs.values():
            codec.dispose()
    except CheckFailed as exc:
        check.reason = str(exc)
        return check
    finally:
        given = {k: v for k, v in settings.params.items() if k != "learn_rate"}  # the script's
        classes = [worker_class] + ([server_class] if server_class else [])
        check.warnings = unread_warnings(given, classes, GlobalSettings.params_read())
    checked = any(r.expected == "ok" for r in check.records)
    check.passed = True
    check.reason = (
        f"{'every node produced a result every round' if sync == 'ssgd' else 'results arrived'}"
        + (
            ", equal to the codec's expected()"
            if checked
            else " (no expected() hook: values not checked)"
        )
    )
    return check


def _construct(cls: type[Codec], node: int) -> Codec:
    try:
        return cls(node)
    except Exception as exc:
        raise CheckFailed(
            f"node {node}: {cls.__name__}.__init__ raised {type(exc).__name__}: {exc}\n"
            f"{traceback.format_exc()}"
        ) from None


def _set_settings(
    nodes: int,
    redundancy: int,
    assignment: str,
    sync: str,
    params: dict[str, Any] | None,
    seed: int,
) -> None:
    """The check's settings, set before any codec module runs (class bodies may read them)."""
    if sync not in ("ssgd", "asgd"):
        raise ConfigError(f"--sync: expected ssgd or asgd, got {sync!r}")
    settings = GlobalSettings(nodes, redundancy, assignment, params)
    settings.learn_rate = float(settings.params.get("learn_rate", 0.01))
    settings.sync, settings.seed = sync, seed
    GlobalSettings.set_default(settings)


def _as_class(codec: str | type[Codec]) -> type[Codec]:
    return resolve_codec(codec) if isinstance(codec, str) else codec


def check_p2p(
    codec: str | type[Codec],
    nodes: int = 4,
    rounds: int = 5,
    redundancy: int = 1,
    assignment: str = "iid",
    shape: Sequence[int] = (4, 4),
    sync: str = "ssgd",
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> CodecCheck:
    """Check a peer-to-peer codec on ``nodes`` workers; see the module docstring."""
    _set_settings(nodes, redundancy, assignment, sync, params, seed)
    forget_codec_modules()  # codec modules named here run afresh, under these settings
    cls = _as_class(codec)
    title = (
        f"p2p {codec_name(cls)}: {nodes} nodes, {rounds} rounds, redundancy {redundancy}, "
        f"{assignment}, shape {tuple(shape)}, {sync}"
    )
    return _run(title, cls, None, nodes, rounds, redundancy, assignment, shape, sync, params, seed)


def check_ps(
    client: str | type[Codec],
    server: str | type[Codec],
    nodes: int = 4,
    rounds: int = 5,
    redundancy: int = 1,
    assignment: str = "iid",
    shape: Sequence[int] = (4, 4),
    sync: str = "ssgd",
    params: dict[str, Any] | None = None,
    seed: int = 0,
) -> CodecCheck:
    """Check a worker codec with a parameter-server codec; see the module docstring."""
    _set_settings(nodes, redundancy, assignment, sync, params, seed)
    forget_codec_modules()  # codec modules named here run afresh, under these settings
    client_cls, server_cls = _as_class(client), _as_class(server)
    title = (
        f"ps {codec_name(client_cls)} + {codec_name(server_cls)}: {nodes} nodes, {rounds} "
        f"rounds, redundancy {redundancy}, {assignment}, shape {tuple(shape)}, {sync}"
    )
    return _run(
        title,
        client_cls,
        server_cls,
        nodes,
        rounds,
        redundancy,
        assignment,
        shape,
        sync,
        params,
        seed,
    )
