"""Element-wise activations and the softmax layer, all ``(n, d) -> (n, d)``.

`backward` works in place on the incoming gradient: inside `Sequential` that array is the
next layer's scratch buffer, so no temporaries are needed.
"""

from __future__ import annotations

import numpy as np

from psgd.nn.layers import Layer


class ReLU(Layer):
    """``y = max(x, 0)``; the gradient is passed where ``y > 0`` and zeroed elsewhere."""

    name = "relu"

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        # an array of zeros, not the scalar 0: numpy's broadcast-scalar loop is ~3x slower here
        zeros = self._buffer("zeros", x.shape, x.dtype, fill=0.0)
        y = self._y = np.maximum(x, zeros, out=self._buffer("y", x.shape, x.dtype))
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        y = _saved(self, self._y)
        zeros = self._buffer("zeros", y.shape, y.dtype, fill=0.0)
        mask = np.greater(y, zeros, out=self._buffer("mask", y.shape, np.dtype(bool)))
        return np.multiply(grad_out, mask, out=grad_out)


class Tanh(Layer):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``."""

    name = "tanh"

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = self._y = np.tanh(x, out=self._buffer("y", x.shape, x.dtype))
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        y = _saved(self, self._y)
        t = np.square(y, out=self._buffer("t", y.shape, y.dtype))
        np.subtract(1.0, t, out=t)
        return np.multiply(grad_out, t, out=grad_out)


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``.

    Computed as ``0.5 * (1 + tanh(x / 2))``, which never overflows.
    """

    name = "sigmoid"

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.multiply(x, 0.5, out=self._buffer("y", x.shape, x.dtype))
        np.tanh(y, out=y)
        y *= 0.5
        y += 0.5
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        y = _saved(self, self._y)
        t = np.subtract(1.0, y, out=self._buffer("t", y.shape, y.dtype))
        t *= y
        return np.multiply(grad_out, t, out=grad_out)


class Softmax(Layer):
    """Row-wise ``y_ij = exp(x_ij) / sum_k exp(x_ik)`` (max-shifted, so it never overflows).

    Backward applies the softmax Jacobian: ``dx = y * (dy - sum(dy * y, axis=1))``. To train a
    classifier prefer logits with the fused, more stable `SoftmaxCrossEntropy` loss.
    """

    name = "softmax"

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.subtract(x, x.max(axis=1, keepdims=True), out=self._buffer("y", x.shape, x.dtype))
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        y = _saved(self, self._y)
        grad_out -= np.einsum("ij,ij->i", grad_out, y)[:, None]
        return np.multiply(grad_out, y, out=grad_out)


ACTIVATIONS: dict[str, type[Layer]] = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


def _saved(layer: Layer, y: np.ndarray | None) -> np.ndarray:
    if y is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward")
    return y
