"""A PNG picture of a training run: loss per batch and test accuracy per epoch, side by side.

Written with numpy, zlib and struct only: the project ships no plotting library, yet every
run folder should carry a chart anyone can open. No anti-aliasing; text is a 5x7 bitmap font.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psgd.results.records import atomic_write_bytes

__all__ = ["encode_png", "plot_run"]

WIDTH_PX = 900
HEIGHT_PX = 420
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
]
WHITE = (255, 255, 255)
INK = (40, 40, 40)
FRAME = (110, 110, 110)
GRID = (232, 232, 232)
LEGEND_BORDER = (190, 190, 190)

# 5x7 glyphs, seven rows top to bottom, two hex digits a row, bit 4 the leftmost column.
_GLYPH_CHARS = (
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz .-:/%()_=+,'[]<>!?*#|"
)
_GLYPH_HEX = (
    "0e11131519110e040c040404040e0e11010204081f1f02040201110e02060a121f0202"
    "1f101e0101110e0608101e11110e1f0102040808080e11110e11110e0e11110f01020c"
    "0e11111f1111111e11111e11111e0e11101010110e1c12111111121c1f10101e10101f"
    "1f10101e1010100e11101711110f1111111f1111110e04040404040e0702020202120c"
    "111214181412111010101010101f111b1515111111111119151311110e11111111110e"
    "1e11111e1010100e11111115120d1e11111e1412110f10100e01011e1f040404040404"
    "1111111111110e11111111110a041111111515150a11110a040a111111110a04040404"
    "1f01020408101f00000e010f110f1010161911111e00000e1010110e01010d1311110f"
    "00000e111f100e0609081c0808080f1111110f010e1010161911111104000c0404040e"
    "0200060202120c101012141814120c04040404040e00001a1515111100001619111111"
    "00000e1111110e1e1111111e10100f1111110f01010000161910101000000f100e011e"
    "08081c080809060000111111130d00001111110a040000111115150a0000110a040a11"
    "111111110f010e00001f0204081f0000000000000000000000000c0c0000001f000000"
    "000c0c000c0c0000010204081000181902040813030204080808040208040202020408"
    "0000000000001f00001f001f00000004041f040400000000000c040804040800000000"
    "0e08080808080e0e02020202020e020408100804020804020102040804040404040004"
    "0e1101020400040004150e1504000a0a1f0a1f0a0a04040404040404"
)
_ROWS = np.frombuffer(bytes.fromhex(_GLYPH_HEX), dtype=np.uint8).reshape(-1, 7)
_FONT = dict(
    zip(_GLYPH_CHARS, ((_ROWS[:, :, None] >> np.arange(4, -1, -1)) & 1).astype(bool), strict=True)
)
_TOFU = np.ones((7, 5), dtype=bool)  # an unknown character draws as an empty box
_TOFU[1:-1, 1:-1] = False
_ADVANCE = 6  # glyph width plus one column of spacing
_DESCENDERS = "gpqy"  # drawn two rows lower
_LEGEND_ROWS = 10  # more series than this end in "+k more"
_INSET = 5  # px between the frame and the data limits: no line hides under the frame


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(h, w, 3)`` uint8 image: 8-bit RGB, no interlace, filter type 0 rows."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(
            f"encode_png: expected a non-empty (h, w, 3) uint8 array, got {rgb.dtype} {rgb.shape}"
        )
    height, width = rgb.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # leading 0: filter type "none"
    rows[:, 1:] = rgb.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def _text_width(text: str, scale: int = 1) -> int:
    return max(len(text) * _ADVANCE - 1, 0) * scale


def _paint(img: np.ndarray, x: int, y: int, mask: np.ndarray, color: tuple[int, int, int]) -> None:
    """Set the pixels of ``mask`` placed with its top-left corner at (x, y), clipped to img."""
    h, w = mask.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, img.shape[1]), min(y + h, img.shape[0])
    if x0 < x1 and y0 < y1:
        img[y0:y1, x0:x1][mask[y0 - y : y1 - y, x0 - x : x1 - x]] = color


def _draw_text(img: np.ndarray, x: int, y: int, text: str, color=INK, scale: int = 1) -> None:
    for i, char in enumerate(text):
        glyph = _FONT.get(char, _TOFU).repeat(scale, axis=0).repeat(scale, axis=1)
        drop = 2 * scale if char in _DESCENDERS else 0
        _paint(img, x + i * _ADVANCE * scale, y + drop, glyph, color)


def _fit(text: str, width_px: int, scale: int = 1) -> str:
    """``text`` cut (with a trailing "..") to fit in width_px."""
    if _text_width(text, scale) <= width_px:
        return text
    keep = max(width_px // (_ADVANCE * scale) - 2, 0)
    return text[:keep] + ".."


def _polyline(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, color, clip) -> None:
    """Straight segments through pixel points (float arrays), 2 px thick, clipped to
    ``clip = (left, top, right, bottom)`` inclusive. Vectorised: every pixel of every
    segment is computed at once, one sample per pixel along the longer axis."""
    if xs.size > 1:
        dx, dy = np.diff(xs), np.diff(ys)
        steps = np.maximum(np.ceil(np.maximum(np.abs(dx), np.abs(dy))), 1).astype(np.int64)
        seg = np.repeat(np.arange(steps.size), steps)
        t = (np.arange(seg.size) - np.repeat(np.cumsum(steps) - steps, steps)) / steps[seg]
        xs = np.append(xs[seg] + t * dx[seg], xs[-1])
        ys = np.append(ys[seg] + t * dy[seg], ys[-1])
    px, py = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
    px = np.concatenate([px, px + 1, px, px + 1])
    py = np.concatenate([py, py, py + 1, py + 1])
    left, top, right, bottom = clip
    keep = (px >= left) & (px <= right) & (py >= top) & (py <= bottom)
    img[py[keep], px[keep]] = color


def _column_extremes(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most two points (min and max) per pixel column, so 10^5 batches draw like 10^3.
    ``px`` must be sorted."""
    col = px.astype(np.int64)
    if px.size <= 2 * (col[-1] - col[0] + 1):
        return px, py
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    low, high = np.minimum.reduceat(py, starts), np.maximum.reduceat(py, starts)
    return np.repeat(px[starts], 2), np.column_stack([low, high]).ravel()


