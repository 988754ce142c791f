"""Objects of a job's own codec classes as wire content: they travel as their state.

Parallel-SGD codecs send instances of small classes of their own (a quantized package holding
arrays and scalars, say). psgd never pickles; instead an object of a class defined in the job's
codec modules (the codec classes' modules, the sibling modules they use from their folders,
and psgd's built-in codecs) is sent as ``[OBJECT tag, key, state]``: ``key`` names the class
(``"module_stem.QualName"``) and ``state`` is ``obj.__getstate__()`` when the class defines
one, else ``obj.__dict__``, itself encoded under the same allow-list and limits as any content.
The receiver looks ``key`` up in *its own* registry of the job's classes (never an import by a
name taken from the message), builds the object with ``cls.__new__(cls)`` and restores it
with ``__setstate__(state)`` or by updating ``__dict__``. Any other class is refused.

A registry is active only while a job runs (:func:`job_classes`), and only peer packages
(``psgd.net.protocol.PACKAGE``) may hold objects: control messages never do.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psgd.errors import MalformedMessage
from psgd.loader import BUILTIN_CODECS_DIR

__all__ = ["ContentClasses", "active", "job_classes", "set_active"]

#: Class attributes that are never part of a job's content classes.
_SKIP_MODULES = frozenset({"builtins", "abc", "typing", "psgd.codec"})


class ContentClasses:
    """The classes whose objects may travel as content in one job, by key.

    Parameters
    ----------
    classes:
        ``{key: class}``; keys are ``"module_stem.QualName"`` on every node of the job.
    """

    def __init__(self, classes: dict[str, type]) -> None:
        self.by_key = dict(classes)
        self.keys = {cls: key for key, cls in classes.items()}

    def __len__(self) -> int:
        return len(self.by_key)

    def __repr__(self) -> str:
        return f"ContentClasses({sorted(self.by_key)})"

    @classmethod
    def for_codecs(cls, codecs: Iterable[type]) -> ContentClasses:
        """Every class defined in the modules of ``codecs`` and the codec modules they use.

        A module counts as codec code when it is the module of one of ``codecs`` (or of one
        of their base classes) or lives in one of their folders or in psgd's built-in codecs
        folder; its classes are found through the namespaces the codec modules reach.
        """
        walker = _Walker()
        for codec in codecs:
            for base in codec.__mro__:
                if base.__module__ not in _SKIP_MODULES and base is not object:
                    walker.add_root(base)
        return cls(walker.run())

    def key_for(self, kind: type) -> str | None:
        """The key of ``kind``, or None when its objects may not be sent."""
        return self.keys.get(kind)

    def state_of(self, obj: Any) -> Any:
        """What is sent for ``obj``: its ``__getstate__()`` if its class defines one, else
        its ``__dict__`` (a class with ``__slots__`` and no ``__getstate__`` cannot be sent)."""
        kind = type(obj)
        if _defines_getstate(kind):
            return obj.__getstate__()
        state = getattr(obj, "__dict__", None)
        if state is None:
            raise TypeError(f"{kind.__qualname__} has no __dict__: define __getstate__")
        return state

    def rebuild(self, key: Any, state: Any) -> Any:
        """An object of the class ``key`` names, restored from ``state`` (already decoded
        and checked). ``MalformedMessage`` when ``key`` is not one of this job's classes."""
        kind = self.by_key.get(key) if type(key) is str else None
        if kind is None:
            raise MalformedMessage(f"object of class {key!r:.80} is not one of the job's codecs'")
        maker: Any = kind
        obj = maker.__new__(kind)
        if _defines_setstate(kind):
            obj.__setstate__(state)
        elif type(state) is dict and all(type(k) is str for k in state):
            obj.__dict__.update(state)
        else:
            raise MalformedMessage(f"object of {key}: state is not a dict of attributes")
        return obj


_OBJECT_GETSTATE = getattr(object, "__getstate__", None)  # Python 3.11+: every object has one


def _defines_getstate(kind: type) -> bool:
    return getattr(kind, "__getstate__", _OBJECT_GETSTATE) is not _OBJECT_GETSTATE


def _defines_setstate(kind: type) -> bool:
    return callable(getattr(kind, "__setstate__", None))


class _Walker:
    """Finds the classes of codec modules by walking the namespaces codec modules reach."""

    def __init__(self) -> None:
        self.folders: set[Path] = {BUILTIN_CODECS_DIR.resolve()}
        self.roots: list[dict[str, Any]] = []
        self.seen: set[int] = set()
        self.found: dict[str, type] = {}

    def add_root(self, kind: type) -> None:
        namespace = _namespace_of(kind)
        if namespace is None:
            return
        file = namespace.get("__file__")
        if file:
            self.folders.add(Path(str(file)).resolve().parent)
        self.roots.append(namespace)

    def run(self) -> dict[str, type]:
        pending = list(self.roots)
        while pending:
            namespace = pending.pop()
            if id(namespace) in self.seen:
                continue
            self.seen.add(id(namespace))
            stem = _stem(namespace)
            for value in list(namespace.values()):
                if isinstance(value, types.ModuleType):
                    inner = vars(value)
                    if self._is_codec_code(inner):
                        pending.append(inner)
                elif isinstance(value, type):
                    if value.__module__ == namespace.get("__name__"):
                        self._add_class(stem, value)
                    else:
                        defining = _namespace_of(value)
                        if defining is not None and self._is_codec_code(defining):
                            pending.append(defining)
        return self.found

    def _is_codec_code(self, namespace: dict[str, Any]) -> bool:
        file = namespace.get("__file__")
        return bool(file) and Path(str(file)).resolve().parent in self.folders

    def _add_class(self, stem: str, kind: type) -> None:
        key = f"{stem}.{kind.__qualname__}"
        self.found.setdefault(key, kind)
        for value in vars(kind).values():  # classes nested in this one
            if isinstance(value, type) and value.__qualname__.startswith(kind.__qualname__ + "."):
                self._add_class(stem, value)


def _namespace_of(kind: type) -> dict[str, Any] | None:
    """The global namespace of the module defining ``kind``.

    Sibling modules of a shipped bundle are dropped from ``sys.modules`` once loaded, so the
    module is also found through the globals of a function the class defines.
    """
    module = sys.modules.get(kind.__module__)
    if module is not None:
        return vars(module)
    for value in vars(kind).values():
        func = getattr(value, "__func__", value)
        if isinstance(func, types.FunctionType) and func.__globals__.get("__name__") == (
            kind.__module__
        ):
            return func.__globals__
    return None


def _stem(namespace: dict[str, Any]) -> str:
    file = namespace.get("__file__")
    if file:
        return Path(str(file)).stem
    return str(namespace.get("__name__", "?")).rsplit(".", 1)[-1]


_active: ContentClasses | None = None
_active_lock = threading.Lock()


def active() -> ContentClasses | None:
    """The running job's content classes in this process (None between jobs)."""
    return _active


def set_active(classes: ContentClasses | None) -> None:
    """Make ``classes`` the running job's (None: no job; objects are refused again)."""
    global _active
    with _active_lock:
        _active = classes


@contextmanager
def job_classes(codecs: Iterable[type]) -> Iterator[ContentClasses]:
    """While the block runs, objects of ``codecs``' classes may travel in peer packages."""
    classes = ContentClasses.for_codecs(codecs)
    set_active(classes)
    try:
        yield classes
    finally:
        set_active(None)
