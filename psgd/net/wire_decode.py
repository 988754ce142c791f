"""Decoding psgd messages: trusts nothing, every failure is a ``MalformedMessage``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from psgd.errors import MalformedMessage
from psgd.net import wire_format as fmt

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing import Any as Buffer  # bytes, bytearray, memoryview, zmq.Frame

if TYPE_CHECKING:
    from psgd.net.wire_objects import ContentClasses

__all__ = ["decode"]


class _Pending:
    """An object's class key and state, decoded; built once the whole tree is checked."""

    __slots__ = ("key", "state")

    def __init__(self, key: str, state: Any) -> None:
        self.key = key
        self.state = state


class _Decoder:
    """msgpack hooks: tags in, tuples and zero-copy array views out, each frame used once."""

    def __init__(
        self, views: list[memoryview], limits: fmt.Limits, classes: ContentClasses | None
    ) -> None:
        self.views = views
        self.most = limits.max_array_elements
        self.used = bytearray(len(views))
        self.refs = 0
        self.classes = classes
        self.objects = 0

    def ext(self, code: int, data: bytes) -> fmt.Tag:
        tag = fmt.TAGS.get(code)
        if tag is None or data:
            raise MalformedMessage(f"unknown ext type {code}")
        return tag

    def tagged(self, items: list[Any]) -> Any:
        head = items[0] if items else None
        if type(head) is not fmt.Tag:
            return items
        if head is fmt.TUPLE:
            return tuple(items[1:])
        if head is fmt.ARRAY:
            return self._array(items)
        if head is fmt.OBJECT:
            return self._object(items)
        dtype = fmt.DTYPES.get(items[1]) if len(items) == 3 and type(items[1]) is str else None
        if dtype is None or type(items[2]) is not bytes:
            raise MalformedMessage(f"numpy scalar {items[1:]!r:.60} is not [allowed dtype, bytes]")
        if len(items[2]) != dtype.itemsize:
            raise MalformedMessage(f"numpy scalar {items[1]} has {len(items[2])} bytes")
        return np.frombuffer(items[2], dtype)[0]

    def _object(self, items: list[Any]) -> _Pending:
        if self.classes is None:
            raise MalformedMessage("objects are not accepted in this message")
        if len(items) != 3 or type(items[1]) is not str:
            raise MalformedMessage("object is not [tag, class key, state]")
        if items[1] not in self.classes.by_key:
            raise MalformedMessage(f"object of class {items[1]!r:.80} is not one of the job's")
        self.objects += 1
        return _Pending(items[1], items[2])

    def _array(self, items: list[Any]) -> np.ndarray:
        if not 3 <= len(items) <= 3 + fmt.MAX_NDIM:
            raise MalformedMessage("array reference is not [tag, dtype, frame, *shape]")
        _, name, index, *shape = items
        dtype = fmt.DTYPES.get(name) if type(name) is str else None
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


def decode(
    frames: Sequence[Buffer],
    limits: fmt.Limits = fmt.DEFAULT_LIMITS,
    classes: ContentClasses | None = None,
) -> tuple[dict[str, Any], Any]:
    """Decode frames made by :func:`encode`, validating everything.

    Parameters
    ----------
    frames : Sequence
        bytes, bytearray, memoryview or zmq.Frame objects.
    limits : fmt.Limits
        Bounds on frame count, sizes, nesting depth and array elements.
    classes : ContentClasses, optional
        The job's codec classes: objects of these (and only these) may be in the content,
        rebuilt from their state once the whole tree is checked. Without it, none may.

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
    decoder = _Decoder(views, limits, classes)
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
    body = message.pop(fmt.BODY_KEY, fmt.MISSING)
    if body is fmt.MISSING:
        raise MalformedMessage(f"header has no {fmt.BODY_KEY!r}")
    try:
        for key, value in message.items():
            if type(key) is not str or type(value) not in fmt.DECODED_LEAVES:
                _check_tree(key, 0, limits.max_depth, arrays=False)
                _check_tree(value, 0, limits.max_depth, arrays=False)
        _check_tree(body, 0, limits.max_depth, arrays=True)
    except RecursionError:  # only with a max_depth near Python's recursion limit
        raise MalformedMessage("nested too deep to check") from None
    if decoder.objects:
        assert classes is not None
        body = _build(body, classes)
    version = message.pop(fmt.VERSION_KEY, None)
    if type(version) is not int or version != fmt.PROTOCOL_VERSION:
        raise fmt.VersionMismatch(version, message.get("t"))
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
    if kind in fmt.DECODED_LEAVES:
        return
    if kind is list or kind is tuple or kind is dict:
        if depth >= max_depth:
            raise MalformedMessage(f"nested deeper than max_depth={max_depth}")
        if kind is dict:
            for key, value in obj.items():
                _check_tree(key, depth + 1, max_depth, arrays=False)
                _check_tree(value, depth + 1, max_depth, arrays)
        else:
            for item in obj:
                if type(item) is not np.ndarray or not arrays:  # arrays: the common case
                    _check_tree(item, depth + 1, max_depth, arrays)
    elif kind is np.ndarray:
        if not arrays:
            raise MalformedMessage("array outside the message body")
    elif kind is _Pending:
        if not arrays:
            raise MalformedMessage("object outside the message body")
        if depth >= max_depth:
            raise MalformedMessage(f"nested deeper than max_depth={max_depth}")
        _check_tree(obj.state, depth + 1, max_depth, arrays)
    elif kind is fmt.Tag:
        raise MalformedMessage(f"{obj.name} tag out of place")
    elif not isinstance(obj, np.generic):
        raise MalformedMessage(f"unexpected {kind.__name__} in message")


def _build(obj: Any, classes: ContentClasses) -> Any:
    """``obj`` with every pending object built, innermost first (the tree is checked)."""
    kind = type(obj)
    if kind is _Pending:
        state = _build(obj.state, classes)
        try:
            return classes.rebuild(obj.key, state)
        except MalformedMessage:
            raise
        except Exception as exc:  # the class's __setstate__ on hostile state
            raise MalformedMessage(
                f"object of {obj.key}: restoring its state raised {type(exc).__name__}: {exc}"
            ) from None
    if kind is list:
        for index, item in enumerate(obj):
            if type(item) is not np.ndarray:
                obj[index] = _build(item, classes)
        return obj
    if kind is dict:
        for key, value in obj.items():
            obj[key] = _build(value, classes)
        return obj
    if kind is tuple:
        return tuple(_build(item, classes) for item in obj)
    return obj
