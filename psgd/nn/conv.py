"""Image layers on ``(n, height, width, channels)`` batches: `Conv2D` (im2col on BLAS) and
`MaxPool2D`.

Channels come last (NHWC), so the im2col matrix is built from contiguous channel runs and the
convolution's output is the matrix product itself, with no transpose: one ``(n*H'*W', k*k*C)``
by ``(k*k*C, F)`` product forward; backward one product for the kernel's gradient and, for the
input's, the full correlation of the output gradient with the turned kernel (an im2col and a
product again, instead of a col2im of k*k strided additions).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import DTypeLike

from psgd.errors import ConfigError, ModelError
from psgd.nn.layers import INITS, Layer, Variable, WeightedLayer

__all__ = ["Conv2D", "MaxPool2D"]

#: Below this many input channels the input gradient is a col2im: the correlation's product
#: would be nearly a matrix-vector one, slower than the k*k additions.
_MIN_CHANNELS_FOR_CORRELATION = 8


class Conv2D(WeightedLayer):
    """2-D convolution, stride 1: ``y[n, i, j, f] = b[f] + sum_{a, c, ch} x[n, i+a, j+c, ch]
    * W[a, c, ch, f]`` over a zero-padded input.

    Parameters
    ----------
    in_channels, out_channels : int
        ``C`` and ``F``; ``W`` has shape ``(kernel, kernel, C, F)``, ``b`` shape ``(F,)``.
    kernel : int
        Side of the square kernel.
    padding : int or "same"
        Zeros added on each side; ``"same"`` is ``kernel // 2`` (odd kernels keep the size).
    rng : np.random.Generator, optional
        Source of the initial weights (He uniform with fan-in ``kernel*kernel*C`` by default).
    init : {"he", "glorot"}
    dtype : {float32, float64}
    """

    name = "conv"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        padding: int | str = 0,
        rng: np.random.Generator | None = None,
        init: str = "he",
        dtype: DTypeLike = np.float32,
        name: str = "conv",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"Conv2D init: unknown {init!r} (valid: {', '.join(INITS)})")
        if min(in_channels, out_channels, kernel) < 1:
            raise ModelError(
                f"Conv2D: channels and kernel must be >= 1, got {in_channels}, {out_channels}, "
                f"{kernel}"
            )
        pad = kernel // 2 if padding == "same" else padding
        if not isinstance(pad, int) or pad < 0:
            raise ModelError(f"Conv2D: padding must be an int >= 0 or 'same', got {padding!r}")
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.padding, self.init = pad, init
        rng = np.random.default_rng() if rng is None else rng
        fan_in = kernel * kernel * in_channels
        fan = fan_in if init == "he" else fan_in + kernel * kernel * out_channels
        limit = math.sqrt(6.0 / fan)
        shape = (kernel, kernel, in_channels, out_channels)
        dtype = np.dtype(dtype)
        self.W = Variable(f"{name}.W", rng.uniform(-limit, limit, shape).astype(dtype))
        self.b = Variable(f"{name}.b", np.zeros(out_channels, dtype))
        self._cols: np.ndarray | None = None
        self._in_shape: tuple[int, ...] = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or in_shape[2] != self.in_channels:
            raise ModelError(
                f"{self!r} takes (height, width, {self.in_channels}) samples, got {in_shape}"
            )
        h, w = (side + 2 * self.padding - self.kernel + 1 for side in in_shape[:2])
        if h < 1 or w < 1:
            raise ModelError(f"{self!r}: input {in_shape} is smaller than the kernel")
        return (h, w, self.out_channels)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(n, H, W, C) -> (n, H', W', F)`` with ``H' = H + 2*padding - kernel + 1``."""
        W = self.W.value
        if x.dtype != W.dtype:
            x = x.astype(W.dtype)
        n, h, w, c = x.shape
        k, p, f = self.kernel, self.padding, self.out_channels
        ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
        if p:
            # the border is zeroed when the buffer is made and never written afterwards
            padded = self._buffer("padded", (n, h + 2 * p, w + 2 * p, c), x.dtype, fill=0.0)
            padded[:, p : p + h, p : p + w, :] = x
            x = padded
        cols2d = _im2col(x, k, self._buffer("cols", (n, ho, wo, k, k, c), x.dtype))
        y = self._buffer("y", (n * ho * wo, f), x.dtype)
        np.dot(cols2d, W.reshape(k * k * c, f), out=y)
        y += self.b.value
        self._cols, self._in_shape = cols2d, (n, h, w, c)
        return y.reshape(n, ho, wo, f)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Fill ``W.grad`` and ``b.grad``; return the input gradient ``(n, H, W, C)``."""
        if self._cols is None:
            raise RuntimeError("Conv2D.backward called before forward")
        n, h, w, c = self._in_shape
        k, p, f = self.kernel, self.padding, self.out_channels
        ho, wo = grad_out.shape[1:3]
        dy = np.ascontiguousarray(grad_out).reshape(n * ho * wo, f)
        np.dot(self._cols.T, dy, out=self.W.grad.reshape(k * k * c, f))
        # a dot with ones sums the rows several times faster than np.add.reduce(axis=0)
        np.dot(self._buffer("ones", (n * ho * wo,), dy.dtype, fill=1.0), dy, out=self.b.grad)
        if not need_input_grad:
            return None
        if p > k - 1 or c < _MIN_CHANNELS_FOR_CORRELATION:
            return self._col2im_grad(dy, (n, h, w, c), (ho, wo))
        # dx is the full correlation of dy with the kernel turned by 180 degrees: an im2col of
        # the padded dy and one product, much faster than adding k*k strided windows back
        # (whose rows are only C values long)
        q = k - 1 - p
        grad = dy.reshape(n, ho, wo, f)
        if q:
            padded = self._buffer("dy_padded", (n, ho + 2 * q, wo + 2 * q, f), dy.dtype, fill=0.0)
            padded[:, q : q + ho, q : q + wo, :] = grad
            grad = padded
        dcols = _im2col(grad, k, self._buffer("dcols", (n, h, w, k, k, f), dy.dtype))
        turned = self._buffer("turned", (k, k, f, c), dy.dtype)
        np.copyto(turned, self.W.value[::-1, ::-1].transpose(0, 1, 3, 2))
        dx = self._buffer("dx", (n * h * w, c), dy.dtype)
        np.dot(dcols, turned.reshape(k * k * f, c), out=dx)
        return dx.reshape(n, h, w, c)

    def _col2im_grad(
        self, dy: np.ndarray, in_shape: tuple[int, int, int, int], out_hw: tuple[int, int]
    ) -> np.ndarray:
        """The input gradient by col2im, for few input channels: the patch gradients are made
        channel-first, ``(k, k, C, n, H', W')``, so each of the k*k additions runs over rows
        of W' values rather than of C."""
        (n, h, w, c), (ho, wo), k, p = in_shape, out_hw, self.kernel, self.padding
        dcols = self._buffer("dcols_t", (k * k * c, n * ho * wo), dy.dtype)
        np.dot(self.W.value.reshape(k * k * c, self.out_channels), dy.T, out=dcols)
        planes = dcols.reshape(k, k, c, n, ho, wo)
        dx_t = self._buffer("dx_t", (c, n, h + 2 * p, w + 2 * p), dy.dtype)
        dx_t.fill(0.0)
        for a in range(k):
            for b in range(k):
                dx_t[:, :, a : a + ho, b : b + wo] += planes[a, b]
        dx = self._buffer("dx", (n, h, w, c), dy.dtype)
        np.copyto(dx, dx_t[:, :, p : p + h, p : p + w].transpose(1, 2, 3, 0))
        return dx

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.name, "in_channels": self.in_channels,
            "out_channels": self.out_channels, "kernel": self.kernel,
            "padding": self.padding, "init": self.init,
        }  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Conv2D({self.in_channels}, {self.out_channels}, kernel={self.kernel}, "
            f"padding={self.padding})"
        )


