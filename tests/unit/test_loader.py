"""Codec names resolve in ./codecs/, the built-in folder, sys.path, or file.py:Class."""

from __future__ import annotations

import textwrap

import pytest

from psgd import Codec
from psgd.errors import CodecNotFound
from psgd.loader import codec_name, resolve_codec

USER_CODEC = textwrap.dedent(
    """
    from psgd import Codec
    from helper_math import double

    class Mine(Codec):
        factor = double(1)

        def dispose(self):
            pass

        def update_blocks(self, block_weight):
            return None

        def receive_blocks(self, content):
            return None
    """
)


@pytest.fixture
def user_folder(tmp_path):
    codecs = tmp_path / "codecs"
    codecs.mkdir()
    (codecs / "mine.py").write_text(USER_CODEC)
    (codecs / "helper_math.py").write_text("def double(x):\n    return 2 * x\n")
    (codecs / "plain.py").write_text(USER_CODEC.replace("Mine", "Plain"))
    return tmp_path


def test_builtin_codec_resolves():
    cls = resolve_codec("plain.Plain")
    assert issubclass(cls, Codec) and codec_name(cls) == "plain.Plain"


def test_user_codecs_folder_wins_and_can_import_siblings(user_folder):
    cls = resolve_codec("mine.Mine", cwd=user_folder)
    assert cls.factor == 2
    user_plain = resolve_codec("plain.Plain", cwd=user_folder)
    assert user_plain.factor == 2  # ./codecs/plain.py shadows the built-in one


def test_file_path_with_class(user_folder):
    cls = resolve_codec(f"{user_folder / 'codecs' / 'mine.py'}:Mine")
    assert cls.__name__ == "Mine"


def test_user_file_never_shadows_stdlib_modules(tmp_path):
    (tmp_path / "queue.py").write_text(
        USER_CODEC.replace("from helper_math import double\n", "").replace("double(1)", "2")
    )
    import queue

    resolve_codec(f"{tmp_path / 'queue.py'}:Mine")
    import sys

    assert sys.modules["queue"] is queue


def test_misspelt_class_suggests_the_right_one():
    with pytest.raises(CodecNotFound, match="did you mean FedAvgClient"):
        resolve_codec("fedavg.FedAvgClien")


def test_unknown_module_says_where_it_looked(tmp_path):
    with pytest.raises(CodecNotFound) as info:
        resolve_codec("nothere.Cls", cwd=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "codecs" / "nothere.py") in message and "sys.path" in message


@pytest.mark.parametrize("bad", ["", "plain", ".Plain", "missing.py:Cls"])
def test_malformed_names_are_clear_errors(bad):
    with pytest.raises(CodecNotFound):
        resolve_codec(bad)


def test_class_that_is_not_a_codec_is_refused():
    with pytest.raises(CodecNotFound, match="not a subclass"):
        resolve_codec("fedavg.BlockWeight")