def _axis(lo: float, hi: float, count: int, integer: bool, snap: bool):
    """Limits and about ``count`` "nice" ticks (1, 2 or 5 times a power of ten) for [lo, hi].

    ``snap`` widens the limits to whole steps; otherwise the ticks are those inside.
    Returns ``(lo, hi, ticks, decimals)``.
    """
    if not hi - lo > 1e-9 * max(abs(lo), abs(hi)):
        pad = 0.5 if integer else (abs(lo) * 0.1 or 1.0)
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * 0.999)
    if integer:
        step = max(step, 1.0)
    if snap:
        lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    first = math.ceil(lo / step - 1e-9)
    ticks = (first + np.arange(math.floor(hi / step + 1e-9) - first + 1)) * step
    return lo, hi, ticks, max(0, -math.floor(math.log10(step) + 1e-9))


def _label(value: float, decimals: int) -> str:
    if decimals > 4 or abs(value) >= 1e7:
        return f"{value:.2g}"
    return f"{value + 0.0:.{decimals}f}"  # + 0.0 turns -0.0 into 0.0


@dataclass
class _Series:
    name: str
    color: tuple[int, int, int]
    x: np.ndarray  # finite points only
    y: np.ndarray


@dataclass
class _Axes:
    """A panel's plot area: its frame in pixels and the data limits mapped inside it."""

    frame: tuple[int, int, int, int]  # left, top, right, bottom; inclusive
    x_lim: tuple[float, float]
    y_lim: tuple[float, float]

    def px(self, x: np.ndarray) -> np.ndarray:
        left, _, right, _ = self.frame
        lo, hi = self.x_lim
        return left + _INSET + (x - lo) / (hi - lo) * (right - left - 2 * _INSET)

    def py(self, y: np.ndarray) -> np.ndarray:
        _, top, _, bottom = self.frame
        lo, hi = self.y_lim
        return bottom - _INSET - (y - lo) / (hi - lo) * (bottom - top - 2 * _INSET)


