"""Ship codec source to workers and load it there in a namespace of its own.

The submitter bundles each codec's whole module plus the sibling modules it imports from the
same folder (found by reading its imports, transitively). The worker writes the bundle into a
folder of the job, loads the codecs from there, and forgets every module of the bundle when the
job ends, so the next job's codecs never see this one's.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

from psgd.codec import Codec
from psgd.errors import CodecNotFound, ConfigError
from psgd.loader import BUILTIN_CODECS_DIR, load_module_file

__all__ = ["bundle_codecs", "load_bundle", "unload_bundle"]

#: The largest codec bundle a worker accepts (sum of source sizes).
MAX_BUNDLE_BYTES = 8 << 20


def _imported_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _module_file(cls: type) -> Path:
    try:
        return Path(inspect.getfile(cls)).resolve()
    except (TypeError, OSError):
        raise ConfigError(f"codec {cls.__qualname__}: its source file cannot be found") from None


def bundle_codecs(
    classes: Sequence[type[Codec]], files: Sequence[Path] = ()
) -> tuple[dict[str, str], list[str]]:
    """Sources to ship and the name of each class inside them.

    ``files`` are more modules to ship with their siblings (a user model's builder file);
    nothing is loaded from them on the worker until asked.
    Returns ``({module_stem: source}, ["stem.Class", ...])`` with one name per class.
    """
    sources: dict[str, str] = {}
    origins: dict[str, Path] = {}
    names = []
    for cls in classes:
        path = _module_file(cls)
        names.append(f"{path.stem}.{cls.__qualname__}")
        _add_module(path, sources, origins)
    for path in files:
        _add_module(Path(path).resolve(), sources, origins)
    return sources, names


def _add_module(path: Path, sources: dict[str, str], origins: dict[str, Path]) -> None:
    """Add the module at ``path`` and the sibling modules it imports, transitively."""
    pending = [path]
    while pending:
        current = pending.pop()
        stem = current.stem
        if stem in origins:
            if origins[stem] != current:
                raise ConfigError(
                    f"shipped modules {origins[stem]} and {current} share the name {stem!r}; "
                    "rename one of them"
                )
            continue
        origins[stem] = current
        sources[stem] = current.read_text(encoding="utf-8")
        for name in sorted(_imported_names(sources[stem])):
            for folder in (current.parent, BUILTIN_CODECS_DIR):
                sibling = folder / f"{name}.py"
                if sibling.is_file():
                    pending.append(sibling.resolve())
                    break


def load_bundle(sources: dict[str, str], names: Sequence[str], folder: Path) -> list[type[Codec]]:
    """Write ``sources`` into ``folder`` and load the classes ``names`` from there."""
    total = sum(len(s) for s in sources.values())
    if total > MAX_BUNDLE_BYTES:
        raise ConfigError(f"codec bundle of {total} bytes exceeds {MAX_BUNDLE_BYTES}")
    folder.mkdir(parents=True, exist_ok=True)
    for stem, source in sources.items():
        if not stem.isidentifier():
            raise ConfigError(f"codec bundle: bad module name {stem!r:.40}")
        (folder / f"{stem}.py").write_text(source, encoding="utf-8")
    # Siblings import each other by plain name: hide same-named modules loaded from elsewhere
    # while the bundle loads, so it only ever sees its own, then put them back.
    hidden = {stem: sys.modules.pop(stem) for stem in sources if stem in sys.modules}
    try:
        return [_load_class(name, sources, folder) for name in names]
    finally:
        for stem in sources:
            module = sys.modules.get(stem)
            if module is not None and _from_folder(module, folder):
                del sys.modules[stem]
        sys.modules.update(hidden)


def _load_class(name: str, sources: dict[str, str], folder: Path) -> type[Codec]:
    stem, _, class_name = name.partition(".")
    if stem not in sources:
        raise CodecNotFound(f"{name}: module {stem!r} is not in the shipped codec bundle")
    module = load_module_file(folder / f"{stem}.py")
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise CodecNotFound(f"{name}: shipped module {stem!r} has no codec class {class_name!r}")
    return cls


def _from_folder(module: object, folder: Path) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and Path(str(file)).resolve().parent == folder.resolve()


def unload_bundle(folder: Path) -> None:
    """Forget every module loaded from ``folder`` (the job is over)."""
    for name, module in list(sys.modules.items()):
        if _from_folder(module, folder):
            del sys.modules[name]
    folder = folder.resolve()
    from psgd import loader

    with loader._load_lock:
        for path in [p for p in loader._loaded if p.parent == folder]:
            del loader._loaded[path]
