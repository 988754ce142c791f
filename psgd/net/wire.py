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
    [OBJECT, class key, state]            an object of one of the job's codec classes
                                          (``psgd.net.wire_objects``; content only)

:func:`decode` trusts nothing: every failure is a :class:`~psgd.errors.MalformedMessage`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from psgd.errors import EncodeError
from psgd.net import wire_format as fmt
from psgd.net.wire_decode import decode
from psgd.net.wire_format import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Limits,
    VersionMismatch,
)

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing import Any as Buffer  # bytes, bytearray, memoryview, zmq.Frame

if TYPE_CHECKING:
    from psgd.net.wire_objects import ContentClasses

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


class _Unsendable(Exception):
    """Internal: the reason, and the path to the culprit collected while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


class _Encoder:
    """Turns content into a msgpack-ready tree, collecting the array frames on the way."""

    def __init__(self, limits: fmt.Limits, classes: ContentClasses | None = None) -> None:
        self.limits = limits
        self.frames: list[Buffer] = [b""]  # frame 0, the header, is packed last
        self.nbytes = 0
        self.classes = classes
        self.in_key = 0  # > 0 while encoding a dict key: no objects there

    def tree(self, obj: Any, depth: int, arrays: bool) -> Any:
        kind = type(obj)
        if kind in fmt.LEAVES:
            return obj
        if kind is np.ndarray or kind is np.memmap:
            if arrays:
                return self._array(obj)
            raise _Unsendable("arrays go in the content, not in the header")
        if kind is int:
            if fmt.INT_MIN <= obj < fmt.INT_END:
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
            return (fmt.SCALAR_EXT, raw.dtype.str, raw.tobytes())
        key = self.classes.key_for(kind) if self.classes is not None else None
        if key is None:
            raise _Unsendable(f"cannot send {kind}")
        return self._object(obj, key, depth, arrays)

    def _object(self, obj: Any, key: str, depth: int, arrays: bool) -> Any:
        if not arrays or self.in_key:
            raise _Unsendable(f"an object of {key} goes in the content, not in a header or key")
        if depth >= self.limits.max_depth:
            raise _Unsendable(f"nested deeper than max_depth={self.limits.max_depth}")
        assert self.classes is not None
        try:
            state = self.classes.state_of(obj)
        except Exception as exc:
            raise _Unsendable(f"cannot take the state of {key}: {exc}") from None
        return (fmt.OBJECT_EXT, key, self.tree(state, depth + 1, arrays))

    def mapping(self, obj: Mapping[Any, Any], depth: int, arrays: bool) -> dict[Any, Any]:
        out = {}
        tree = self.tree
        try:
            for key, value in obj.items():
                out[key if type(key) is str else self._key(key, depth, arrays)] = (
                    value if type(value) in fmt.LEAVES else tree(value, depth, arrays)
                )
        except _Unsendable as exc:
            exc.path.append(f"[{key!r}]")
            raise
        return out

    def _key(self, key: Any, depth: int, arrays: bool) -> Any:
        self.in_key += 1
        try:
            return self.tree(key, depth, arrays)
        finally:
            self.in_key -= 1

    def _sequence(self, obj: list[Any] | tuple[Any, ...], depth: int, arrays: bool) -> Any:
        items: list[Any] = []
        try:
            for value in obj:
                items.append(self.tree(value, depth, arrays))
        except _Unsendable as exc:
            exc.path.append(f"[{len(items)}]")
            raise
        return (fmt.TUPLE_EXT, *items) if type(obj) is tuple else items

    def _array(self, array: np.ndarray) -> list[Any]:
        size = array.size
        if size > self.limits.max_array_elements:
            raise _Unsendable(
                f"array of {size} elements, max_array_elements={self.limits.max_array_elements}"
            )
        name = fmt.NAMES.get(array.dtype)
        if name is None or not array.flags.c_contiguous:
            array = _little_endian(array, "array")
            name = fmt.NAMES[array.dtype]
        self.frames.append(array.data.cast("B") if size else b"")
        self.nbytes += array.nbytes
        return [fmt.ARRAY_EXT, name, len(self.frames) - 1, *array.shape]


def _little_endian(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as C-contiguous little-endian data of an allowed dtype, copied only if not."""
    dtype = array.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.str not in fmt.ALLOWED_DTYPES:
        raise _Unsendable(
            f"cannot send {what} of dtype {array.dtype} "
            "(allowed: bool, int8-64, uint8-64, float16-64, complex64/128)"
        )
    if dtype is not array.dtype:
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


def encode(
    header: Mapping[str, Any],
    content: Any = None,
    *,
    limits: fmt.Limits = fmt.DEFAULT_LIMITS,
    classes: ContentClasses | None = None,
) -> list[Buffer]:
    """Encode a header and a content tree as frames that share the arrays' memory.

    Parameters
    ----------
    header : Mapping
        Plain values: str, int, float, bool, None, bytes, and lists, tuples and dicts of them.
        The keys ``"body"`` and ``"proto"`` are reserved.
    content : Any
        Any nesting of list, tuple and dict holding int, float, bool, None, str, bytes,
        bytearray (received as bytes), numpy scalars, and numpy arrays of :data:`fmt.ALLOWED_DTYPES`
        (non-contiguous or big-endian ones are sent as C-contiguous little-endian copies).
    limits : fmt.Limits
        The sender fails early on what a receiver with these limits would refuse.
    classes : ContentClasses, optional
        The job's codec classes whose objects may be sent in the content, as their state.

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
    for reserved in (fmt.BODY_KEY, fmt.VERSION_KEY):
        if reserved in header:
            raise EncodeError(f"header[{reserved!r}]: key is reserved by psgd.net.wire")
    encoder = _Encoder(limits, classes)
    root = "header"
    try:
        tree = encoder.mapping(header, 0, arrays=False)
        root = "content"
        tree[fmt.BODY_KEY] = encoder.tree(content, 0, arrays=True)
    except _Unsendable as exc:
        raise EncodeError(f"{root}{''.join(reversed(exc.path))}: {exc.reason}") from None
    tree[fmt.VERSION_KEY] = fmt.PROTOCOL_VERSION
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
