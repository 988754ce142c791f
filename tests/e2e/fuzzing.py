"""Seeded generators of hostile messages for a worker daemon's control port and a job's data port.

Every message comes with the outcome the daemon owes it (``Hostile.expect``), known by
construction; ``control_verdict``/``peer_verdict`` re-check each one with the real decoder, so a
generator slip fails at generation time instead of as a puzzling count in the daemon's log.

Outcomes on the control port (README, Security; ``psgd.cluster.daemon``, ``control``):

- ``DROPPED``: malformed, or a type a worker never handles: counted in the control port's
  drops ("malformed control messages dropped"), no answer.
- ``REFUSED``: over a limit (size, frames): counted like a drop and answered REFUSED.
- ``VERSION``: a well-formed header of another protocol version: answered REFUSED, counted
  apart ("messages of another protocol version refused").
- ``IGNORED``: START/HEARTBEAT/FINISH/ABORT for a job that is not the current one, or from
  another peer than the job's submitter: counted as ignored, nothing else.
- ``REJECTED``: a JOB the daemon cannot run (or arriving while busy): answered REJECTED.
- ``ANSWERED``: HELLO: answered HELLO_REPLY.
- ``SILENT``: START again or HEARTBEAT for the current job from its own submitter: no effect.

On a job's data port every message from a stranger is ``DROPPED`` (counted in
``PeerChannel.dropped`` and reported in the daemon's heartbeats), well-formed packages of the job
included: a stranger holds no member identity of the job (``transport.member_identity``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from psgd.codec import Parameter_Server
from psgd.errors import MalformedMessage
from psgd.net import protocol, wire

__all__ = [
    "ANSWERED",
    "DROPPED",
    "IGNORED",
    "REFUSED",
    "REJECTED",
    "SILENT",
    "UNKNOWN_LAYER",
    "VERSION",
    "DaemonLimits",
    "Hostile",
    "HostileMessages",
    "control_verdict",
    "peer_verdict",
    "tiny_job",
]

DROPPED = "dropped"
REFUSED = "refused"
VERSION = "version"
IGNORED = "ignored"
REJECTED = "rejected"
ANSWERED = "answered"
SILENT = "silent"
UNKNOWN_LAYER = "unknown layer"

#: What a worker daemon has a handler for; other valid control types are dropped.
WORKER_TYPES = frozenset(
    {protocol.HELLO, protocol.JOB, protocol.START, protocol.HEARTBEAT, protocol.FINISH,
     protocol.ABORT, protocol.EVAL}
)  # fmt: skip
_TO_SUBMITTER = sorted(protocol.CONTROL_TYPES - WORKER_TYPES)
_JOB_CONTROL = (protocol.START, protocol.HEARTBEAT, protocol.FINISH, protocol.ABORT)
LAYERS = 6  # trainable variables of the default MLP 784-128-128-10

NOOP_CODEC = """\
from psgd import Codec


class Noop(Codec):
    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        self.set_result(block_weight.content)

    def receive_blocks(self, content):
        pass
