"""The psgd message encoding, used in-process (to count bytes, isolate nodes) and over ZeroMQ.

A message is a list of frames. Frame 0 is a msgpack map: the caller's header plus the reserved
keys ``"proto"`` (:data:`PROTOCOL_VERSION`) and ``"body"`` (the content tree). Frames 1..n are the
raw bytes of the numpy arrays in the content, in order of appearance, never copied.

In the tree, a msgpack array whose first item is an empty ext of one of our codes stands for
what plain msgpack would lose (:func:`encode` refuses ``ExtType`` in content, so user data never
starts with a tag)::

    [TUPLE, *items]                       a tuple (kept hashable, so it can be a dict key)
    [ARRAY, dtype, frame index, *shape]   a numpy array whose bytes are that frame
    [SCALAR, dtype, raw bytes]            a numpy scalar

:func:`decode` trusts nothing: every failure is a :class:`~psgd.errors.MalformedMessage`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from psgd.errors import EncodeError, MalformedMessage

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing import Any as Buffer  # bytes, bytearray, memoryview, zmq.Frame

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_LIMITS",
    "PROTOCOL_VERSION",
    "VersionMismatch",
    "Limits",
    "decode",
    "encode",
    "frames_size",
]

PROTOCOL_VERSION: int = 1
BODY_KEY = "body"
VERSION_KEY = "proto"

ALLOWED_DTYPES: frozenset[str] = frozenset(
    np.dtype(name).newbyteorder("<").str
    for name in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    )
)  # fmt: skip
_DTYPES = {s: np.dtype(s) for s in ALLOWED_DTYPES}
_NAMES = {dtype: s for s, dtype in _DTYPES.items()}  # '=f4' finds '<f4' on little-endian hosts


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


class _Tag:
    """What a tag ext decodes to; anywhere but first in an array the message is malformed."""

    def __init__(self, name: str) -> None:
        self.name = name


_TUPLE, _ARRAY, _SCALAR = _Tag("tuple"), _Tag("array"), _Tag("scalar")
_TAGS = {1: _TUPLE, 2: _ARRAY, 3: _SCALAR}
_TUPLE_EXT, _ARRAY_EXT, _SCALAR_EXT = (msgpack.ExtType(code, b"") for code in _TAGS)
_MAX_NDIM = 64  # numpy 2's NPY_MAXDIMS
_INT_MIN, _INT_END = -(1 << 63), 1 << 64  # the integers msgpack can carry
_LEAVES = frozenset({str, float, bool, type(None), bytes})  # sent as they are
_DECODED_LEAVES = _LEAVES | {int}
_MISSING = object()


# --------------------------------------------------------------------------- encode


class _Unsendable(Exception):
    """Internal: the reason, and the path to the culprit collected while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