def _im2col(x: np.ndarray, k: int, out: np.ndarray) -> np.ndarray:
    """The ``(n*H'*W', k*k*C)`` patch matrix of ``x`` ``(n, H, W, C)``, written into `out`
    ``(n, H', W', k, k, C)``: one copy from a strided window view."""
    windows = sliding_window_view(x, (k, k), axis=(1, 2))  # (n, H', W', C, k, k)
    np.copyto(out, windows.transpose(0, 1, 2, 4, 5, 3))
    n, ho, wo = out.shape[:3]
    return out.reshape(n * ho * wo, -1)


class MaxPool2D(Layer):
    """Max over ``size x size`` windows with stride ``size``: ``(n, H, W, C) -> (n, H//size,
    W//size, C)`` (a last partial row or column is dropped).

    The gradient goes to one element of each window, the first maximum in row-major order.
    """

    name = "maxpool"

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1:
            raise ModelError(f"MaxPool2D: size must be an int >= 1, got {size!r}")
        self.size = size
        self._x: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or min(in_shape[:2]) < self.size:
            raise ModelError(f"{self!r} takes (height, width, channels) samples, got {in_shape}")
        return (in_shape[0] // self.size, in_shape[1] // self.size, in_shape[2])

    def _windows(self, x: np.ndarray, ho: int, wo: int) -> list[np.ndarray]:
        s = self.size
        return [x[:, a : ho * s : s, b : wo * s : s, :] for a in range(s) for b in range(s)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, h, w, c = x.shape
        ho, wo = h // self.size, w // self.size
        y = self._buffer("y", (n, ho, wo, c), x.dtype)
        windows = self._windows(x, ho, wo)
        np.copyto(y, windows[0])
        for window in windows[1:]:
            np.maximum(y, window, out=y)
        self._x, self._y = x, y
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._x is None or self._y is None:
            raise RuntimeError("MaxPool2D.backward called before forward")
        if not need_input_grad:
            return None
        x, y = self._x, self._y
        ho, wo = y.shape[1:3]
        dx = self._buffer("dx", x.shape, grad_out.dtype)
        if x.shape[1] != ho * self.size or x.shape[2] != wo * self.size:
            dx.fill(0.0)  # the dropped last row or column gets no gradient
        free = self._buffer("free", y.shape, np.dtype(bool))
        free.fill(True)
        hit = self._buffer("hit", y.shape, np.dtype(bool))
        for window, target in zip(self._windows(x, ho, wo), self._windows(dx, ho, wo), strict=True):
            np.equal(window, y, out=hit)
            hit &= free
            free &= ~hit
            np.multiply(grad_out, hit, out=target)
        return dx

    def spec(self) -> dict[str, Any]:
        return {"type": self.name, "size": self.size}

    def __repr__(self) -> str:
        return f"MaxPool2D({self.size})"
