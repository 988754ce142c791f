"""The closed set of message types between submitter, daemons and peers, in one place.

Every message is ``psgd.net.wire``-encoded: a msgpack header with ``t`` (type) plus fields (wire
adds and checks the protocol version), and the content's arrays as extra frames.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psgd.errors import MalformedMessage
from psgd.net import wire, wire_objects

__all__ = [
    "CONTROL_TYPES",
    "PEER_TYPES",
    "PROTOCOL_VERSION",
    "Message",
    "check_fields",
    "make",
    "parse",
]

PROTOCOL_VERSION = wire.PROTOCOL_VERSION

#: Submitter -> daemon.
HELLO = "hello"  # {} -> HELLO_REPLY {state, pid, limits}: never a job id (anyone may ask)
#: {job, node, role, spec, trainer, node_samples, bundle, codecs, secret}
#: + content {weights, blocks, test}; ``secret``: the job's, only its members receive it.
JOB = "job"
START = "start"  # {job, peers}
#: {job}; both ways while a job runs; a daemon's adds dropped (int), and in a round job, while
#: its loop has nothing to do, quiet: [sent, arrived, what it waits for] (psgd.net.routing)
HEARTBEAT = "heartbeat"
FINISH = "finish"  # {job}: every node trained, stop serving peers and report
#: {job, round} + content {weights}: a round job's pool evaluates its clients on that model
EVAL = "eval"
ABORT = "abort"  # {job, reason}

#: Daemon -> submitter.
HELLO_REPLY = "hello_reply"
ACCEPTED = "accepted"  # {job, node, data}: data = the node's peer address
REJECTED = "rejected"  # {job, node, reason}
PROGRESS = "progress"  # {job, event}
TRAINED = "trained"  # {job, node}
CHECKPOINT = "checkpoint"  # {job, node, epoch} + content: the node's state (psgd.train.checkpoint)
DONE = "done"  # {job, node, report, log} + content {weights}
FAILED = "failed"  # {job, node, error, log}, optional diverged: True
#: {job, round, stats} + content {weights}: a round-ps daemon finished a round (the global model)
ROUND = "round"
#: {job, node, round} + content {accuracy, loss}: a pool's clients' figures for an EVAL
EVALUATED = "evaluated"
REFUSED = "refused"  # {reason}: protocol versions differ
#: {job, epoch} + content {weights}: the PS daemon's model once every worker's mark of that
#: epoch arrived (``psgd.train.server_model``)
SERVER_MODEL = "server_model"

#: Peer -> peer.
PACKAGE = "pkg"  # {job, src, layers: [int]} + content: one codec content per layer
#: {job, to: [int]}, optional round: int, run: list; the frames after it are one PACKAGE for the
#: virtual nodes ``to`` (round jobs on daemons: ``psgd.net.routing``)
ROUTE = "route"

CONTROL_TYPES = frozenset(
    {HELLO, JOB, START, HEARTBEAT, FINISH, ABORT, HELLO_REPLY, ACCEPTED, REJECTED, PROGRESS,
     TRAINED, CHECKPOINT, DONE, FAILED, REFUSED, ROUND, EVAL, EVALUATED, SERVER_MODEL}
)  # fmt: skip
PEER_TYPES = frozenset({PACKAGE})
ROUTE_TYPES = frozenset({ROUTE})

#: Required header fields and their types, by message type.
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    HELLO: {},
    HELLO_REPLY: {"state": str, "pid": int},
    JOB: {
        "job": str,
        "node": int,
        "role": str,
        "spec": dict,
        "trainer": dict,
        "node_samples": list,
        "bundle": dict,
        "codecs": list,
        "secret": bytes,
    },
    START: {"job": str, "peers": dict},
    HEARTBEAT: {"job": str},
    FINISH: {"job": str},
    ABORT: {"job": str, "reason": str},
    ACCEPTED: {"job": str, "node": int, "data": str},
    REJECTED: {"job": str, "node": int, "reason": str},
    PROGRESS: {"job": str, "event": dict},
    TRAINED: {"job": str, "node": int},
    CHECKPOINT: {"job": str, "node": int, "epoch": int},
    DONE: {"job": str, "node": int, "report": dict, "log": str},
    FAILED: {"job": str, "node": int, "error": str, "log": str},
    REFUSED: {"reason": str},
    ROUND: {"job": str, "round": int, "stats": dict},
    EVAL: {"job": str, "round": int},
    EVALUATED: {"job": str, "node": int, "round": int},
    SERVER_MODEL: {"job": str, "epoch": int},
    PACKAGE: {"job": str, "src": int, "layers": list},
    ROUTE: {"job": str, "to": list},
}


#: Job ids name folders on workers: letters, digits, '.', '_' and '-' only, no leading dot.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Message:
    """A decoded message: its type, header fields and content."""

    __slots__ = ("content", "fields", "type")

    def __init__(self, type_: str, fields: dict[str, Any], content: Any) -> None:
        self.type = type_
        self.fields = fields
        self.content = content

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __repr__(self) -> str:
        return f"Message({self.type!r}, job={self.fields.get('job')!r})"


def make(type_: str, content: Any = None, **fields: Any) -> list[Any]:
    """Encode a message of ``type_`` into frames."""
    header = {"t": type_, **fields}
    return wire.encode(header, content)


def check_fields(type_: str, fields: dict[str, Any]) -> None:
    """Raise ``MalformedMessage`` unless ``fields`` has what a ``type_`` message needs."""
    expected = _FIELDS.get(type_)
    if expected is None:
        raise MalformedMessage(f"unknown message type {type_!r}")
    for name, kind in expected.items():
        value = fields.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise MalformedMessage(f"{type_}: field {name!r} missing or not {kind}")
    if "job" in expected and not _JOB_ID.fullmatch(fields["job"]):
        raise MalformedMessage(f"{type_}: job id {fields['job']!r:.40} is not a plain name")


def make_packages(job: str, src: int, items: Sequence[tuple[int, Any]]) -> list[Any]:
    """One peer message carrying ``(layer, content)`` items (one message per step, not six).

    Objects of the running job's codec classes travel as their state (``wire_objects``).
    """
    header = {"t": PACKAGE, "job": job, "src": src, "layers": [layer for layer, _ in items]}
    contents = [content for _, content in items]
    return wire.encode(header, contents, classes=wire_objects.active())


def split_packages(message: Message, nbytes: int) -> list[tuple[int, int, Any, int]]:
    """``(sender, layer, content, nbytes)`` of each item of a PACKAGE message."""
    layers, contents = message["layers"], message.content
    if (
        not isinstance(contents, list)
        or len(contents) != len(layers)
        or not layers
        or not all(type(layer) is int for layer in layers)
    ):
        raise MalformedMessage("pkg: layers and contents do not match")
    share = nbytes // len(layers)
    return [
        (message["src"], layer, item, share) for layer, item in zip(layers, contents, strict=True)
    ]


def parse(
    frames: list[Any], allowed: frozenset[str], limits: wire.Limits = wire.DEFAULT_LIMITS
) -> Message:
    """Decode and validate frames into a ``Message`` of one of the ``allowed`` types.

    Another protocol version raises ``wire.VersionMismatch``. Only peer packages may hold
    objects, and only of the running job's codec classes (``wire_objects.active()``).
    """
    classes = wire_objects.active() if PACKAGE in allowed else None
    header, content = wire.decode(frames, limits, classes)
    type_ = header.pop("t", None)
    if not isinstance(type_, str) or type_ not in allowed:
        raise MalformedMessage(f"unexpected message type {type_!r:.40}")
    check_fields(type_, header)
    return Message(type_, header, content)
