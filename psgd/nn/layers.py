"""Trainable variables, the layer base class and the fully connected `Dense` layer.

Layers work on batches: inputs and outputs are ``(n, features)`` arrays. Hot paths write into
buffers cached per batch shape, so a training loop with a fixed batch size allocates nothing
after its first step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from psgd.errors import ConfigError, ModelError

INITS = ("he", "glorot")
_MAX_BUFFERS = 16  # a few batch shapes (train, eval, a last partial batch) per layer


class Buffers:
    """Scratch arrays cached by ``(tag, shape, dtype)``, reused while the batch shape repeats."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def get(
        self, tag: str, shape: tuple[int, ...], dtype: np.dtype, fill: float | None = None
    ) -> np.ndarray:
        """An array of `shape` and `dtype` for `tag`, filled with `fill` when first created
        (uninitialised if `fill` is None)."""
        key = (tag, shape, dtype)
        buf = self._cache.get(key)
        if buf is None:
            if len(self._cache) >= _MAX_BUFFERS:
                self._cache.clear()
            buf = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
            self._cache[key] = buf
        return buf


class Variable:
    """One trainable array and its gradient.

    Attributes
    ----------
    name : str
        Dotted name, e.g. ``"dense0.W"``.
    value : np.ndarray
        The parameter. Callers update it in place (``var.value -= delta``).
    grad : np.ndarray
        Same shape and dtype as `value`; overwritten in place by each backward pass.
    """

    __slots__ = ("name", "value", "grad")

    def __init__(self, name: str, value: np.ndarray) -> None:
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)

    def __repr__(self) -> str:
        return f"Variable({self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class Layer:
    """Base class of all layers: a differentiable map from ``(n, *in_shape)`` to
    ``(n, *out_shape)`` (``(n, d)`` for dense layers, ``(n, height, width, channels)`` for
    image layers).

    Subclasses implement `forward` and `backward`, and `out_shape` when they change the shape
    of a sample. The arrays they return are buffers owned by the layer and overwritten by the
    next call with the same batch shape.

    Attributes
    ----------
    training : bool
        False while a model evaluates (``Dropout`` then passes its input through).
    """

    name: str = "layer"

    def __init__(self) -> None:
        self._buffers = Buffers()
        self.training = True

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one output sample for an input sample of shape `in_shape`.

        Raises ``ModelError`` when this layer cannot take such an input.
        """
        return in_shape

    def rename(self, prefix: str) -> None:
        """Set the prefix of the variable names (``"<prefix>.W"``); `Sequential` numbers them."""
        for var in self.variables:
            var.name = f"{prefix}.{var.name.rpartition('.')[2]}"

    @property
    def variables(self) -> list[Variable]:
        """Trainable variables of this layer (none for activations)."""
        return []

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output for a batch ``x`` and remember what `backward` needs."""
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate the loss gradient of the last `forward` call.

        Parameters
        ----------
        grad_out : np.ndarray, shape (n, d_out)
            Gradient of the loss with respect to this layer's output. Layers may overwrite it.
        need_input_grad : bool
            If False (first layer of a model) the input gradient is not computed.

        Returns
        -------
        np.ndarray of shape (n, d_in), or None when `need_input_grad` is False.
        """
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """JSON-able description from which `psgd.nn.model` rebuilds the layer."""
        return {"type": self.name}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _buffer(
        self, tag: str, shape: tuple[int, ...], dtype: np.dtype, fill: float | None = None
    ) -> np.ndarray:
        return self._buffers.get(tag, shape, dtype, fill)


class WeightedLayer(Layer):
    """A layer with a weight ``W`` and a bias ``b`` (dense, convolution)."""

    W: Variable
    b: Variable

    @property
    def variables(self) -> list[Variable]:
        return [self.W, self.b]

    @property
    def dtype(self) -> np.dtype:
        return self.W.value.dtype


class Dense(WeightedLayer):
    """Fully connected layer ``y = x @ W + b``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths; ``W`` has shape ``(n_in, n_out)``, ``b`` shape ``(n_out,)``.
    rng : np.random.Generator, optional
        Source of the initial weights (a fresh unseeded generator if None).
    init : {"he", "glorot"}
        Uniform initialisation: He ``U(-sqrt(6/n_in), +)`` suits ReLU, Glorot
        ``U(-sqrt(6/(n_in+n_out)), +)`` suits tanh, sigmoid and linear outputs. Biases are zero.
    dtype : dtype
        Dtype of the parameters; inputs must have the same dtype.
    name : str
        Prefix of the variable names (``"<name>.W"``, ``"<name>.b"``).
    """

    name = "dense"

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        rng: np.random.Generator | None = None,
        init: str = "glorot",
        dtype: DTypeLike = np.float32,
        name: str = "dense",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"Dense init: unknown {init!r} (valid: {', '.join(INITS)})")
        rng = np.random.default_rng() if rng is None else rng
        fan = n_in if init == "he" else n_in + n_out
        limit = math.sqrt(6.0 / fan)
        dtype = np.dtype(dtype)
        self.n_in, self.n_out, self.init = int(n_in), int(n_out), init
        self.W = Variable(f"{name}.W", rng.uniform(-limit, limit, (n_in, n_out)).astype(dtype))
        self.b = Variable(f"{name}.b", np.zeros(n_out, dtype))
        self._x: np.ndarray | None = None

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (self.n_in,):
            raise ModelError(f"{self!r} takes {self.n_in} features per sample, got {in_shape}")
        return (self.n_out,)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(n, n_in) -> (n, n_out)``; ``x`` is converted to the layer's dtype if needed."""
        W = self.W.value
        if x.dtype != W.dtype:
            x = x.astype(W.dtype)
        y = self._buffer("y", (x.shape[0], self.n_out), W.dtype)
        np.dot(x, W, out=y)
        y += self.b.value
        self._x = x
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Fill ``W.grad = x.T @ grad_out`` and ``b.grad = sum(grad_out, 0)``; return
        ``grad_out @ W.T`` of shape ``(n, n_in)``."""
        if self._x is None:
            raise RuntimeError("Dense.backward called before forward")
        np.dot(self._x.T, grad_out, out=self.W.grad)
        np.add.reduce(grad_out, axis=0, out=self.b.grad)
        if not need_input_grad:
            return None
        dx = self._buffer("dx", (grad_out.shape[0], self.n_in), grad_out.dtype)
        return np.dot(grad_out, self.W.value.T, out=dx)

    def spec(self) -> dict[str, Any]:
        return {"type": self.name, "n_in": self.n_in, "n_out": self.n_out, "init": self.init}

    def __repr__(self) -> str:
        return f"Dense({self.n_in}, {self.n_out})"
