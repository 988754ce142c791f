"""Codec parameters (``--param key=value``): what a codec declares, and keys nobody read.

A codec may declare the parameters it reads, with their defaults and a line of help, as a class
attribute (a subclass's declarations add to, or override, its bases')::

    class FedAvgClient(Codec):
        params = {"local_steps": (150, "local SGD steps between two averages")}

Declaring is optional: ``GlobalSettings.get_params(key, default)`` works the same either way.
It lets ``python -m psgd.testing describe`` list them, and lets a job name a misspelled
``--param`` before it starts. Whatever the codecs declare, the keys they actually read are
recorded (``GlobalSettings.params_read``), and a given key that no codec declared or read is
named when the job ends: ``--param lcoal_steps=5 was never read; FedAvgClient reads
local_steps, fraction, seed (did you mean local_steps?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psgd.errors import CodecError

__all__ = [
    "declared_params",
    "describe_codec",
    "unknown_at_start",
    "unread_keys",
    "unread_warnings",
]

#: A declaration: ``(default, help)``.
ParamDecl = tuple[Any, str]


def _is_declaration(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str)


def declared_params(cls: type) -> dict[str, ParamDecl] | None:
    """The ``params`` ``cls`` and its bases declare, or None when none of them declares any.

    A class attribute ``params`` that is not a dict is not a declaration and is ignored (a
    ported codec may use the name for something else).

    Raises
    ------
    CodecError
        If a ``params`` dict holds an entry that is not ``name: (default, "help")``.
    """
    found: dict[str, ParamDecl] | None = None
    for klass in reversed(cls.__mro__):
        declared = vars(klass).get("params")
        if not isinstance(declared, Mapping):
            continue
        for name, value in declared.items():
            if not isinstance(name, str) or not _is_declaration(value):
                raise CodecError(
                    f"{klass.__name__}.params[{name!r}]: expected (default, 'help text'), "
                    f"got {value!r:.60}"
                )
        found = {**(found or {}), **declared}
    return found


def _reads(classes: Sequence[type]) -> list[tuple[str, list[str]]]:
    """``(class name, declared keys)`` of each distinct class that declares any."""
    seen = []
    for cls in dict.fromkeys(classes):
        declared = declared_params(cls)
        if declared:
            seen.append((cls.__name__, list(declared)))
    return seen


def _hint(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _who_reads(classes: Sequence[type], read: Iterable[str]) -> str:
    parts = [f"{name} reads {', '.join(keys)}" for name, keys in _reads(classes)]
    declared = {key for _, keys in _reads(classes) for key in keys}
    others = sorted(set(read) - declared)
    if others:
        parts.append(f"the codecs {'also ' if parts else ''}read {', '.join(others)}")
    return "; ".join(parts) if parts else "no codec of this job reads any parameter"


def unknown_at_start(given: Mapping[str, Any], classes: Sequence[type]) -> list[str]:
    """Warnings for given keys that no codec declares, when every codec declares its params.

    Empty when some codec declares nothing (it may read anything; the end of the job tells).
    """
    if not classes or any(declared_params(cls) is None for cls in classes):
        return []
    declared = {key for _, keys in _reads(classes) for key in keys}
    return [
        f"--param {key}={value} is not a declared parameter; "
        f"{_who_reads(classes, ())}{_hint(key, declared)}"
        for key, value in given.items()
        if key not in declared
    ]


def unread_keys(
    given: Mapping[str, Any], classes: Sequence[type], read: Iterable[str]
) -> list[str]:
    """The given keys that no codec declared and none read during the job."""
    known = set(read) | {key for _, keys in _reads(classes) for key in keys}
    return [key for key in given if key not in known]


def unread_warnings(
    given: Mapping[str, Any], classes: Sequence[type], read: Iterable[str]
) -> list[str]:
    """A warning for each of ``unread_keys``, naming what the codecs do read."""
    read = set(read)
    known = read | {key for _, keys in _reads(classes) for key in keys}
    return [
        f"--param {key}={given[key]} was never read; {_who_reads(classes, read)}{_hint(key, known)}"
        for key in unread_keys(given, classes, read)
    ]


def describe_codec(cls: type, name: str | None = None) -> str:
    """What ``python -m psgd.testing describe`` prints: the codec's summary and parameters."""
    doc = (cls.__doc__ or "").strip().split("\n\n", 1)[0]
    lines = [name or cls.__name__]
    if doc:
        lines += ["  " + " ".join(doc.split())]
    exchange = getattr(cls, "exchange", "delta")
    lines.append(f"  exchange: {exchange}")
    declared = declared_params(cls)
    if declared is None:
        lines.append("  parameters: none declared (it may still read --param keys)")
    elif not declared:
        lines.append("  parameters: none")
    else:
        lines.append("  parameters (--param key=value):")
        width = max(len(key) for key in declared)
        for key, (default, text) in declared.items():
            shown = default if isinstance(default, str) else repr(default)
            lines.append(f"    {key:<{width}}  {text} (default: {shown})")
    return "\n".join(lines)
