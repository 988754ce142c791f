"""Objects of a job's own codec classes travel as their state; every other class is refused.

The classes come from the Parallel-SGD-style codecs in ``tests/psgd_style`` (loaded the way
psgd loads user codecs), so the registry is built exactly as a job builds it.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import msgpack
import numpy as np
import pytest

from psgd.errors import EncodeError, MalformedMessage
from psgd.loader import resolve_codec
from psgd.net import protocol, wire_objects
from psgd.net.wire import Limits, decode, encode
from psgd.net.wire_objects import ContentClasses

pytestmark = pytest.mark.timeout(30)

STYLE = Path(__file__).resolve().parents[1] / "psgd_style"


@pytest.fixture
def classes() -> ContentClasses:
    client = resolve_codec(f"{STYLE / 'quantized.py'}:QuantizedClient")
    server = resolve_codec(f"{STYLE / 'quantized.py'}:QuantizedServer")
    return ContentClasses.for_codecs([client, server])


def pack_class(classes: ContentClasses) -> type:
    return classes.by_key["quant_pack.QuantizedPack"]


def a_pack(classes: ContentClasses, seed: int = 0):
    rng = np.random.default_rng(seed)
    return pack_class(classes)(rng.standard_normal((3, 4)).astype(np.float32), 127, rng)


def test_registry_holds_the_codec_modules_classes_and_their_siblings(classes):
    assert {"quantized.QuantizedClient", "quantized.QuantizedServer"} <= set(classes.by_key)
    assert "quant_pack.QuantizedPack" in classes.by_key  # a sibling module the codec imports
    assert not any(key.startswith(("numpy.", "np.")) for key in classes.by_key)


def test_an_object_of_the_jobs_class_travels_as_its_state(classes):
    pack = a_pack(classes)
    content = {"pack": pack, "nested": [pack, (1, pack)]}
    _, got = decode(encode({}, content, classes=classes), classes=classes)
    for item in (got["pack"], got["nested"][0], got["nested"][1][1]):
        assert type(item) is pack_class(classes) and item is not pack
        np.testing.assert_array_equal(item.decode(), pack.decode())
        assert item.level.dtype == np.int8 and item.norm == pack.norm and item.shape == (3, 4)


def test_getstate_and_setstate_are_used_when_the_class_defines_them(tmp_path):
    (tmp_path / "stateful.py").write_text(
        "from psgd import Codec\n"
        "class Box:\n"
        "    def __init__(self, v): self.v = v; self.cache = object()\n"
        "    def __getstate__(self): return {'v': self.v}\n"
        "    def __setstate__(self, s): self.v = s['v'] * 10; self.cache = None\n"
        "class C(Codec):\n"
        "    def dispose(self): pass\n"
        "    def update_blocks(self, b): pass\n"
        "    def receive_blocks(self, c): pass\n"
    )
    codec = resolve_codec(f"{tmp_path / 'stateful.py'}:C")
    classes = ContentClasses.for_codecs([codec])
    box_class = classes.by_key["stateful.Box"]
    _, got = decode(encode({}, box_class(4), classes=classes), classes=classes)
    assert type(got) is box_class and got.v == 40 and got.cache is None


def test_objects_are_refused_without_the_jobs_classes_with_todays_error(classes):
    with pytest.raises(EncodeError, match=r"content\['p'\]: cannot send <class .*QuantizedPack"):
        encode({}, {"p": a_pack(classes)})


def test_a_class_outside_the_jobs_codecs_is_still_refused(classes):
    with pytest.raises(EncodeError, match="cannot send <class 'fractions.Fraction'>"):
        encode({}, [fractions.Fraction(1, 3)], classes=classes)


def test_the_state_is_checked_by_the_same_allow_list_and_limits(classes):
    pack = a_pack(classes)
    pack.level = pack.level.astype(object)
    with pytest.raises(EncodeError, match=r"content\[0\]\['level'\]: cannot send array of dtype"):
        encode({}, [pack], classes=classes)
    deep = a_pack(classes)
    deep.extra = [[[[["x"]]]]]
    with pytest.raises(EncodeError, match="max_depth=4"):
        encode({}, deep, classes=classes, limits=Limits(max_depth=4))


def test_objects_never_go_in_headers_or_dict_keys(classes):
    with pytest.raises(EncodeError, match="not in a header or key"):
        encode({"p": a_pack(classes)}, None, classes=classes)
    with pytest.raises(EncodeError, match="not in a header or key"):
        encode({}, {(1, a_pack(classes)): 1}, classes=classes)


def hostile(key: object, state: object) -> list[bytes]:
    """A message whose content is an object tag naming ``key``, as a hostile peer forges it."""
    body = [msgpack.ExtType(4, b""), key, state]
    return [msgpack.packb({"body": body, "proto": protocol.PROTOCOL_VERSION})]


@pytest.mark.parametrize(
    ("key", "state", "match"),
    [
        ("subprocess.Popen", {"args": "sh"}, "not one of the job's"),
        ("os._wrap_close", {}, "not one of the job's"),
        ("builtins.object", {}, "not one of the job's"),
        (7, {}, r"not \[tag, class key, state\]"),
        ("quant_pack.QuantizedPack", [1, 2], "state is not a dict of attributes"),
        ("quant_pack.QuantizedPack", {1: 2}, "state is not a dict of attributes"),
        ("quant_pack.Pack", {}, "restoring its state raised TypeError"),  # abstract
    ],
)
def test_a_forged_object_is_malformed_and_nothing_is_built(classes, key, state, match):
    with pytest.raises(MalformedMessage, match=match):
        decode(hostile(key, state), classes=classes)


def test_objects_are_malformed_where_no_job_classes_are_active(classes):
    frames = encode({}, a_pack(classes), classes=classes)
    with pytest.raises(MalformedMessage, match="objects are not accepted"):
        decode(frames)


def test_only_peer_packages_of_a_running_job_take_objects(classes):
    with pytest.raises(EncodeError, match="cannot send"):
        protocol.make_packages("job-1", 0, [(0, a_pack(classes))])  # no job running
    wire_objects.set_active(classes)
    frames = protocol.make_packages("job-1", 0, [(0, a_pack(classes))])
    message = protocol.parse(frames, protocol.PEER_TYPES)
    assert type(message.content[0]) is pack_class(classes)
    with pytest.raises(MalformedMessage, match="objects are not accepted"):
        protocol.parse(frames, protocol.CONTROL_TYPES | protocol.PEER_TYPES - {protocol.PACKAGE})
    wire_objects.set_active(None)
    with pytest.raises(MalformedMessage, match="objects are not accepted"):
        protocol.parse(frames, protocol.PEER_TYPES)
