"""psgd's Conv2D forward + backward against a bare numpy im2col convolution, in the same run.

Both compute the same thing on the same arrays (float32, NHWC, stride 1): the im2col matrix,
one matrix product forward, two backward, col2im by one strided add per kernel offset. The
bare version is written as one would by hand (``np.pad``, ``sliding_window_view``, fresh
arrays each call); psgd's layer reuses its buffers. Shapes: the two convolutions of McMahan
et al.'s MNIST CNN (``--model cnn-mnist``) at batch 10 (FedAvg's B) and 64, and the first of
the CIFAR-10 CNN. Prints the median of alternating timed runs of each and their ratio
(psgd/bare, higher is better). The issue's bar: ratio >= 0.9.

    python bench/bench_conv.py [--repeats 7] [--steps 30]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

from psgd.nn import Conv2D  # noqa: E402

#: (name, batch, height, width, in channels, out channels, kernel, padding)
CASES = [
    ("mnist conv0 B=10", 10, 28, 28, 1, 32, 5, 2),
    ("mnist conv1 B=10", 10, 14, 14, 32, 64, 5, 2),
    ("mnist conv1 B=64", 64, 14, 14, 32, 64, 5, 2),
    ("cifar conv0 B=32", 32, 32, 32, 3, 6, 5, 0),
]


def bare_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, pad: int) -> tuple[np.ndarray, ...]:
    """``(n, H, W, C)`` by ``(k, k, C, F)`` -> ``(n, H', W', F)``; also returns the im2col."""
    k, _, c, f = W.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))  # (n, H', W', C, k, k)
    n, ho, wo = windows.shape[:3]
    cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, k * k * c)
    y = cols @ W.reshape(k * k * c, f) + b
    return y.reshape(n, ho, wo, f), cols


def bare_backward(
    dy: np.ndarray, cols: np.ndarray, W: np.ndarray, x_shape: tuple[int, ...], pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of the input, weights and bias."""
    k, _, c, f = W.shape
    n, h, w, _ = x_shape
    ho, wo = dy.shape[1:3]
    dy2 = dy.reshape(-1, f)
    dW = (cols.T @ dy2).reshape(W.shape)
    db = dy2.sum(axis=0)
    dcols = (dy2 @ W.reshape(k * k * c, f).T).reshape(n, ho, wo, k, k, c)
    dxp = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dy.dtype)
    for a in range(k):
        for b_ in range(k):
            dxp[:, a : a + ho, b_ : b_ + wo, :] += dcols[:, :, :, a, b_, :]
    return dxp[:, pad : pad + h, pad : pad + w, :], dW, db


def time_bare(x: np.ndarray, dy: np.ndarray, W: np.ndarray, b: np.ndarray, pad: int,
              steps: int) -> float:  # fmt: skip
    start = time.perf_counter()
    for _ in range(steps):
        _, cols = bare_forward(x, W, b, pad)
        bare_backward(dy, cols, W, x.shape, pad)
    return (time.perf_counter() - start) / steps


def time_psgd(conv: Conv2D, x: np.ndarray, dy: np.ndarray, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        conv.forward(x)
        conv.backward(dy.copy())  # a layer may overwrite its upstream gradient
    return (time.perf_counter() - start) / steps


def check_same(conv: Conv2D, x: np.ndarray, dy: np.ndarray, pad: int) -> None:
    y, cols = bare_forward(x, conv.W.value, conv.b.value, pad)
    np.testing.assert_allclose(conv.forward(x), y, rtol=1e-4, atol=1e-4)
    dx, dW, _ = bare_backward(dy, cols, conv.W.value, x.shape, pad)
    np.testing.assert_allclose(conv.backward(dy.copy()), dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.W.grad, dW, rtol=1e-3, atol=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ratios = []
    for name, n, h, w, c, f, k, pad in CASES:
        conv = Conv2D(c, f, k, padding=pad, rng=rng)
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        dy = rng.standard_normal(conv.forward(x).shape).astype(np.float32)
        check_same(conv, x, dy, pad)
        bare, ours = [], []
        for _ in range(args.repeats):
            bare.append(time_bare(x, dy, conv.W.value, conv.b.value, pad, args.steps))
            ours.append(time_psgd(conv, x, dy, args.steps))
        b_ms, p_ms = statistics.median(bare) * 1e3, statistics.median(ours) * 1e3
        ratios.append(b_ms / p_ms)
        print(f"{name:18s}: bare {b_ms:7.2f} ms  psgd {p_ms:7.2f} ms  ratio {b_ms / p_ms:.3f}")
    print(f"ratio psgd/bare (geometric mean): {statistics.geometric_mean(ratios):.3f} "
          f"(bar: >= 0.9)")  # fmt: skip


if __name__ == "__main__":
    main()
