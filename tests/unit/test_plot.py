"""psgd.results.plot: valid PNG bytes; run charts with each series in its own panel and colour."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from psgd.results.plot import PALETTE, _axis, _column_extremes, encode_png, plot_run

pytestmark = pytest.mark.timeout(30)

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of an 8-bit RGB, non-interlaced PNG whose rows all use filter type 0."""
    assert data[:8] == SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert [kind for kind, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color_type, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any(), "expected filter type 0 on every row"
    return rows[:, 1:].reshape(height, width, 3)


def read_png(path: Path) -> np.ndarray:
    return decode_png(path.read_bytes())


def has_color(img: np.ndarray, color: tuple[int, int, int]) -> bool:
    return bool(np.all(img == np.array(color, dtype=np.uint8), axis=2).any())


def test_encode_png_round_trips_pixels() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    data = encode_png(rgb)
    assert data.startswith(SIGNATURE)
    np.testing.assert_array_equal(decode_png(data), rgb)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), dtype=np.float32), np.zeros((4, 4), np.uint8), np.zeros((0, 4, 3))]
)
def test_encode_png_rejects_anything_but_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(h, w, 3\) uint8"):
        encode_png(bad)


def test_plot_run_writes_png_of_requested_size(tmp_path: Path) -> None:
    out = plot_run(
        tmp_path / "plot.png",
        {"node 0": [2.0, 1.0, 0.5]},
        {"node 0": [0.5, 0.8]},
        title="run 1",
        width=640,
        height=300,
    )
    assert out == tmp_path / "plot.png"
    img = read_png(out)
    assert img.shape == (300, 640, 3)
    assert not np.all(img == 255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]  # no temporary file left


def test_each_series_keeps_its_colour_in_its_own_panel(tmp_path: Path) -> None:
    loss = {"node 0": np.linspace(2, 0.1, 50), "node 1": np.linspace(2.5, 0.3, 50)}
    accuracy = {"node 0": [0.5, 0.7, 0.8], "node 1": [0.4, 0.6, 0.9], "node 2": [0.3, 0.5, 0.6]}
    img = read_png(plot_run(tmp_path / "p.png", loss, accuracy))
    left, right = img[:, :450], img[:, 450:]
    for i in range(3):
        assert has_color(right, PALETTE[i]), f"series {i} missing from the accuracy panel"
    assert has_color(left, PALETTE[0]) and has_color(left, PALETTE[1])
    assert not has_color(left, PALETTE[2]), "node 2 has no loss, its colour must stay right"


@pytest.mark.parametrize(
    ("loss", "accuracy"),
    [
        ({"node 0": [1.0, float("nan"), 0.5, float("inf")]}, {"node 0": [float("nan"), 0.5]}),
        ({"node 0": []}, {"node 0": []}),
        ({}, {}),
        ({"node 0": [float("nan")] * 5}, {"node 0": [0.9]}),
        ({"node 0": [0.7] * 100}, {"node 0": [0.25, 0.25, 0.25]}),
        ({"node 0": [3.0]}, {"node 0": [1.0]}),
    ],
    ids=["nan", "empty-series", "no-series", "all-nan", "constant", "single-point"],
)
def test_odd_series_still_give_a_chart(tmp_path: Path, loss: dict, accuracy: dict) -> None:
    img = read_png(plot_run(tmp_path / "p.png", loss, accuracy))
    assert img.shape == (420, 900, 3)
    assert not np.all(img[:, :450] == 255) and not np.all(img[:, 450:] == 255)


def test_finite_points_of_a_series_with_nan_are_drawn(tmp_path: Path) -> None:
    img = read_png(plot_run(tmp_path / "p.png", {"a": [1.0, float("nan"), 0.5]}, {}))
    assert has_color(img[:, :450], PALETTE[0])


def test_many_series_fit_a_capped_legend(tmp_path: Path) -> None:
    loss = {f"node {i}": np.linspace(1, 0, 20) + i for i in range(25)}
    img = read_png(plot_run(tmp_path / "p.png", loss, loss))
    assert img.shape == (420, 900, 3)


def test_unknown_characters_still_draw_something(tmp_path: Path) -> None:
    img = read_png(plot_run(tmp_path / "p.png", {}, {}, title="\u00e9\u00e9\u00e9"))
    assert not np.all(img[:30] == 255)


def test_ten_thousand_point_series_plot_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    loss = {
        f"node {i}": np.exp(-np.arange(10_000) / 2000) + 0.1 * rng.random(10_000) for i in range(4)
    }
    start = time.perf_counter()
    plot_run(tmp_path / "p.png", loss, {"node 0": list(np.linspace(0.5, 0.9, 20))})
    assert time.perf_counter() - start < 0.5


def test_plot_run_overwrites_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    plot_run(target, {"a": [1.0, 2.0]}, {})
    assert target.read_bytes().startswith(SIGNATURE)


def test_plot_run_rejects_a_tiny_image(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 300x160"):
        plot_run(tmp_path / "p.png", {}, {}, width=100, height=50)


def test_axis_ticks_are_round_numbers_covering_the_data() -> None:
    lo, hi, ticks, decimals = _axis(0.13, 2.9, 6, integer=False, snap=True)
    assert (lo, hi, decimals) == (0.0, 3.0, 1)
    np.testing.assert_allclose(ticks, [0, 0.5, 1, 1.5, 2, 2.5, 3])
    lo, hi, ticks, decimals = _axis(0, 9999, 6, integer=True, snap=False)
    assert (lo, hi, decimals) == (0, 9999, 0)
    np.testing.assert_allclose(ticks, [0, 2000, 4000, 6000, 8000])
    _, _, ticks, _ = _axis(1, 1, 6, integer=True, snap=False)  # a single epoch
    np.testing.assert_allclose(ticks, [1])


def test_column_extremes_keep_min_and_max_of_each_pixel_column() -> None:
    px = np.linspace(0, 9.99, 1000)
    py = np.sin(np.arange(1000))
    xs, ys = _column_extremes(px, py)
    assert len(xs) == 20
    assert ys.min() == py.min() and ys.max() == py.max()
    few = np.arange(5.0)
    assert _column_extremes(few, few)[0] is few
