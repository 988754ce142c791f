"""The commands users type, as the tests run them: psgd's installed console scripts.

``psgd-worker``, ``psgd-submit`` and ``psgd`` sit beside the interpreter running the tests (the
virtual environment's ``bin/``); where they are missing (psgd not installed in it), the same
entry points run as ``python -m psgd.cli ...``. ``tests/conftest.py`` makes every child process
import the ``psgd`` these tests import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psgd

__all__ = ["PSGD", "PSGD_ROOT", "SUBMIT", "WORKER", "installed"]

#: The folder holding the ``psgd`` package under test: site-packages, or a checkout.
PSGD_ROOT = Path(psgd.__file__).resolve().parents[1]


def installed() -> bool:
    """True when psgd is imported from an installed wheel, not from a checkout."""
    return not (PSGD_ROOT / "pyproject.toml").is_file()


def _script(name: str, *fallback: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.is_file() else [sys.executable, "-m", "psgd.cli", *fallback]


WORKER = _script("psgd-worker", "worker")
SUBMIT = _script("psgd-submit", "submit")
PSGD = _script("psgd")
