"""Resolve codec names (``module.Class`` or ``path/to/file.py:Class``) to codec classes.

``module.Class`` is looked up in ``./codecs/`` (the user's folder), then in psgd's built-in
codecs (the repository's ``codecs/`` folder, shipped in the wheel as ``psgd/_codecs/``), then
on ``sys.path``. ``codecs`` itself is a standard-library module, so
the codec folders are never imported as packages: each file is loaded on its own, with its
folder on ``sys.path`` while it runs so that it can import sibling modules.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

from psgd.codec import Codec
from psgd.errors import CodecNotFound

__all__ = [
    "BUILTIN_CODECS_DIR",
    "codec_name",
    "forget_codec_modules",
    "load_module_file",
    "register_codec_class",
    "resolve_codec",
]


def _builtin_codecs_dir() -> Path:
    """``psgd/_codecs`` in an installed wheel, else the repository's ``codecs/`` folder."""
    package = Path(__file__).resolve().parent
    shipped = package / "_codecs"
    return shipped if shipped.is_dir() else package.parent / "codecs"


#: The built-in codecs: the repository's top-level ``codecs/`` folder, which a wheel carries
#: as ``psgd/_codecs/`` (a checkout or an editable install reads the folder itself).
BUILTIN_CODECS_DIR = _builtin_codecs_dir()

_MODULE_PREFIX = "_psgd_codec_"
_loaded: dict[Path, ModuleType] = {}
#: Codec classes handed over as objects (``psgd.run(codec=MyCodec)`` in-process), by name.
_registered: dict[str, type[Codec]] = {}
#: Modules that codec files imported from their own folders (or the built-in codecs folder).
_siblings: set[str] = set()
_load_lock = threading.RLock()


def codec_name(cls: type) -> str:
    """The ``module.Class`` name of a codec class, as users write it."""
    module = cls.__module__.rsplit(".", 1)[-1].removeprefix(_MODULE_PREFIX)
    return f"{module}.{cls.__qualname__}"


def load_module_file(path: Path) -> ModuleType:
    """Load a Python file as a module (once per file).

    While it runs, its own folder and then the built-in codecs folder are importable, so it
    can import sibling modules and build on built-in codecs (``from plain import Plain``).
    """
    path = path.resolve()
    with _load_lock:
        if path in _loaded:
            return _loaded[path]
        # A private module name: a user file called queue.py must never shadow the stdlib.
        name = f"{_MODULE_PREFIX}{path.stem}"
        if name in sys.modules:
            name = f"{name}_{len(_loaded)}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise CodecNotFound(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        # Its own folder first, then the built-in codecs (a user codec may build on them).
        folders = [str(path.parent), str(BUILTIN_CODECS_DIR)]
        sys.path[:0] = folders
        sys.modules[name] = module
        before = set(sys.modules)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        finally:
            for folder in folders:
                if folder in sys.path:
                    sys.path.remove(folder)
            _siblings.update(n for n in set(sys.modules) - before if _folder_of(n) in folders)
        _loaded[path] = module
        return module


def register_codec_class(cls: type[Codec]) -> str:
    """A name ``resolve_codec`` answers with ``cls`` itself (for in-process jobs whose codec
    was given as a class, e.g. one defined in a notebook, which no file holds)."""
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise CodecNotFound(f"{cls!r}: not a subclass of psgd.Codec")
    name = f"<in-process {cls.__module__}>:{cls.__qualname__}"
    with _load_lock:
        _registered[name] = cls
    return name


def _folder_of(module_name: str) -> str | None:
    file = getattr(sys.modules.get(module_name), "__file__", None)
    return str(Path(str(file)).parent) if file else None


def forget_codec_modules() -> None:
    """Forget every codec module loaded so far, so the next job executes them afresh.

    A job sets its settings before its codec modules run (class bodies may read
    ``GlobalSettings.get_params``); forgetting the modules of the previous job in this process
    (and the sibling modules they imported from their folders) makes the next job's class
    bodies see the next job's values. Classes already handed out stay usable.
    """
    with _load_lock:
        _loaded.clear()
        for name in list(sys.modules):
            if name.startswith(_MODULE_PREFIX) or name in _siblings:
                del sys.modules[name]
        _siblings.clear()


def _class_from(module: ModuleType, class_name: str, where: str, user_name: str) -> type[Codec]:
    cls = getattr(module, class_name, None)
    if cls is None:
        names = [n for n, v in vars(module).items() if isinstance(v, type)]
        close = difflib.get_close_matches(class_name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CodecNotFound(f"{user_name}: {where} has no class {class_name!r}{hint}")
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise CodecNotFound(f"{user_name}: {where}.{class_name} is not a subclass of psgd.Codec")
    return cls


def _codec_folders(cwd: Path | None) -> list[Path]:
    folders = [(cwd or Path.cwd()) / "codecs", BUILTIN_CODECS_DIR]
    unique: list[Path] = []
    for folder in folders:
        if folder.resolve() not in [f.resolve() for f in unique]:
            unique.append(folder)
    return unique


def resolve_codec(name: str, cwd: Path | None = None) -> type[Codec]:
    """Return the codec class a user named.

    Parameters
    ----------
    name:
        ``module.Class`` or ``path/to/file.py:Class``.
    cwd:
        Folder whose ``codecs/`` subfolder is searched first (default: the current folder).

    Raises
    ------
    CodecNotFound
        The message says what was looked up where, and suggests a close class name.
    """
    if not isinstance(name, str) or not name.strip():
        raise CodecNotFound(f"codec name must be 'module.Class' or 'file.py:Class', got {name!r}")
    name = name.strip()
    if name in _registered:
        return _registered[name]
    if ":" in name:
        file_part, _, class_name = name.rpartition(":")
        path = Path(file_part).expanduser()
        if not path.is_absolute() and cwd is not None:
            path = cwd / path
        if not path.is_file():
            raise CodecNotFound(f"{name}: file {path} does not exist")
        return _class_from(load_module_file(path), class_name, f"file {path}", name)
    module_name, dot, class_name = name.rpartition(".")
    if not dot or not module_name or not class_name:
        raise CodecNotFound(
            f"{name}: expected 'module.Class' (e.g. plain.Plain) or 'path/to/file.py:Class'"
        )
    looked: list[str] = []
    relative = Path(*module_name.split(".")).with_suffix(".py")
    for folder in _codec_folders(cwd):
        candidate = folder / relative
        looked.append(str(candidate))
        if candidate.is_file():
            return _class_from(
                load_module_file(candidate), class_name, f"module {module_name!r}", name
            )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            looked.append(f"sys.path module {module_name!r}")
            raise CodecNotFound(
                f"{name}: no module {module_name!r}; looked in " + ", ".join(looked)
            ) from None
        raise
    return _class_from(module, class_name, f"module {module_name!r}", name)
