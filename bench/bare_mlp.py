"""The hand-written numpy MLP + Adam that the benchmarks use as their baseline.

Plain idiomatic numpy (no psgd): 784-128-128-10, ReLU, softmax cross-entropy, float32.
"""

from __future__ import annotations

import numpy as np

SIZES = (784, 128, 128, 10)
LR, B1, B2, EPS = 0.001, 0.9, 0.999, 1e-8


def init_params(rng: np.random.Generator, sizes: tuple[int, ...] = SIZES) -> list[np.ndarray]:
    """He-uniform weights and zero biases: w1, b1, w2, b2, w3, b3."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        limit = np.sqrt(6.0 / fan_in)
        params.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    return params


def gradients(params: list[np.ndarray], xb: np.ndarray, yb: np.ndarray) -> list[np.ndarray]:
    """Forward and backward on one batch; the gradients in ``params`` order."""
    n = len(yb)
    w1, b1, w2, b2, w3, b3 = params
    h1 = np.maximum(xb @ w1 + b1, 0)
    h2 = np.maximum(h1 @ w2 + b2, 0)
    logits = h2 @ w3 + b3
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    probs = exp / exp.sum(axis=1, keepdims=True)
    probs[np.arange(n), yb] -= 1
    d3 = probs / n
    d2 = (d3 @ w3.T) * (h2 > 0)
    d1 = (d2 @ w2.T) * (h1 > 0)
    return [xb.T @ d1, d1.sum(axis=0), h1.T @ d2, d2.sum(axis=0), h2.T @ d3, d3.sum(axis=0)]


class Adam:
    """Adam over a list of arrays: ``steps(grads)`` returns the new arrays to subtract."""

    def __init__(self, params: list[np.ndarray]) -> None:
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def steps(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        self.t += 1
        correction = np.float32(LR * np.sqrt(1 - B2**self.t) / (1 - B1**self.t))
        deltas = []
        for g, mi, vi in zip(grads, self.m, self.v, strict=True):
            mi *= B1
            mi += (1 - B1) * g
            vi *= B2
            vi += (1 - B2) * g * g
            deltas.append(correction * mi / (np.sqrt(vi) + EPS))
        return deltas