class _Encoder:
    """Turns content into a msgpack-ready tree, collecting the array frames on the way."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.frames: list[Buffer] = [b""]  # frame 0, the header, is packed last
        self.nbytes = 0

    def tree(self, obj: Any, depth: int, arrays: bool) -> Any:
        kind = type(obj)
        if kind in _LEAVES:
            return obj
        if kind is np.ndarray or kind is np.memmap:
            if arrays:
                return self._array(obj)
            raise _Unsendable("arrays go in the content, not in the header")
        if kind is int:
            if _INT_MIN <= obj < _INT_END:
                return obj
            raise _Unsendable(f"integer {obj} does not fit in 64 bits")
        if kind is dict or kind is list or kind is tuple:
            if depth >= self.limits.max_depth:
                raise _Unsendable(f"nested deeper than max_depth={self.limits.max_depth}")
            if kind is dict:
                return self.mapping(obj, depth + 1, arrays)
            return self._sequence(obj, depth + 1, arrays)
        if kind is bytearray:
            return bytes(obj)
        if isinstance(obj, np.generic):
            raw = _little_endian(np.asarray(obj), "numpy scalar")
            return (_SCALAR_EXT, raw.dtype.str, raw.tobytes())
        raise _Unsendable(f"cannot send {kind}")

    def mapping(self, obj: Mapping[Any, Any], depth: int, arrays: bool) -> dict[Any, Any]:
        out = {}
        tree = self.tree
        try:
            for key, value in obj.items():
                out[key if type(key) is str else tree(key, depth, arrays)] = (
                    value if type(value) in _LEAVES else tree(value, depth, arrays)
                )
        except _Unsendable as exc:
            exc.path.append(f"[{key!r}]")
            raise
        return out

    def _sequence(self, obj: list[Any] | tuple[Any, ...], depth: int, arrays: bool) -> Any:
        items: list[Any] = []
        try:
            for value in obj:
                items.append(self.tree(value, depth, arrays))
        except _Unsendable as exc:
            exc.path.append(f"[{len(items)}]")
            raise
        return (_TUPLE_EXT, *items) if type(obj) is tuple else items

    def _array(self, array: np.ndarray) -> list[Any]:
        size = array.size
        if size > self.limits.max_array_elements:
            raise _Unsendable(
                f"array of {size} elements, max_array_elements={self.limits.max_array_elements}"
            )
        name = _NAMES.get(array.dtype)
        if name is None or not array.flags.c_contiguous:
            array = _little_endian(array, "array")
            name = _NAMES[array.dtype]
        self.frames.append(array.data.cast("B") if size else b"")
        self.nbytes += array.nbytes
        return [_ARRAY_EXT, name, len(self.frames) - 1, *array.shape]


def _little_endian(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as C-contiguous little-endian data of an allowed dtype, copied only if not."""
    dtype = array.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.str not in ALLOWED_DTYPES:
        raise _Unsendable(
            f"cannot send {what} of dtype {array.dtype} "
            "(allowed: bool, int8-64, uint8-64, float16-64, complex64/128)"
        )
    if dtype is not array.dtype:
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


def encode(
    header: Mapping[str, Any], content: Any = None, *, limits: Limits = DEFAULT_LIMITS
) -> list[Buffer]:
    """Encode a header and a content tree as frames that share the arrays' memory.

    Parameters
    ----------
    header : Mapping
        Plain values: str, int, float, bool, None, bytes, and lists, tuples and dicts of them.
        The keys ``"body"`` and ``"proto"`` are reserved.
    content : Any
        Any nesting of list, tuple and dict holding int, float, bool, None, str, bytes,
        bytearray (received as bytes), numpy scalars, and numpy arrays of :data:`ALLOWED_DTYPES`
        (non-contiguous or big-endian ones are sent as C-contiguous little-endian copies).
    limits : Limits
        The sender fails early on what a receiver with these limits would refuse.

    Returns
    -------
    list
        ``[header bytes, memoryview of each array, ...]``, ready for ``send_multipart(copy=False)``.
        The arrays must not change until the frames are sent.

    Raises
    ------
    EncodeError
        Naming the culprit's path, e.g. ``content[1]['w']: cannot send <class 'set'>``.
    """
    if not isinstance(header, Mapping):
        raise EncodeError(f"header: expected a mapping, got {type(header)}")
    for reserved in (BODY_KEY, VERSION_KEY):
        if reserved in header:
            raise EncodeError(f"header[{reserved!r}]: key is reserved by psgd.wire")
    encoder = _Encoder(limits)
    root = "header"
    try:
        tree = encoder.mapping(header, 0, arrays=False)
        root = "content"
        tree[BODY_KEY] = encoder.tree(content, 0, arrays=True)
    except _Unsendable as exc:
        raise EncodeError(f"{root}{''.join(reversed(exc.path))}: {exc.reason}") from None
    tree[VERSION_KEY] = PROTOCOL_VERSION
    try:
        head = msgpack.packb(tree)
    except Exception as exc:  # e.g. a str holding lone surrogates
        raise EncodeError(f"message cannot be packed: {type(exc).__name__}: {exc}") from exc
    frames = encoder.frames
    frames[0] = head
    if len(head) > limits.max_header_bytes:
        raise EncodeError(
            f"header packs to {len(head)} bytes, max_header_bytes={limits.max_header_bytes} "
            "(send bulk data as numpy arrays)"
        )
    if len(frames) > limits.max_frames:
        raise EncodeError(f"content holds {len(frames) - 1} arrays, max_frames={limits.max_frames}")
    if len(head) + encoder.nbytes > limits.max_message_bytes:
        raise EncodeError(
            f"message is {len(head) + encoder.nbytes} bytes, "
            f"max_message_bytes={limits.max_message_bytes}"
        )
    return frames


