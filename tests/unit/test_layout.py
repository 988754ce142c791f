"""The package layout: each part of psgd imports only the parts beneath it.

Every ``import`` in ``psgd/`` (at module level or inside a function) is read with ``ast`` and
checked against the allowed arrows; each subpackage is then imported on its own in a fresh
interpreter, which must not pull in a part above it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import psgd

PACKAGE_DIR = Path(psgd.__file__).parent

#: The contract users code against: top-level modules of psgd.
CONTRACT = "contract"

#: What each part may import besides itself and the contract.
ALLOWED: dict[str, set[str]] = {
    CONTRACT: set(),
    "nn": set(),
    "data": set(),
    "algorithms": set(),
    "net": set(),
    "results": set(),
    "testing": {"net"},
    "train": {"results", "net", "algorithms", "nn", "data"},
    "cluster": {"train", "results", "net", "algorithms", "nn", "data"},
    "cli": {"cluster", "train", "results", "net", "algorithms", "nn", "data", "testing"},
}

#: The one import allowed up the layers: ``psgd/__init__.py`` hands out ``psgd.run`` on first
#: use (inside its module ``__getattr__``), so ``import psgd`` itself loads no part above.
FACADE = {("psgd", "psgd.cluster.api")}

#: Modules that must not exceed this many lines (the style guide's ~400).
MAX_MODULE_LINES = 420


def _part(module: str) -> str:
    """``psgd.net.wire`` -> ``net``; ``psgd.codec`` and ``psgd`` -> the contract."""
    pieces = module.split(".")
    if len(pieces) >= 2 and (PACKAGE_DIR / pieces[1]).is_dir():
        return pieces[1]
    return CONTRACT


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every psgd module that ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "psgd":  # from psgd import net -> psgd.net
                found += [(node.lineno, f"psgd.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "psgd" or name.startswith("psgd.")]


#: psgd's own modules; an installed wheel also holds the built-in codecs and MNIST under
#: private folders (``_codecs``, ``_data``), which are user code and data, not parts.
SOURCES = sorted(
    path
    for path in PACKAGE_DIR.rglob("*.py")
    if not path.relative_to(PACKAGE_DIR).parts[0].startswith("_")
)


def test_the_layout_has_the_agreed_parts():
    parts = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert parts == set(ALLOWED) - {CONTRACT}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_imports_point_down_the_layers(path: Path):
    here = _part(_module_name(path))
    wrong = [
        f"{path.relative_to(PACKAGE_DIR)}:{line} imports {name} ({here} -> {_part(name)})"
        for line, name in _imports(path)
        if _part(name) not in ALLOWED[here] | {here, CONTRACT}
        and (_module_name(path), name) not in FACADE
    ]
    assert not wrong, "imports pointing up the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_modules_stay_small(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines: split it by what it does"


def test_every_subpackage_says_what_it_owns_and_may_import():
    for part in set(ALLOWED) - {CONTRACT}:
        doc = ast.get_docstring(ast.parse((PACKAGE_DIR / part / "__init__.py").read_text()))
        assert doc and "Owns" in doc and "May import" in doc, f"psgd/{part}/__init__.py"


@pytest.mark.parametrize("part", sorted(set(ALLOWED) - {CONTRACT}))
def test_importing_a_part_loads_nothing_above_it(part: str):
    code = (
        f"import sys, psgd.{part}\n"
        "print(' '.join(sorted({m.split('.')[1] for m in sys.modules "
        "if m.startswith('psgd.') and m.count('.') >= 1})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    loaded = {name for name in out if (PACKAGE_DIR / name).is_dir()}
    assert loaded <= ALLOWED[part] | {part}, f"psgd.{part} loaded {sorted(loaded)}"


def test_importing_psgd_loads_no_part_and_run_is_there_on_first_use():
    code = (
        "import sys, psgd\n"
        "assert not any(m.startswith('psgd.cluster') for m in sys.modules), 'eager'\n"
        "assert callable(psgd.run) and 'psgd.cluster.api' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_blas_limits_can_be_set_before_numpy_loads():
    # worker.py and job_submit.py set the BLAS variables first: that import must not load numpy
    code = (
        "import sys\n"
        "from psgd.blas_env import limit_blas_threads\n"
        "assert 'numpy' not in sys.modules, 'psgd.blas_env loads numpy'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
