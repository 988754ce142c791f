"""A hand-written numpy MNIST CNN (McMahan et al.'s) for the benchmarks' baselines.

Plain idiomatic numpy (no psgd), float32, channels last: 5x5 conv 32 (same padding), ReLU,
2x2 max pool, 5x5 conv 64, ReLU, pool, FC 512, ReLU, FC 10, softmax cross-entropy. The
convolutions are ``bench_conv``'s bare im2col ones.
"""

from __future__ import annotations

import numpy as np
from bench_conv import bare_backward, bare_forward

#: (kind, shape of W): the variables in order, each followed by its bias.
LAYERS = [("conv", (5, 5, 1, 32)), ("conv", (5, 5, 32, 64)), ("dense", (3136, 512)),
          ("dense", (512, 10))]  # fmt: skip


def init_params(rng: np.random.Generator) -> list[np.ndarray]:
    """He-uniform weights (Glorot for the output layer), zero biases."""
    params = []
    for i, (_, shape) in enumerate(LAYERS):
        fan_in = int(np.prod(shape[:-1]))
        fan = fan_in if i < len(LAYERS) - 1 else fan_in + shape[-1]
        limit = np.sqrt(6.0 / fan)
        params += [rng.uniform(-limit, limit, shape).astype(np.float32),
                   np.zeros(shape[-1], np.float32)]  # fmt: skip
    return params


def _pool(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _unpool(dy: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    mask = x.reshape(n, h // 2, 2, w // 2, 2, c) == y[:, :, None, :, None, :]
    return (mask * dy[:, :, None, :, None, :]).reshape(x.shape)


def forward(params: list[np.ndarray], xb: np.ndarray) -> np.ndarray:
    """Logits of a batch of flat 784-pixel rows."""
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    a1 = np.maximum(bare_forward(xb.reshape(-1, 28, 28, 1), w1, b1, 2)[0], 0)
    a2 = np.maximum(bare_forward(_pool(a1), w2, b2, 2)[0], 0)
    h = np.maximum(_pool(a2).reshape(len(xb), -1) @ w3 + b3, 0)
    return h @ w4 + b4


def gradients(params: list[np.ndarray], xb: np.ndarray, yb: np.ndarray) -> list[np.ndarray]:
    """Forward and backward on one batch; the gradients in ``params`` order."""
    n = len(yb)
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    x = xb.reshape(n, 28, 28, 1)
    z1, cols1 = bare_forward(x, w1, b1, 2)
    a1 = np.maximum(z1, 0)
    p1 = _pool(a1)
    z2, cols2 = bare_forward(p1, w2, b2, 2)
    a2 = np.maximum(z2, 0)
    p2 = _pool(a2)
    flat = p2.reshape(n, -1)
    h = np.maximum(flat @ w3 + b3, 0)
    logits = h @ w4 + b4
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(n), yb] -= 1
    d4 = probs / n
    dh = (d4 @ w4.T) * (h > 0)
    dflat = (dh @ w3.T).reshape(p2.shape)
    dz2 = _unpool(dflat, a2, p2) * (z2 > 0)
    dp1, dw2, db2 = bare_backward(dz2, cols2, w2, p1.shape, 2)
    dz1 = _unpool(dp1, a1, p1) * (z1 > 0)
    _, dw1, db1 = bare_backward(dz1, cols1, w1, x.shape, 2)
    return [dw1, db1, dw2, db2, flat.T @ dh, dh.sum(axis=0), h.T @ d4, d4.sum(axis=0)]
