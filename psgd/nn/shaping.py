"""Layers without weights that reshape or mask: `Reshape`, `Flatten`, `Dropout`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from psgd.errors import ModelError
from psgd.nn.layers import Layer

__all__ = ["Dropout", "Flatten", "Reshape"]


class Reshape(Layer):
    """``(n, prod(shape)) -> (n, *shape)``: flat feature rows to images, e.g. ``(28, 28, 1)``.

    A view when the input is contiguous; the gradient is reshaped back.
    """

    name = "reshape"

    def __init__(self, shape: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ModelError(f"Reshape: expected a shape of sizes >= 1, got {shape!r}")
        self.size = math.prod(self.shape)
        self._in_shape: tuple[int, ...] = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(in_shape) != self.size:
            raise ModelError(f"{self!r} needs {self.size} values per sample, got {in_shape}")
        return self.shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out.reshape(self._in_shape) if need_input_grad else None

    def spec(self) -> dict[str, Any]:
        return {"type": self.name, "shape": list(self.shape)}

    def __repr__(self) -> str:
        return f"Reshape({self.shape})"


class Flatten(Layer):
    """``(n, d1, d2, ...) -> (n, d1*d2*...)``."""

    name = "flatten"

    def __init__(self) -> None:
        super().__init__()
        self._in_shape: tuple[int, ...] = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(in_shape),)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out.reshape(self._in_shape) if need_input_grad else None


class Dropout(Layer):
    """Inverted dropout: while training, each value is zeroed with probability `rate` and the
    others scaled by ``1 / (1 - rate)``; while evaluating, the identity.

    Parameters
    ----------
    rate : float
        In ``[0, 1)``.
    rng : np.random.Generator, optional
        Source of the masks (seeded with 0 if None, so runs repeat).
    """

    name = "dropout"

    def __init__(self, rate: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ModelError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.rng = np.random.default_rng(0) if rng is None else rng
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.rate == 0.0:
            self._mask = None
            return x
        mask = self._buffer("mask", x.shape, x.dtype)
        self.rng.random(out=mask, dtype=mask.dtype)
        # values >= rate survive: 1/(1-rate) where kept, 0 where dropped
        np.greater_equal(mask, self.rate, out=mask, casting="unsafe")
        mask *= 1.0 / (1.0 - self.rate)
        self._mask = mask
        return np.multiply(x, mask, out=self._buffer("y", x.shape, x.dtype))

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if not need_input_grad:
            return None
        if self._mask is None:
            return grad_out
        return np.multiply(grad_out, self._mask, out=grad_out)

    def spec(self) -> dict[str, Any]:
        return {"type": self.name, "rate": self.rate}

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"