def frames_size(frames: Sequence[Buffer]) -> int:
    """Total bytes of ``frames`` on the wire: the sum of the frame lengths."""
    return sum(memoryview(frame).nbytes for frame in frames)


# --------------------------------------------------------------------------- decode


class _Decoder:
    """msgpack hooks: tags in, tuples and zero-copy array views out, each frame used once."""

    def __init__(self, views: list[memoryview], limits: Limits) -> None:
        self.views = views
        self.most = limits.max_array_elements
        self.used = bytearray(len(views))
        self.refs = 0

    def ext(self, code: int, data: bytes) -> _Tag:
        tag = _TAGS.get(code)
        if tag is None or data:
            raise MalformedMessage(f"unknown ext type {code}")
        return tag

    def tagged(self, items: list[Any]) -> Any:
        head = items[0] if items else None
        if type(head) is not _Tag:
            return items
        if head is _TUPLE:
            return tuple(items[1:])
        if head is _ARRAY:
            return self._array(items)
        dtype = _DTYPES.get(items[1]) if len(items) == 3 and type(items[1]) is str else None
        if dtype is None or type(items[2]) is not bytes:
            raise MalformedMessage(f"numpy scalar {items[1:]!r:.60} is not [allowed dtype, bytes]")
        if len(items[2]) != dtype.itemsize:
            raise MalformedMessage(f"numpy scalar {items[1]} has {len(items[2])} bytes")
        return np.frombuffer(items[2], dtype)[0]

    def _array(self, items: list[Any]) -> np.ndarray:
        if not 3 <= len(items) <= 3 + _MAX_NDIM:
            raise MalformedMessage("array reference is not [tag, dtype, frame, *shape]")
        _, name, index, *shape = items
        dtype = _DTYPES.get(name) if type(name) is str else None
        if dtype is None:
            raise MalformedMessage(f"dtype {name!r:.40} is not allowed")
        most = self.most
        count = 1
        for n in shape:
            if type(n) is not int or not 0 <= n <= most:
                raise MalformedMessage(
                    f"array shape {shape!r:.60}: dims must be ints in 0..max_array_elements={most}"
                )
            count *= n
        if count > most:
            raise MalformedMessage(f"array shape {shape!r:.60} exceeds max_array_elements={most}")
        if type(index) is not int or not 0 < index < len(self.views):
            raise MalformedMessage(
                f"array in frame {index!r:.20}, message has {len(self.views)} frames"
            )
        if self.used[index]:
            raise MalformedMessage(f"frame {index} is referenced twice")
        self.used[index] = 1
        self.refs += 1
        view = self.views[index]
        if view.nbytes != count * dtype.itemsize:
            raise MalformedMessage(
                f"frame {index} has {view.nbytes} bytes, "
                f"array {name}{tuple(shape)} needs {count * dtype.itemsize}"
            )
        return np.ndarray(shape, dtype, view)  # a view: read-only if the frame is