"""
TRAINER = {
    "epochs": 1, "batch_size": 8, "learn_rate": 0.01, "optimizer": "sgd", "sync": "ssgd",
    "exchange": "auto", "timeout_s": 1.0, "seed": 0, "steps_per_epoch": 1,
}  # fmt: skip


def tiny_job(job: str, role: str = "ps", bundle: dict[str, Any] | None = None) -> dict[str, Any]:
    """Header fields of a JOB a daemon accepts (a no-op codec, default spec) unless changed.

    A parameter server is node ``Parameter_Server``; a worker node 0.
    """
    return {
        "job": job, "node": Parameter_Server if role == "ps" else 0, "role": role, "spec": {},
        "trainer": dict(TRAINER), "node_samples": [1, 1],
        "bundle": bundle or {"fuzzcodec": NOOP_CODEC}, "codecs": ["fuzzcodec.Noop"] * LAYERS,
        "secret": b"fuzz-secret-" + job.encode()[:20].ljust(20, b"."),
    }  # fmt: skip


@dataclass(frozen=True)
class Hostile:
    """One hostile message: its category, its frames and the outcome the daemon owes it."""

    kind: str
    frames: list[bytes]
    expect: str

    @property
    def size(self) -> int:
        return sum(len(f) for f in self.frames)


@dataclass(frozen=True)
class DaemonLimits:
    """The limits a daemon was started with (``--max-message-mb 1 --max-job-mb 64``)."""

    max_message_bytes: int = 1_000_000
    max_job_bytes: int = 64_000_000
    max_frames: int = 4096

    @property
    def largest(self) -> int:
        return max(self.max_message_bytes, self.max_job_bytes)

    @property
    def control(self) -> wire.Limits:
        return wire.Limits(max_frames=self.max_frames, max_message_bytes=self.largest)

    @property
    def peer(self) -> wire.Limits:
        return wire.Limits(max_frames=self.max_frames, max_message_bytes=self.max_message_bytes)


def control_verdict(frames: list[bytes], limits: DaemonLimits) -> str | protocol.Message:
    """DROPPED, REFUSED or VERSION for frames sent to a control port, else the parsed message."""
    size = sum(len(f) for f in frames)
    if len(frames) > limits.max_frames or size > limits.largest:
        return REFUSED
    try:
        message = protocol.parse(frames, protocol.CONTROL_TYPES, limits.control)
    except wire.VersionMismatch:
        return VERSION
    except MalformedMessage:
        return DROPPED
    cap = limits.max_job_bytes if message.type == protocol.JOB else limits.max_message_bytes
    if size > cap:
        return REFUSED
    if message.type not in WORKER_TYPES:
        return DROPPED
    return message


def peer_verdict(frames: list[bytes], limits: DaemonLimits, job: str) -> str:
    """What the frames are, sent by a member: DROPPED (malformed or not of ``job``),
    UNKNOWN_LAYER, or "valid". From a stranger, all of them are dropped."""
    try:
        message = protocol.parse(frames, protocol.PEER_TYPES, limits.peer)
    except MalformedMessage:
        return DROPPED
    if message["job"] != job:
        return DROPPED
    try:
        items = protocol.split_packages(message, 0)
    except MalformedMessage:
        return DROPPED
    return "valid" if all(0 <= item[1] < LAYERS for item in items) else UNKNOWN_LAYER


def _frames(raw: list[Any]) -> list[bytes]:
    return [bytes(f) for f in raw]


def _packed_map(items: list[tuple[Any, bytes]]) -> bytes:
    """A msgpack map from already packed values (to splice in bytes packb cannot make)."""
    assert len(items) < 16
    return bytes([0x80 | len(items)]) + b"".join(msgpack.packb(k) + v for k, v in items)


def _header(fields: dict[str, Any], body: Any = None, proto: Any = wire.PROTOCOL_VERSION) -> bytes:
    """A header packed by hand: any type in any field, ext tags included."""
    return msgpack.packb({**fields, "body": body, "proto": proto})


ARRAY, TUPLE, SCALAR = (msgpack.ExtType(code, b"") for code in (2, 1, 3))
VERSION_NOW = wire.PROTOCOL_VERSION
_WRONG: dict[Any, list[Any]] = {
    str: [5, 1.5, None, b"job", [], {}, True],
    int: ["0", 1.0, None, True, [], {}, b"\x00"],
    dict: [[], "peers", 0, None, b"{}"],
    list: [{}, "list", 0, None],
    bytes: ["secret", 0, None, [], {}],
}


class HostileMessages:
    """Seeded hostile messages for a daemon with ``limits``.

    ``rng`` decides everything, so a seed reproduces a run message for message.
    """

    def __init__(self, rng: np.random.Generator, limits: DaemonLimits) -> None:
        self.rng = rng
        self.limits = limits
        self._zeros = b""

    # -- control port ------------------------------------------------------------------

    def control(
        self, count: int, *, job: str | None = None, known: bool = False
    ) -> Iterator[Hostile]:
        """``count`` messages for a control port.

        ``job`` is the id of the job the daemon runs (None: idle); ``known``: they are sent by
        that job's submitter, so they leave out what a real submitter would act on (answers to
        HELLO, refusals, ABORT/FINISH of its own job).
        """
        makers: list[tuple[int, Callable[[str | None, bool], Hostile | None]]] = [
            (14, self._random_bytes),
            (12, self._truncated),
            (10, self._mutated),
            (12, self._wrong_field),
            (5, self._unknown_type),
            (6, self._not_for_worker),
            (10, self._bad_arrays),
            (4, self._deep_nesting),
            (4, self._bad_header),
            (8, self._valid_for_another_job),
            (6, self._bad_job),
        ]
        if job is not None:
            makers.append((8, self._valid_for_the_current_job))
        if not known:
            makers += [
                (4, self._hello),
                (3, self._version),
                (1, self._oversized),
                (1, self._too_many_frames),
            ]
        weights = np.array([w for w, _ in makers], dtype=float)
        made = 0
        while made < count:
            maker = makers[int(self.rng.choice(len(makers), p=weights / weights.sum()))][1]
            hostile = maker(job, known)
            if hostile is None or known and hostile.expect in (REFUSED, VERSION, ANSWERED):
                continue
            self._check_control(hostile, job)
            made += 1
            yield hostile

    def _check_control(self, hostile: Hostile, job: str | None) -> None:
        verdict = control_verdict(hostile.frames, self.limits)
        if isinstance(verdict, str):
            assert verdict == hostile.expect, (hostile.kind, verdict, hostile.expect)
        else:
            assert hostile.expect in (IGNORED, REJECTED, ANSWERED, SILENT), (hostile.kind, verdict)
            assert verdict.type != protocol.JOB or verdict["job"] != job, hostile.kind

    def _classified(self, kind: str, frames: list[bytes]) -> Hostile | None:
        """Keep frames only if the decoder refuses them (a mutation may stay valid)."""
        verdict = control_verdict(frames, self.limits)
        return Hostile(kind, frames, verdict) if isinstance(verdict, str) else None

    def _job_id(self) -> str:
        return f"fuzz-{int(self.rng.integers(1 << 32)):08x}"

    def _pick(self, items: list[Any]) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def _random_bytes(self, job: str | None, known: bool) -> Hostile | None:
        count = int(self.rng.integers(1, 5))
        frames = [self.rng.bytes(int(self.rng.integers(0, 300))) for _ in range(count)]
        return self._classified("random bytes", frames)

    def _template(self, job: str | None = None) -> list[bytes]:
        """A valid message with array frames, to cut or flip."""
        rng = self.rng
        arrays = [
            rng.standard_normal(int(rng.integers(1, 40))).astype(np.float32),
            rng.integers(0, 9, (3, 4)).astype(np.int64),
        ]
        other = self._job_id()
        choices: list[list[Any]] = [
            protocol.make(protocol.HEARTBEAT, {"a": arrays[0], "b": (arrays[1], 2)}, job=other),
            protocol.make(protocol.START, job=other, peers={"0": "tcp://127.0.0.1:1"}),
            protocol.make(protocol.ABORT, arrays, job=other, reason="fuzz"),
            protocol.make(
                protocol.JOB,
                {"weights": arrays, "blocks": {0: (arrays[0], arrays[1])}},
                **tiny_job(other, "worker"),
            ),
            protocol.make_packages(job or other, 1, [(0, (0, 1, arrays[0]))]),
        ]
        return _frames(self._pick(choices))

    def _truncated(self, job: str | None, known: bool) -> Hostile | None:
        frames = self._template()
        mode = int(self.rng.integers(5))
        if mode == 0:
            frames[0] = frames[0][: int(self.rng.integers(len(frames[0])))]
        elif mode == 1 and len(frames) > 1:
            frames = frames[:-1]
        elif mode == 2 and len(frames) > 1:
            last = frames[-1]
            frames[-1] = last[: int(self.rng.integers(len(last)))] if last else b"\x00"
        elif mode == 3:
            frames.append(self.rng.bytes(8))
        elif len(frames) > 1:
            frames = frames[1:]
        else:
            return None
        return self._classified("truncated", frames)

    def _mutated(self, job: str | None, known: bool) -> Hostile | None:
        frames = self._template()
        header = bytearray(frames[0])
        for _ in range(int(self.rng.integers(1, 5))):
            header[int(self.rng.integers(len(header)))] ^= 1 << int(self.rng.integers(8))
        frames[0] = bytes(header)
        hostile = self._classified("bit flips", frames)
        # A flipped header may still be well-formed; only malformed ones are this category
        # (another version from a known peer would draw a REFUSED its submitter acts on).
        return hostile if hostile is not None and hostile.expect == DROPPED else None

    def _valid_fields(self, type_: str) -> dict[str, Any]:
        values: dict[Any, Any] = {str: self._job_id(), int: 0, dict: {}, list: [], bytes: bytes(32)}
        fields = {}
        for name, kind in protocol._FIELDS[type_].items():
            fields[name] = values[kind if kind in values else str]
        return fields

    def _wrong_field(self, job: str | None, known: bool) -> Hostile | None:
        type_ = self._pick(sorted(t for t in protocol.CONTROL_TYPES if protocol._FIELDS[t]))
        fields = self._valid_fields(type_)
        name = self._pick(sorted(fields))
        if self.rng.random() < 0.3:
            del fields[name]
        else:
            fields[name] = self._pick(_WRONG[protocol._FIELDS[type_][name]])
        frames = [_header({"t": type_, **fields})]
        return Hostile("wrong or missing field", frames, DROPPED)

    def _unknown_type(self, job: str | None, known: bool) -> Hostile | None:
        kinds: list[Any] = [
            protocol.PACKAGE,
            "HELLO",
            "",
            "hello\x00",
            "x" * 300,
            7,
            None,
            ["hello"],
            {"t": "hello"},
            b"hello",
            1.5,
            True,
        ]
        fields = {"t": self._pick(kinds), "job": self._job_id()}
        if self.rng.random() < 0.2:
            del fields["t"]
        return Hostile("unknown type", [_header(fields)], DROPPED)

    def _not_for_worker(self, job: str | None, known: bool) -> Hostile | None:
        type_ = self._pick(_TO_SUBMITTER)
        return Hostile(
            "sent to a worker, for a submitter",
            _frames(protocol.make(type_, **self._valid_fields(type_))),
            DROPPED,
        )

    def _bad_arrays(self, job: str | None, known: bool) -> Hostile | None:
        data = self.rng.bytes(12)
        bad: list[tuple[Any, list[bytes]]] = [
            ([ARRAY, "O", 1, 3], [data]),
            ([ARRAY, ">f4", 1, 3], [data]),
            ([ARRAY, "f4", 1, 3], [data]),
            ([ARRAY, "<U3", 1, 1], [data]),
            ([ARRAY, 5, 1, 3], [data]),
            ([ARRAY, "<f4", 0, 3], [data]),
            ([ARRAY, "<f4", -1, 3], [data]),
            ([ARRAY, "<f4", 9, 3], [data]),
            ([ARRAY, "<f4", "1", 3], [data]),
            ([ARRAY, "<f4", True, 3], [data]),
            ([ARRAY, "<f4", 1, -3], [data]),
            ([ARRAY, "<f4", 1, 1 << 40, 1 << 40], [data]),
            ([ARRAY, "<f4", 1, 1 << 62], [data]),
            ([ARRAY, "<f4", 1, 3.0], [data]),
            ([ARRAY, "<f4", 1, *([1] * 65)], [data[:4]]),
            ([ARRAY, "<f4", 1, 4], [data]),  # 12 bytes for 16
            ([ARRAY, "<f4", 1], [data[:3]]),  # a 0-d array needs 4 bytes
            ([[ARRAY, "<f4", 1, 3], [ARRAY, "<f4", 1, 3]], [data]),  # a frame used twice
            ([ARRAY, "<f4", 1, 3], [data, data]),  # a frame never referenced
            ([SCALAR, "<f8", b"\x00" * 3], []),
            ([SCALAR, "<f9", b"\x00" * 8], []),
            ([SCALAR, "<f8", "eight by"], []),
            ([1, TUPLE], []),  # a tag out of place
            ({"k": ARRAY}, []),
            (msgpack.ExtType(9, b""), []),
            (msgpack.ExtType(2, b"x"), []),
            ([ARRAY, "<f4"], []),
        ]
        body, arrays = self._pick(bad)
        type_ = self._pick([protocol.HEARTBEAT, protocol.START, protocol.JOB, protocol.HELLO])
        fields = tiny_job(self._job_id()) if type_ == protocol.JOB else self._valid_fields(type_)
        if self.rng.random() < 0.3:
            fields["extra"], body = body, None  # arrays and tags in the header, not the body
        frames = [_header({"t": type_, **fields}, body), *arrays]
        return self._classified("bad array or tag", frames)

    def _deep_nesting(self, job: str | None, known: bool) -> Hostile | None:
        depth = int(self._pick([65, 100, 1_000, 5_000, 100_000]))
        opener = b"\x91" if self.rng.random() < 0.5 else b"\x81\xa1k"
        nested = opener * depth + b"\xc0"
        where = self._pick(["body", "job"])
        items = [("t", msgpack.packb(protocol.HEARTBEAT)), ("proto", msgpack.packb(VERSION_NOW))]
        items += [("job", msgpack.packb(self._job_id()))] if where == "body" else []
        items += [(where, nested)] + ([("body", b"\xc0")] if where == "job" else [])
        return Hostile(f"nested {depth} deep", [_packed_map(items)], DROPPED)

    def _bad_header(self, job: str | None, known: bool) -> Hostile | None:
        shapes: list[bytes] = [
            msgpack.packb([protocol.HELLO, 1]),
            msgpack.packb(7),
            msgpack.packb("hello"),
            msgpack.packb({"t": protocol.HELLO, "proto": VERSION_NOW}),  # no body
            msgpack.packb({1: 2, "t": protocol.HELLO, "body": None, "proto": VERSION_NOW}),
            msgpack.packb({(1, 2): 2, "t": protocol.HELLO, "body": None, "proto": VERSION_NOW}),
            msgpack.packb({"t": protocol.HELLO, "body": None, "proto": VERSION_NOW}) + b"\x00",
            b"",
            b"\xc1",  # never used in msgpack
            b"\xdf\xff\xff\xff\xff",  # a map of 4 G entries, then nothing
            b"\xdb\xff\xff\xff\xf0abc",  # a 4 GB string, 3 bytes of it
        ]
        return self._classified("header not a message map", [self._pick(shapes)])

    def _valid_for_another_job(self, job: str | None, known: bool) -> Hostile | None:
        type_ = self._pick(list(_JOB_CONTROL))
        fields = self._valid_fields(type_)
        return Hostile(f"{type_} for another job", _frames(protocol.make(type_, **fields)), IGNORED)

    def _valid_for_the_current_job(self, job: str | None, known: bool) -> Hostile | None:
        assert job is not None
        if known:  # what a real submitter may send again without consequence
            type_ = self._pick([protocol.START, protocol.HEARTBEAT])
            expect = SILENT
        else:  # an outsider who learned the job id, without the submitter's identity
            type_ = self._pick(list(_JOB_CONTROL))
            expect = IGNORED
        fields = {**self._valid_fields(type_), "job": job}
        return Hostile(
            f"{type_} for the current job", _frames(protocol.make(type_, **fields)), expect
        )

    def _hello(self, job: str | None, known: bool) -> Hostile | None:
        extra = {f"x{i}": self._pick([1, "two", None, [3], {"4": 5}]) for i in range(3)}
        return Hostile("hello", _frames(protocol.make(protocol.HELLO, **extra)), ANSWERED)

    def _bad_job(self, job: str | None, known: bool) -> Hostile | None:
        """A JOB that decodes but cannot be loaded (or arrives while the daemon is busy)."""
        fields = tiny_job(self._job_id(), "worker")
        content: Any = {"weights": []}
        flaw = int(self.rng.integers(10))
        if flaw == 0:
            fields["bundle"] = {"fuzzcodec": "def broken(:\n"}
        elif flaw == 1:
            fields["bundle"] = {"fuzzcodec": "raise RuntimeError('fuzz: raises on import')\n"}
        elif flaw == 2:
            fields["bundle"] = {"fuzzcodec": "import a_module_no_worker_has_xq\n"}
        elif flaw == 3:
            fields["codecs"] = ["nomodule.Noop"] * LAYERS
        elif flaw == 4:
            fields["codecs"] = ["fuzzcodec.Missing"] * LAYERS
        elif flaw == 5:
            fields["bundle"] = {"not-an-identifier": "x = 1\n"}
        elif flaw == 6:
            fields["bundle"] = {"fuzzcodec": 5}
        elif flaw == 7:
            fields["role"] = self._pick(["boss", "", "PS", "worker\x00"])
        elif flaw == 8:
            content = self._pick([None, [1, 2], "weights", 3])
        else:
            fields["codecs"] = [5] * LAYERS
        frames = _frames(protocol.make(protocol.JOB, content, **fields))
        return Hostile("job that cannot load", frames, REJECTED)

    def _version(self, job: str | None, known: bool) -> Hostile | None:
        type_ = self._pick([protocol.HELLO, protocol.JOB, protocol.HEARTBEAT, "nonsense"])
        now = VERSION_NOW
        proto = self._pick([0, now - 1, now + 1, 99, str(now), float(now), None, [now], True])
        fields = {"t": type_, "job": self._job_id()}
        frames = [_header(fields, proto=proto)]
        if self.rng.random() < 0.3:
            frames = [msgpack.packb({**fields, "body": None})]  # no version at all
        return Hostile("another protocol version", frames, VERSION)

    def _oversized(self, job: str | None, known: bool) -> Hostile | None:
        """A well-formed message over --max-message-mb (JOBs: over --max-job-mb)."""
        limits = self.limits
        if self.rng.random() < 0.05:  # a job over the job limit, refused before decoding
            half = np.zeros(limits.max_job_bytes // 8 + 4096, dtype=np.float32)
            header = protocol.make(protocol.JOB, [half, half], **tiny_job(self._job_id()))[0]
            if len(self._zeros) != half.nbytes:
                self._zeros = bytes(half.nbytes)  # one buffer shared by all such messages
            frames = [bytes(header), self._zeros, self._zeros]
            return Hostile("job over --max-job-mb", frames, REFUSED)
        elements = int(
            self.rng.integers(limits.max_message_bytes // 4 + 1024, limits.max_message_bytes // 2)
        )
        content = np.ones(elements, dtype=np.float32)
        type_ = self._pick([protocol.HELLO, protocol.HEARTBEAT, protocol.START, protocol.ABORT])
        fields = self._valid_fields(type_)
        frames = _frames(protocol.make(type_, content, **fields))
        return Hostile("over --max-message-mb", frames, REFUSED)

    def _too_many_frames(self, job: str | None, known: bool) -> Hostile | None:
        count = self.limits.max_frames + int(self.rng.integers(1, 64))
        return Hostile("over --max-frames", [b"\x00"] * count, REFUSED)

    # -- data port ---------------------------------------------------------------------

    def peer(self, count: int, *, job: str) -> Iterator[Hostile]:
        """``count`` messages from strangers for the data port of job ``job``: every one is
        dropped, forged packages of the job (well-formed, any sender id) included."""
        makers: list[tuple[int, Callable[[str], Hostile | None]]] = [
            (14, lambda _: self._random_bytes(None, False)),
            (12, lambda j: self._truncated(j, False)),
            (10, lambda j: self._mutated(j, False)),
            (10, self._package_of_another_job),
            (8, self._control_to_data_port),
            (10, self._package_wrong_field),
            (10, self._package_bad_arrays),
            (4, lambda _: self._deep_nesting(None, False)),
            (4, lambda _: self._bad_header(None, False)),
            (3, self._package_of_another_version),
            (2, self._package_over_limit),
            (1, self._package_over_frames),
            (6, self._package_for_an_unknown_layer),
            (12, self._forged_package),
        ]
        weights = np.array([w for w, _ in makers], dtype=float)
        made = 0
        while made < count:
            hostile = makers[int(self.rng.choice(len(makers), p=weights / weights.sum()))][1](job)
            if hostile is None:
                continue
            made += 1
            yield Hostile(hostile.kind, hostile.frames, DROPPED)  # a stranger's, whatever it is

    def _package(self, job: str, **fields: Any) -> list[bytes]:
        content = [(0, 0, self.rng.standard_normal(int(self.rng.integers(1, 50))))]
        header = {"job": job, "src": int(self.rng.integers(-2, 4)), "layers": [0], **fields}
        return _frames(protocol.make(protocol.PACKAGE, content, **header))

    def _package_of_another_job(self, job: str) -> Hostile:
        other = self._pick([self._job_id(), job + "x", job[:-1], job.upper(), ""])
        return Hostile("package of another job", self._package(other), DROPPED)

    def _control_to_data_port(self, job: str) -> Hostile:
        type_ = self._pick(sorted(protocol.CONTROL_TYPES))
        fields = {**self._valid_fields(type_), "job": job} if protocol._FIELDS[type_] else {}
        return Hostile(
            "control message on the data port", _frames(protocol.make(type_, **fields)), DROPPED
        )

    def _package_wrong_field(self, job: str) -> Hostile:
        fields: dict[str, Any] = {"t": protocol.PACKAGE, "job": job, "src": 0, "layers": [0]}
        name = self._pick(["job", "src", "layers"])
        if self.rng.random() < 0.3:
            del fields[name]
        else:
            fields[name] = self._pick(_WRONG[protocol._FIELDS[protocol.PACKAGE][name]])
        return Hostile("package with a wrong field", [_header(fields)], DROPPED)

    def _package_bad_arrays(self, job: str) -> Hostile | None:
        hostile = self._bad_arrays(None, False)
        if hostile is None:
            return None
        header = msgpack.unpackb(hostile.frames[0], strict_map_key=False, ext_hook=msgpack.ExtType)
        header.update({"t": protocol.PACKAGE, "job": job, "src": 0, "layers": [0]})
        return Hostile(
            "package with a bad array", [msgpack.packb(header), *hostile.frames[1:]], DROPPED
        )

    def _package_of_another_version(self, job: str) -> Hostile:
        fields = {"t": protocol.PACKAGE, "job": job, "src": 0, "layers": [0]}
        return Hostile(
            "package of another version",
            [
                _header(
                    fields, [(0, 0, 1.0)], proto=self._pick([0, VERSION_NOW + 1, str(VERSION_NOW)])
                )
            ],
            DROPPED,
        )

    def _package_over_limit(self, job: str) -> Hostile:
        """Over --max-message-mb in total, each frame under it (libzmq lets each through)."""
        third = self.limits.max_message_bytes // 3 // 4 + 64
        parts = [np.ones(third, dtype=np.float32) for _ in range(3)]
        frames = _frames(
            protocol.make_packages(job, 1, [(i, part) for i, part in enumerate(parts)])
        )
        return Hostile("package over --max-message-mb", frames, DROPPED)

    def _package_over_frames(self, job: str) -> Hostile:
        parts = [np.zeros(1, dtype=np.uint8)] * (self.limits.max_frames + 1)
        header = {"t": protocol.PACKAGE, "job": job, "src": 1, "layers": [0]}
        frames = _frames(wire.encode(header, parts, limits=wire.Limits(max_frames=1 << 16)))
        return Hostile("package over --max-frames", frames, DROPPED)

    def _forged_package(self, job: str) -> Hostile:
        """A well-formed package of the job, as a member would send it: NaN, huge, or plain."""
        values = self._pick([np.nan, np.inf, 1e30, 0.5])
        layer = int(self.rng.integers(LAYERS))
        content = [np.full(int(self.rng.integers(1, 50)), values, dtype=np.float32)]
        src = int(self._pick([0, 1, Parameter_Server]))
        frames = _frames(protocol.make(protocol.PACKAGE, content, job=job, src=src, layers=[layer]))
        assert peer_verdict(frames, self.limits, job) == "valid"
        return Hostile("forged package of the job", frames, DROPPED)

    def _package_for_an_unknown_layer(self, job: str) -> Hostile:
        layer = int(self._pick([-1, LAYERS, LAYERS + 1, 99, 1 << 40, -(1 << 62)]))
        return Hostile(
            "package for an unknown layer", self._package(job, layers=[layer]), UNKNOWN_LAYER
        )