def _draw_panel(img, box, title: str, xlabel: str, series: list[_Series], markers: bool) -> None:
    left, top, right, bottom = box
    scale = 2 if _text_width(title, 2) < right - left - 10 else 1
    _draw_text(img, (left + right - _text_width(title, scale)) // 2, top + 4, title, INK, scale)
    live = [s for s in series if s.x.size]
    if not live:
        x0, y0, x1, y1 = left + 14, top + 30, right - 14, bottom - 32
        _draw_box(img, (x0, y0, x1, y1), FRAME)
        x, y = (x0 + x1 - _text_width("no data", 2)) // 2, (y0 + y1) // 2 - 7
        _draw_text(img, x, y, "no data", FRAME, 2)
        return
    axes, x_ticks, y_ticks = _fit_axes(box, live)
    _draw_ticks(img, axes, x_ticks, y_ticks, xlabel)
    for s in live:
        px, py = _column_extremes(axes.px(s.x), axes.py(s.y))
        _polyline(img, px, py, s.color, axes.frame)
        if markers and s.x.size <= (axes.frame[2] - axes.frame[0]) // 8:
            for x, y in zip(np.rint(px).astype(int), np.rint(py).astype(int), strict=True):
                img[y - 2 : y + 3, x - 2 : x + 3] = s.color
    _draw_box(img, axes.frame, FRAME)
    _draw_legend(img, axes.frame, live)


def _fit_axes(box, series: list[_Series]):
    """The axes of a panel and its ``(value, label)`` ticks on x and y; the frame leaves room
    on the left for the widest y label."""
    left, top, right, bottom = box
    xs = np.concatenate([s.x for s in series])
    ys = np.concatenate([s.y for s in series])
    x_count, y_count = max((right - left) // 70, 2), min(max((bottom - top) // 60, 2), 5)
    x_lo, x_hi, x_values, x_dec = _axis(float(xs.min()), float(xs.max()), x_count, True, False)
    y_lo, y_hi, y_values, y_dec = _axis(float(ys.min()), float(ys.max()), y_count, False, True)
    x_ticks = [(v, _label(v, x_dec)) for v in x_values]
    y_ticks = [(v, _label(v, y_dec)) for v in y_values]
    label_px = max(_text_width(label) for _, label in y_ticks)
    frame = (left + 14 + label_px, top + 30, right - 14, bottom - 32)
    return _Axes(frame, (x_lo, x_hi), (y_lo, y_hi)), x_ticks, y_ticks


def _draw_ticks(img: np.ndarray, axes: _Axes, x_ticks, y_ticks, xlabel: str) -> None:
    """Grid lines, tick marks and their labels, and the x axis name below."""
    left, top, right, bottom = axes.frame
    for value, label in y_ticks:
        row = int(np.rint(axes.py(value)))
        img[row, left + 1 : right] = GRID
        img[row, left - 4 : left] = FRAME
        _draw_text(img, left - 7 - _text_width(label), row - 3, label)
    for value, label in x_ticks:
        col = int(np.rint(axes.px(value)))
        img[top + 1 : bottom, col] = GRID
        img[bottom + 1 : bottom + 5, col] = FRAME
        _draw_text(img, col - _text_width(label) // 2, bottom + 8, label)
    _draw_text(img, (left + right - _text_width(xlabel)) // 2, bottom + 20, xlabel, FRAME)


def _draw_box(img: np.ndarray, box, color) -> None:
    left, top, right, bottom = box
    img[top, left : right + 1] = img[bottom, left : right + 1] = color
    img[top : bottom + 1, left] = img[top : bottom + 1, right] = color


def _draw_legend(img: np.ndarray, frame, series: list[_Series]) -> None:
    """A boxed legend in the corner of the plot area that hides the fewest data pixels."""
    left, top, right, bottom = frame
    entries: list[tuple[str, tuple | None]] = [(s.name, s.color) for s in series]
    room = min((bottom - top - 18) // 12, _LEGEND_ROWS)
    if len(entries) > room:
        shown = max(room - 1, 0)
        entries = entries[:shown] + [(f"+{len(entries) - shown} more", None)]
    entries = [(_fit(name, (right - left) // 2 - 30), color) for name, color in entries]
    width = 32 + max(_text_width(name) for name, _ in entries)
    height = 12 * len(entries) + 6
    corners = [
        (right - 6 - width, top + 6),
        (right - 6 - width, bottom - 6 - height),
        (left + 6, top + 6),
        (left + 6, bottom - 6 - height),
    ]

    def covered(corner: tuple[int, int]) -> int:
        area = img[corner[1] : corner[1] + height, corner[0] : corner[0] + width]
        background = np.all(area == WHITE, axis=2) | np.all(area == GRID, axis=2)
        return int((~background).sum())

    x, y = min(corners, key=covered)
    img[y : y + height, x : x + width] = WHITE
    _draw_box(img, (x, y, x + width - 1, y + height - 1), LEGEND_BORDER)
    for i, (name, color) in enumerate(entries):
        row = y + 4 + 12 * i
        if color is not None:
            img[row + 3 : row + 5, x + 5 : x + 22] = color
        _draw_text(img, x + 26, row, name)


def _series(data: dict[str, Sequence[float]], colors: dict, first_x: int) -> list[_Series]:
    out = []
    for name, values in data.items():
        y = np.asarray(values, dtype=np.float64).ravel()
        x = np.arange(first_x, first_x + y.size, dtype=np.float64)
        finite = np.isfinite(y)
        out.append(_Series(str(name), colors[name], x[finite], y[finite]))
    return out


def plot_run(
    path: Path,
    batch_loss: dict[str, Sequence[float]],
    epoch_accuracy: dict[str, Sequence[float]],
    title: str = "",
    *,
    width: int = WIDTH_PX,
    height: int = HEIGHT_PX,
) -> Path:
    """Write a PNG chart of a run: training loss per batch (left), test accuracy per epoch (right).

    Parameters
    ----------
    path : where the PNG goes; written atomically (temporary file, then ``os.replace``).
    batch_loss : series name (e.g. ``"node 0"``) -> loss of each batch, x = batch index from 0.
    epoch_accuracy : series name -> test accuracy after each epoch, x = epoch from 1.
    title : drawn centred above both panels when given.
    width, height : image size in pixels, at least 300 x 160.

    A name keeps its colour in both panels. NaN and infinite values are skipped; a panel
    with nothing finite to draw says "no data". Returns ``path``.
    """
    if width < 300 or height < 160:
        raise ValueError(f"plot_run: expected at least 300x160 px, got {width}x{height}")
    path = Path(path)
    names = list(dict.fromkeys([*batch_loss, *epoch_accuracy]))
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    top = 0
    if title:
        text = _fit(title, width - 20, 2)
        _draw_text(img, (width - _text_width(text, 2)) // 2, 8, text, INK, 2)
        top = 32
    half = width // 2
    loss, accuracy = _series(batch_loss, colors, 0), _series(epoch_accuracy, colors, 1)
    _draw_panel(img, (0, top, half, height), "training loss", "batch", loss, markers=False)
    _draw_panel(img, (half, top, width, height), "test accuracy", "epoch", accuracy, markers=True)
    atomic_write_bytes(path, encode_png(img))
    return path
