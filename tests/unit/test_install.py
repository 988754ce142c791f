"""psgd works from any folder: the built-in codecs and MNIST come with the package.

In a checkout they are the repository's ``codecs/`` and ``data/mnist/``; in an installed wheel
they are ``psgd/_codecs/`` and ``psgd/_data/mnist/``. ``.ci/run`` runs this suite against the
installed wheel with ``PSGD_SOURCE_TREE`` naming the checkout it was built from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from entry_points import PSGD_ROOT, SUBMIT, installed

from psgd.data.mnist import CHECKSUM_FILE, MNIST_FILES, SHIPPED_DATA_DIR
from psgd.loader import BUILTIN_CODECS_DIR, resolve_codec

pytestmark = pytest.mark.timeout(60)

PACKAGE = PSGD_ROOT / "psgd"
SOURCE_TREE = os.environ.get("PSGD_SOURCE_TREE")


def test_builtin_codecs_and_mnist_are_found_where_this_psgd_keeps_them():
    if installed():
        assert BUILTIN_CODECS_DIR == PACKAGE / "_codecs"
        assert SHIPPED_DATA_DIR == PACKAGE / "_data" / "mnist"
    else:
        assert BUILTIN_CODECS_DIR == PSGD_ROOT / "codecs"
        assert SHIPPED_DATA_DIR == PSGD_ROOT / "data" / "mnist"
    assert {"plain.py", "fedavg.py", "federated.py", "ps.py"} <= {
        p.name for p in BUILTIN_CODECS_DIR.glob("*.py")
    }
    assert {*MNIST_FILES.values(), CHECKSUM_FILE} <= {p.name for p in SHIPPED_DATA_DIR.iterdir()}


@pytest.mark.skipif(not SOURCE_TREE, reason="PSGD_SOURCE_TREE names no checkout to compare with")
def test_the_wheel_ships_every_codec_and_mnist_file_of_the_repository():
    tree = Path(str(SOURCE_TREE))
    repo_codecs = {p.name: p.read_bytes() for p in (tree / "codecs").glob("*.py")}
    shipped = {p.name: p.read_bytes() for p in BUILTIN_CODECS_DIR.glob("*.py")}
    assert shipped == repo_codecs
    for name in [*MNIST_FILES.values(), CHECKSUM_FILE]:
        repo_file = tree / "data" / "mnist" / name
        assert (SHIPPED_DATA_DIR / name).read_bytes() == repo_file.read_bytes(), name


def test_builtin_codec_names_resolve_from_a_folder_without_codecs(tmp_path):
    cls = resolve_codec("fedavg.FedAvgClient", cwd=tmp_path)
    assert Path(sys.modules[cls.__module__].__file__ or "").parent == BUILTIN_CODECS_DIR


def test_quick_start_and_codec_script_run_from_an_empty_folder(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env.pop("PSGD_DATA_DIR", None)
    job = subprocess.run(
        [*SUBMIT, "--simulate", "--train-samples", "600", "--test-samples", "100",
         "--epochs", "1", "--out", "run"],
        capture_output=True, text=True, timeout=50, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    assert (tmp_path / "run" / "summary.json").is_file()
    check = subprocess.run(
        [sys.executable, "-m", "psgd.testing", "p2p", "plain.Plain", "--rounds", "2"],
        capture_output=True, text=True, timeout=50, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "PASS" in check.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