def decode(frames: Sequence[Buffer], limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], Any]:
    """Decode frames made by :func:`encode`, validating everything.

    Parameters
    ----------
    frames : Sequence
        bytes, bytearray, memoryview or zmq.Frame objects.
    limits : Limits
        Bounds on frame count, sizes, nesting depth and array elements.

    Returns
    -------
    header : dict
        The header as sent (without the reserved keys).
    content : Any
        The content as sent. Arrays are zero-copy views of the frames, read-only when the frame
        is (bytes); ``np.copyto`` them into your own buffers to keep the values.

    Raises
    ------
    MalformedMessage
        For any failure whatsoever, with a short reason.
    """
    try:
        count = len(frames)
    except TypeError:
        raise MalformedMessage(f"expected a sequence of frames, got {type(frames)}") from None
    if count == 0:
        raise MalformedMessage("message has no frames")
    if count > limits.max_frames:
        raise MalformedMessage(f"message has {count} frames, max_frames={limits.max_frames}")
    views, total = _byte_views(frames)
    if total > limits.max_message_bytes:
        raise MalformedMessage(
            f"message is {total} bytes, max_message_bytes={limits.max_message_bytes}"
        )
    if views[0].nbytes > limits.max_header_bytes:
        raise MalformedMessage(
            f"header is {views[0].nbytes} bytes, max_header_bytes={limits.max_header_bytes}"
        )
    decoder = _Decoder(views, limits)
    try:
        message = msgpack.unpackb(
            views[0], ext_hook=decoder.ext, list_hook=decoder.tagged, strict_map_key=False
        )
    except MalformedMessage:
        raise
    except Exception as exc:  # hostile bytes make msgpack raise many types
        reason = f"{type(exc).__name__}: {exc}"
        raise MalformedMessage(f"header does not decode: {reason:.100}") from exc
    if type(message) is not dict:
        raise MalformedMessage(f"header is a {type(message).__name__}, expected a map")
    if decoder.refs != count - 1:
        raise MalformedMessage(f"{count - 1 - decoder.refs} of {count - 1} frames not referenced")
    body = message.pop(BODY_KEY, _MISSING)
    if body is _MISSING:
        raise MalformedMessage(f"header has no {BODY_KEY!r}")
    try:
        for key, value in message.items():
            if type(key) is not str or type(value) not in _DECODED_LEAVES:
                _check_tree(key, 0, limits.max_depth, arrays=False)
                _check_tree(value, 0, limits.max_depth, arrays=False)
        _check_tree(body, 0, limits.max_depth, arrays=True)
    except RecursionError:  # only with a max_depth near Python's recursion limit
        raise MalformedMessage("nested too deep to check") from None
    version = message.pop(VERSION_KEY, None)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise VersionMismatch(version, message.get("t"))
    return message, body


def _byte_views(frames: Sequence[Buffer]) -> tuple[list[memoryview], int]:
    """Flat byte views of the frames (for the length checks and np.ndarray), and their total."""
    views = []
    total = 0
    for index, frame in enumerate(frames):
        try:
            view = memoryview(frame)
            if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
                view = view.cast("B") if view.nbytes else memoryview(b"")
        except Exception as exc:
            raise MalformedMessage(f"frame {index} is not a contiguous buffer: {exc}") from None
        views.append(view)
        total += view.nbytes
    return views, total


def _check_tree(obj: Any, depth: int, max_depth: int, arrays: bool) -> None:
    """Refuse what msgpack may produce from hostile bytes but :func:`encode` never sends."""
    kind = type(obj)
    if kind in _DECODED_LEAVES:
        return
    if kind is list or kind is tuple or kind is dict:
        if depth >= max_depth:
            raise MalformedMessage(f"nested deeper than max_depth={max_depth}")
        if kind is dict:
            for key, value in obj.items():
                _check_tree(key, depth + 1, max_depth, arrays)
                _check_tree(value, depth + 1, max_depth, arrays)
        else:
            for item in obj:
                if type(item) is not np.ndarray or not arrays:  # arrays: the common case
                    _check_tree(item, depth + 1, max_depth, arrays)
    elif kind is np.ndarray:
        if not arrays:
            raise MalformedMessage("array outside the message body")
    elif kind is _Tag:
        raise MalformedMessage(f"{obj.name} tag out of place")
    elif not isinstance(obj, np.generic):
        raise MalformedMessage(f"unexpected {kind.__name__} in message")
