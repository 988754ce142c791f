"""psgd.net.wire: types survive the round trip, arrays are never copied, hostile bytes only ever
raise MalformedMessage."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from loopback import loopback_pair

from psgd.errors import EncodeError, MalformedMessage
from psgd.net.wire import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Limits,
    decode,
    encode,
    frames_size,
)

pytestmark = pytest.mark.timeout(30)

HEADER = {"type": "grad", "job": "j1", "sender": 3, "batch": 17, "lr": 0.5, "done": False}


def assert_same(got: Any, want: Any, path: str = "content") -> None:
    """Equal values of exactly the same types, arrays included (dtype and shape)."""
    if isinstance(want, np.ndarray):
        assert type(got) is np.ndarray, path
        assert got.dtype == want.dtype.newbyteorder("<"), path
        assert got.shape == want.shape, path
        np.testing.assert_array_equal(got, want, err_msg=path)
        return
    assert type(got) is type(want), f"{path}: {type(got)} != {type(want)}"
    if isinstance(want, np.generic):
        assert got.dtype == want.dtype and got == want, path
    elif isinstance(want, dict):
        assert [(type(k), k) for k in got] == [(type(k), k) for k in want], path
        for key in want:
            assert_same(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{index}]")
    else:
        assert got == want, path


def round_trip(content: Any, header: dict[str, Any] | None = None) -> Any:
    got_header, got = decode(encode(header or {}, content))
    assert got_header == (header or {})
    return got


def tamper(frames: list[Any], edit: Any) -> list[Any]:
    """Frames of a valid message whose unpacked header map ``edit`` changed in place."""
    tree = msgpack.unpackb(frames[0], strict_map_key=False)
    edit(tree)
    return [msgpack.packb(tree), *frames[1:]]


def assert_malformed(frames: Any, limits: Limits = DEFAULT_LIMITS, match: str | None = None) -> str:
    with pytest.raises(MalformedMessage, match=match) as info:
        decode(frames, limits)
    return str(info.value)


def sample_messages() -> list[list[Any]]:
    rng = np.random.default_rng(0)
    return [
        encode(HEADER, rng.standard_normal(40).astype(np.float32)),
        encode(HEADER, [rng.standard_normal((4, 3)), np.arange(5, dtype=np.int16), None]),
        encode(HEADER, {"w": (np.float32(1.5), b"raw", [1, 2]), 7: {"deep": [True, "s"]}}),
        encode({"type": "hello"}),
    ]


# --------------------------------------------------------------------------- round trip


def test_nested_structures_keep_their_types():
    content = {
        "tuple": (1, (2, 3), [4, (5,)]),
        "list": [1, [2, 3], ()],
        7: "int key",
        -1: {True: None, None: 2.5, b"k": b"\x00\xff"},
        (1, "x"): ["tuple key"],
        "scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.complex64(1 - 2j)],
        "plain": [0, -(1 << 63), (1 << 64) - 1, 1.25, "ünïcode", "", b"", None, True, False],
        "empty": [[], (), {}],
    }
    assert_same(round_trip(content), content)


@pytest.mark.parametrize("content", [None, 3, "s", b"b", (), [], np.float64(2.0)])
def test_bare_content_round_trips(content):
    assert_same(round_trip(content), content)


def test_header_round_trips_without_reserved_keys():
    header = {"type": "grad", "layer": (1, 2), "meta": {"k": [1, None]}, 5: b"x"}
    got_header, got = decode(encode(header, [1]))
    assert_same(got_header, header)
    assert got == [1]


def test_bytearray_arrives_as_bytes():
    assert_same(round_trip([bytearray(b"abc")]), [b"abc"])


@pytest.mark.parametrize("dtype", sorted(ALLOWED_DTYPES))
def test_every_allowed_dtype_round_trips_arrays_and_scalars(dtype):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    scalar = array.reshape(-1)[5]
    got = round_trip([array, scalar])
    assert_same(got, [array, scalar])
    assert got[0].dtype.str == dtype


@pytest.mark.parametrize(
    "array",
    [
        np.array(3.5, dtype=np.float32),
        np.zeros(0, dtype=np.float32),
        np.zeros((3, 0, 2), dtype=np.int64),
        np.arange(24.0).reshape(4, 6)[:, ::2],
        np.asfortranarray(np.arange(12).reshape(3, 4)),
        np.arange(12).reshape(3, 4).T,
        np.arange(6, dtype=">f8"),
        np.arange(6, dtype=">i4").reshape(2, 3)[::-1],
    ],
    ids=["0-d", "empty", "empty-3d", "strided", "fortran", "transposed", "big-endian", "be-rev"],
)
def test_unusual_arrays_round_trip_as_little_endian_c_arrays(array):
    got = round_trip({"a": array})["a"]
    assert_same(got, array)
    assert got.flags.c_contiguous


def test_big_endian_scalar_array_values_survive():
    array = np.array([1.5, -2.25], dtype=">f4")
    got = round_trip(array)
    assert got.dtype.str == "<f4"
    assert got.tolist() == [1.5, -2.25]


def test_frames_size_counts_every_byte():
    array = np.ones(1000, dtype=np.float32)
    frames = encode(HEADER, [array, array[:10]])
    assert frames_size(frames) == len(frames[0]) + 4000 + 40
    assert frames_size([b"ab", bytearray(3), memoryview(b"xyz"), zmq.Frame(b"1234")]) == 12


def test_decode_accepts_bytes_bytearray_memoryview_and_zmq_frames():
    array = np.arange(10, dtype=np.uint16)
    frames = encode(HEADER, array)
    for convert in (bytes, bytearray, memoryview, zmq.Frame):
        header, got = decode([convert(bytes(frame)) for frame in frames])
        assert header == HEADER
        assert_same(got, array)


# --------------------------------------------------------------------------- zero copy


def test_encoded_frame_is_the_array_memory():
    array = np.arange(1000, dtype=np.float32)
    frames = encode(HEADER, array)
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.uint8), array)
    array[0] = 42.0
    assert np.frombuffer(frames[1], dtype=np.float32)[0] == 42.0


def test_decoded_array_is_a_view_of_the_frame():
    frames = [bytes(frame) for frame in encode(HEADER, [np.arange(100.0), np.ones((3, 4))])]
    _, (first, second) = decode(frames)
    assert np.shares_memory(first, np.frombuffer(frames[1], dtype=np.uint8))
    assert np.shares_memory(second, np.frombuffer(frames[2], dtype=np.uint8))
    assert not first.flags.writeable  # bytes frames are immutable, and so are their views


def test_decoded_array_of_writable_frame_writes_through():
    frames = [bytearray(frame) for frame in encode(HEADER, np.zeros(4))]
    _, got = decode(frames)
    got[1] = 7.0
    assert np.frombuffer(frames[1], dtype=np.float64)[1] == 7.0


# --------------------------------------------------------------------------- EncodeError


class Custom:
    pass


@pytest.mark.parametrize(
    "content, message",
    [
        ([1, {"w": {1}}], "content[1]['w']: cannot send <class 'set'>"),
        ({"a": (0, Custom())}, "content['a'][1]: cannot send <class 'test_wire.Custom'>"),
        ([np.array([object()])], "content[0]: cannot send array of dtype object"),
        ({"s": np.array(["abc"])}, "content['s']: cannot send array of dtype <U3"),
        ((np.arange(3).astype("M8[s]"),), "content[0]: cannot send array of dtype datetime64"),
        ([np.datetime64(1, "s")], "content[0]: cannot send numpy scalar of dtype datetime64"),
        ([np.str_("x")], "content[0]: cannot send numpy scalar of dtype <U1"),
        ({frozenset(): 1}, "content[frozenset()]: cannot send <class 'frozenset'>"),
        ([[1 << 64]], "content[0][0]: integer 18446744073709551616 does not fit in 64 bits"),
        (msgpack.ExtType(2, b""), "content: cannot send <class 'msgpack.ext.ExtType'>"),
        (np.ma.masked_array([1.0]), "content: cannot send <class 'numpy.ma."),  # .core. < 2.0
        ({1, 2}, "content: cannot send <class 'set'>"),
    ],
)
def test_unsendable_content_raises_encode_error_naming_the_path(content, message):
    with pytest.raises(EncodeError) as info:
        encode(HEADER, content)
    assert str(info.value).startswith(message)


def test_header_rejects_arrays_and_reserved_keys():
    with pytest.raises(EncodeError, match=r"header\['x'\]: arrays go in the content"):
        encode({"x": np.ones(2)})
    for key in ("body", "proto"):
        with pytest.raises(EncodeError, match="reserved"):
            encode({key: 1})
    with pytest.raises(EncodeError, match="expected a mapping"):
        encode([("type", "x")])  # type: ignore[arg-type]


def test_encode_refuses_what_the_receiver_would_refuse():
    deep: Any = 0
    for _ in range(DEFAULT_LIMITS.max_depth + 1):
        deep = [deep]
    with pytest.raises(EncodeError, match="content" + r"\[0\]" * 64 + ": nested deeper"):
        encode({}, deep)
    with pytest.raises(EncodeError, match="max_frames"):
        encode({}, [np.zeros(1)] * 5, limits=Limits(max_frames=5))
    with pytest.raises(EncodeError, match="max_array_elements"):
        encode({}, np.zeros(11), limits=Limits(max_array_elements=10))
    with pytest.raises(EncodeError, match="max_message_bytes"):
        encode({}, np.zeros(100), limits=Limits(max_message_bytes=500))
    with pytest.raises(EncodeError, match="max_header_bytes"):
        encode({}, b"x" * 200, limits=Limits(max_header_bytes=100))
    with pytest.raises(EncodeError, match="cannot be packed"):
        encode({}, "\ud800")


def test_self_referencing_content_is_refused_not_a_recursion_error():
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="nested deeper"):
        encode({}, loop)


# --------------------------------------------------------------------------- MalformedMessage


def test_no_frames_is_malformed():
    assert_malformed([], match="no frames")


def test_random_header_bytes_are_malformed():
    rng = np.random.default_rng(1234)
    for _ in range(300):
        blob = rng.bytes(int(rng.integers(0, 200)))
        try:
            decode([blob])
        except MalformedMessage:
            continue
        pytest.fail(f"decoded random bytes {blob[:20]!r}")  # no random blob is a valid message


def test_every_truncated_header_is_malformed():
    frames = encode(HEADER, [np.ones(3), {"k": (1, 2)}])
    for cut in range(len(frames[0])):
        assert_malformed([frames[0][:cut], *frames[1:]])


def test_header_that_is_not_a_map_is_malformed():
    assert_malformed([msgpack.packb([1, 2])], match="header is a list, expected a map")
    assert_malformed([msgpack.packb("x")], match="header is a str")


def test_header_without_body_or_with_wrong_version_is_malformed():
    assert_malformed([msgpack.packb({"proto": PROTOCOL_VERSION})], match="no 'body'")
    assert_malformed([msgpack.packb({"body": None})], match="protocol version None")
    assert_malformed([msgpack.packb({"body": None, "proto": 99})], match="protocol version 99")


def test_frame_of_wrong_length_is_malformed():
    frames = encode(HEADER, np.ones((2, 3), dtype=np.float32))
    message = assert_malformed([frames[0], bytes(frames[1])[:-1]], match="frame 1 has 23 bytes")
    assert "needs 24" in message
    assert_malformed([frames[0], bytes(frames[1]) + b"\x00"], match="frame 1 has 25 bytes")


@pytest.mark.parametrize("dtype", ["|O", "<U4", ">f4", "<M8[s]", "|V8", "f4", 4, None])
def test_dtype_outside_the_allow_list_is_malformed(dtype):
    frames = encode(HEADER, np.ones(2, dtype=np.float32))
    bad = tamper(frames, lambda tree: tree["body"].__setitem__(1, dtype))
    assert_malformed(bad, match="dtype .* is not allowed")


@pytest.mark.parametrize("index", [0, 2, -1, 1 << 40, "1", 1.0, True])
def test_frame_index_out_of_range_is_malformed(index):
    frames = encode(HEADER, np.ones(2, dtype=np.float32))
    bad = tamper(frames, lambda tree: tree["body"].__setitem__(2, index))
    assert_malformed(bad, match="array in frame")


@pytest.mark.parametrize("shape", [[-1], [1 << 40], [1 << 20, 1 << 20], [2.0], ["2"], [1] * 65])
def test_negative_or_huge_shapes_are_malformed(shape):
    frames = encode(HEADER, np.ones(2, dtype=np.float32))
    bad = tamper(frames, lambda tree: tree["body"].__setitem__(slice(3, None), shape))
    assert_malformed(bad, match="array")


def test_unreferenced_extra_frames_are_malformed():
    frames = encode(HEADER, np.ones(2))
    assert_malformed([*frames, b"extra"], match="1 of 2 frames not referenced")
    assert_malformed([encode(HEADER)[0], b""], match="1 of 1 frames not referenced")


def test_frame_referenced_twice_is_malformed():
    frames = encode(HEADER, [np.ones(2), np.ones(2)])
    bad = tamper(frames, lambda tree: tree["body"][1].__setitem__(2, 1))
    assert_malformed(bad, match="frame 1 is referenced twice")


def test_nesting_beyond_max_depth_is_malformed():
    deep: Any = np.ones(2)
    for _ in range(DEFAULT_LIMITS.max_depth + 1):
        deep = ([deep],)
    frames = encode({}, deep, limits=Limits(max_depth=200))
    assert_malformed(frames, match="nested deeper than max_depth=64")
    assert_malformed([b"\x91" * 100_000 + b"\xc0"])  # beyond msgpack's own stack
    deep_header = encode({"h": [[[1]]]}, limits=Limits(max_depth=200))
    assert_malformed(deep_header, limits=Limits(max_depth=2), match="nested deeper")


def test_too_many_frames_or_bytes_are_malformed():
    assert_malformed([b""] * (DEFAULT_LIMITS.max_frames + 1), match="max_frames=4096")
    frames = encode(HEADER, np.ones(1000))
    assert_malformed(frames, Limits(max_message_bytes=4000), match="max_message_bytes")
    assert_malformed(frames, Limits(max_header_bytes=10), match="max_header_bytes")
    assert_malformed(frames, Limits(max_array_elements=999), match="max_array_elements")


def test_unknown_or_misplaced_tags_and_foreign_types_are_malformed():
    body = {"proto": PROTOCOL_VERSION}
    assert_malformed([msgpack.packb({**body, "body": msgpack.ExtType(9, b"")})], match="ext type 9")
    assert_malformed([msgpack.packb({**body, "body": msgpack.ExtType(1, b"x")})], match="ext type")
    tag = msgpack.ExtType(1, b"")
    assert_malformed([msgpack.packb({**body, "body": [0, tag]})], match="tuple tag out of place")
    assert_malformed([msgpack.packb({**body, "body": {"k": tag}})], match="tag out of place")
    stamp = msgpack.Timestamp(1)
    assert_malformed([msgpack.packb({**body, "body": stamp})], match="unexpected Timestamp")
    assert_malformed([msgpack.packb({**body, "body": {1: 2}}) + b"\x00"], match="ExtraData")


def test_array_outside_the_body_is_malformed():
    frames = encode(HEADER, np.ones(2))
    bad = tamper(frames, lambda tree: tree.__setitem__("x", tree.pop("body")))
    bad = tamper(bad, lambda tree: tree.__setitem__("body", None))
    assert_malformed(bad, match="array outside the message body")


@pytest.mark.parametrize("scalar", [["<f4", b"\x00"], ["<U1", b"abcd"], [b"x"], ["<f4", "abcd"]])
def test_bad_numpy_scalar_is_malformed(scalar):
    frames = encode(HEADER, np.float32(1.0))
    bad = tamper(frames, lambda tree: tree["body"].__setitem__(slice(1, None), scalar))
    assert_malformed(bad, match="numpy scalar")


def test_non_buffer_frames_are_malformed():
    assert_malformed([encode(HEADER)[0], 42], match="frame 1 is not a contiguous buffer")
    assert_malformed(42, match="expected a sequence")
    strided = memoryview(np.arange(10, dtype=np.uint8)[::2])
    assert_malformed([encode(HEADER)[0], strided], match="frame 1 is not a contiguous")


def test_mutated_messages_decode_or_raise_malformed_only():
    rng = np.random.default_rng(42)
    messages = [[bytes(frame) for frame in frames] for frames in sample_messages()]
    decoded = 0
    for _ in range(4000):
        frames = list(messages[int(rng.integers(len(messages)))])
        target = int(rng.integers(len(frames))) if rng.random() < 0.2 else 0
        blob = bytearray(frames[target])
        action = rng.random()
        if action < 0.6 and blob:
            for _ in range(int(rng.integers(1, 4))):
                blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
        elif action < 0.8:
            blob = blob[: int(rng.integers(len(blob) + 1))]
        else:
            position = int(rng.integers(len(blob) + 1))
            blob[position:position] = rng.bytes(int(rng.integers(1, 4)))
        frames[target] = bytes(blob)
        try:
            decode(frames)
            decoded += 1
        except MalformedMessage:
            pass
    assert 0 < decoded < 4000  # the loop exercised both outcomes


# --------------------------------------------------------------------------- real ZeroMQ


@pytest.fixture
def pair():
    options = {zmq.LINGER: 0, zmq.RCVTIMEO: 5000, zmq.SNDTIMEO: 5000}
    with loopback_pair(zmq.PAIR, zmq.PAIR, options) as (server, client):
        yield client, server


def test_message_round_trips_through_zmq_without_copies(pair):
    sender, receiver = pair
    rng = np.random.default_rng(7)
    content = {
        "layers": [rng.standard_normal((784, 128)).astype(np.float32), np.zeros(128, "f4")],
        "meta": (1, b"x", np.int32(5), {2: None}),
    }
    sender.send_multipart(encode(HEADER, content), copy=False)
    frames = receiver.recv_multipart(copy=False)
    assert all(isinstance(frame, zmq.Frame) for frame in frames)
    header, got = decode(frames)
    assert header == HEADER
    assert_same(got, content)
    weight = got["layers"][0]
    assert np.shares_memory(weight, np.frombuffer(frames[1], dtype=np.uint8))
