"""Codec source shipping: whole module plus sibling imports, loaded apart from other jobs."""

from __future__ import annotations

import sys
import textwrap

import pytest

from psgd.errors import CodecNotFound, ConfigError
from psgd.loader import resolve_codec
from psgd.net.bundle import bundle_codecs, load_bundle, unload_bundle

CODEC = textwrap.dedent(
    """
    import numpy as np
    from mathhelp import scale

    from psgd import Codec

    class Scaled(Codec):
        factor = scale()

        def dispose(self):
            pass

        def update_blocks(self, block_weight):
            return None

        def receive_blocks(self, content):
            return None
    """
)


@pytest.fixture
def user_codec(tmp_path):
    folder = tmp_path / "src" / "codecs"
    folder.mkdir(parents=True)
    (folder / "scaled.py").write_text(CODEC)
    (folder / "mathhelp.py").write_text("import deep\n\ndef scale():\n    return deep.VALUE\n")
    (folder / "deep.py").write_text("VALUE = 3\n")
    (folder / "unused.py").write_text("raise RuntimeError('never shipped')\n")
    return resolve_codec("scaled.Scaled", cwd=tmp_path / "src")


def test_bundle_holds_the_module_and_its_sibling_imports_only(user_codec):
    sources, names = bundle_codecs([user_codec, user_codec])
    assert sorted(sources) == ["deep", "mathhelp", "scaled"]
    assert names == ["scaled.Scaled", "scaled.Scaled"]


def test_builtin_codecs_bundle_too():
    sources, names = bundle_codecs([resolve_codec("plain.Plain")])
    assert names == ["plain.Plain"] and "class Plain" in sources["plain"]


def test_loaded_bundle_runs_and_is_forgotten_after_the_job(user_codec, tmp_path):
    sources, names = bundle_codecs([user_codec])
    job = tmp_path / "job-1"
    import deep  # the user's own sibling, loaded when the codec was resolved

    (cls,) = load_bundle(sources, names, job)
    assert cls.factor == 3 and cls is not user_codec
    assert sys.modules["deep"] is deep  # the bundle's siblings did not replace the user's
    assert cls.factor == 3
    unload_bundle(job)
    assert not any(
        str(getattr(m, "__file__", "") or "").startswith(str(job)) for m in sys.modules.values()
    )
    sources["deep"] = "VALUE = 7\n"
    (cls2,) = load_bundle(sources, names, tmp_path / "job-2")
    assert cls2.factor == 7  # the next job's sibling module is its own
    unload_bundle(tmp_path / "job-2")


def test_bad_bundles_are_refused(tmp_path):
    with pytest.raises(CodecNotFound, match="not in the shipped codec bundle"):
        load_bundle({"a": "x = 1\n"}, ["b.C"], tmp_path / "j")
    with pytest.raises(ConfigError, match="bad module name"):
        load_bundle({"../evil": "x = 1\n"}, ["a.C"], tmp_path / "j2")
    with pytest.raises(CodecNotFound, match="no codec class"):
        load_bundle({"a": "x = 1\n"}, ["a.C"], tmp_path / "j3")


def test_user_codec_can_build_on_a_builtin_one_and_ships_it(tmp_path):
    folder = tmp_path / "codecs"
    folder.mkdir()
    (folder / "mine.py").write_text(
        "from compression import Compressing\nfrom plain import Plain\n\n\n"
        "class TopKMine(Compressing, Plain):\n    pass\n"
    )
    cls = resolve_codec("mine.TopKMine", cwd=tmp_path)
    sources, names = bundle_codecs([cls])
    assert {"mine", "compression", "plain"} <= set(sources) and names == ["mine.TopKMine"]
    (loaded,) = load_bundle(sources, names, tmp_path / "job")
    assert loaded.__name__ == "TopKMine"
    unload_bundle(tmp_path / "job")
