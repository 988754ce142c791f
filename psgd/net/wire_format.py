"""The psgd wire format's constants: protocol version, reserved keys, dtypes, tags, limits.

Shared by the encoder (:mod:`psgd.net.wire`) and the decoder (:mod:`psgd.net.wire_decode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from psgd.errors import MalformedMessage

#: 2: JOB carries the job's secret; data-plane senders are tied to their connections.
#: 3: round jobs on daemons: pools of virtual clients (roles ``pool`` and ``round-ps``, ROUTE
#: envelopes on the data plane, ROUND reports to the submitter).
PROTOCOL_VERSION: int = 3
BODY_KEY = "body"
VERSION_KEY = "proto"

ALLOWED_DTYPES: frozenset[str] = frozenset(
    np.dtype(name).newbyteorder("<").str
    for name in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    )
)  # fmt: skip
DTYPES = {s: np.dtype(s) for s in ALLOWED_DTYPES}
NAMES = {dtype: s for s, dtype in DTYPES.items()}  # '=f4' finds '<f4' on little-endian hosts


class VersionMismatch(MalformedMessage):
    """A well-formed header of another protocol version (``theirs``; ``kind``: its type)."""

    def __init__(self, theirs: Any, kind: Any) -> None:
        super().__init__(f"protocol version {theirs!r:.20}, this side speaks {PROTOCOL_VERSION}")
        self.theirs = theirs
        self.kind = kind


@dataclass(frozen=True)
class Limits:
    """Bounds a decoded message must respect (a hostile peer chooses every size)."""

    max_frames: int = 4096
    max_message_bytes: int = 1 << 30  # sum of all frame lengths
    max_header_bytes: int = 16 << 20
    max_depth: int = 64  # nesting depth of the content structure
    max_array_elements: int = 1 << 28


DEFAULT_LIMITS = Limits()


class Tag:
    """What a tag ext decodes to; anywhere but first in an array the message is malformed."""

    def __init__(self, name: str) -> None:
        self.name = name


TUPLE, ARRAY, SCALAR, OBJECT = Tag("tuple"), Tag("array"), Tag("scalar"), Tag("object")
TAGS = {1: TUPLE, 2: ARRAY, 3: SCALAR, 4: OBJECT}
TUPLE_EXT, ARRAY_EXT, SCALAR_EXT, OBJECT_EXT = (msgpack.ExtType(code, b"") for code in TAGS)
MAX_NDIM = 64  # numpy 2's NPY_MAXDIMS
INT_MIN, INT_END = -(1 << 63), 1 << 64  # the integers msgpack can carry
LEAVES = frozenset({str, float, bool, type(None), bytes})  # sent as they are
DECODED_LEAVES = LEAVES | {int}
MISSING = object()
