"""`Sequential` models and the `build_mlp` factory (model files: ``psgd.nn.model_io``)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from numpy.typing import DTypeLike

from psgd.errors import ConfigError, ModelError
from psgd.nn.activations import ACTIVATIONS
from psgd.nn.layers import Dense, Layer, Variable
from psgd.nn.losses import Loss, SoftmaxCrossEntropy
from psgd.nn.shaping import Reshape

DTYPES = ("float32", "float64")


class Sequential:
    """A stack of layers trained with one loss.

    Parameters
    ----------
    layers : sequence of Layer
        Applied in order; at least one layer with variables. Each layer's sample shape must
        fit the next (checked with ``Layer.out_shape``).
    loss : Loss, optional
        Defaults to `SoftmaxCrossEntropy` (the last layer then outputs logits).
    input_size : int, optional
        Features per input row; taken from the first layer (a `Dense` or a ``Reshape``) if
        not given.

    Attributes
    ----------
    variables : list of Variable
        Trainable variables in layer order, named after their layer kind and its index among
        layers of that kind: ``conv0.W, conv0.b, ..., dense0.W, dense0.b, ...``.
    layer_sizes : list of int
        Input width followed by the output width of every Dense layer.
    activation : str
        Name of the hidden activation (``"linear"`` if none, names joined by "," if several).
    dtype : np.dtype
        Dtype of every parameter; inputs are converted to it.
    eval_batch : int
        Rows per forward pass in `evaluate` (smaller for convolutional models, whose im2col
        buffers grow with it).

    Notes
    -----
    Inputs are always flat ``(n, input_size)`` rows (image models start with a ``Reshape``).
    Layers reuse buffers per batch shape, so a model is not safe to share between threads.
    """

    def __init__(
        self, layers: Sequence[Layer], loss: Loss | None = None, input_size: int | None = None
    ) -> None:
        self.layers = list(layers)
        self.loss = SoftmaxCrossEntropy() if loss is None else loss
        self.input_size = _check_layers(self.layers, input_size)
        counts: dict[str, int] = {}
        for layer in self.layers:
            if layer.variables:
                layer.rename(f"{layer.name}{counts.get(layer.name, 0)}")
                counts[layer.name] = counts.get(layer.name, 0) + 1
        self.variables: list[Variable] = [v for layer in self.layers for v in layer.variables]
        self.dtype: np.dtype = self.variables[0].value.dtype
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        self.layer_sizes: list[int] = [self.input_size] + [d.n_out for d in dense]
        last = max(i for i, layer in enumerate(self.layers) if layer.variables)
        names = [layer.name for layer in self.layers[:last] if layer.name in ACTIVATIONS]
        self.activation: str = ",".join(dict.fromkeys(names)) or "linear"
        self.eval_batch = 1000
        # backward computes an input gradient only if some earlier layer has variables
        self._need_dx = [
            any(layer.variables for layer in self.layers[:i]) for i in range(len(self.layers))
        ]
        self._modal = [layer for layer in self.layers if layer.name == "dropout"]
        self._training = True

    def parameters(self) -> list[Variable]:
        """The trainable variables (same list as `variables`)."""
        return self.variables

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Forward pass only: ``(n, layer_sizes[0]) -> (n, layer_sizes[-1])``, a new array."""
        return self._forward(self._check_input(x)).copy()

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float:
        """Forward and backward pass on one batch.

        Fills every ``var.grad`` in place and returns the mean loss over the batch.

        Parameters
        ----------
        x : np.ndarray, shape (n, layer_sizes[0])
            Inputs, ideally already of the model dtype (anything else is converted).
        y : np.ndarray
            ``(n,)`` integer labels for `SoftmaxCrossEntropy`, ``(n, layer_sizes[-1])`` targets
            for `MSE`.
        """
        out = self._forward(self._check_input(x), training=True)
        loss, grad_out = self.loss.value_and_grad(out, np.asarray(y))
        self.backward(grad_out)
        return loss

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Forward pass keeping what ``backward`` needs; the output is a reused buffer."""
        return self._forward(self._check_input(x), training=True)

    def backward(self, grad_out: np.ndarray) -> None:
        """Fill every ``var.grad`` from the gradient of a loss w.r.t. the last ``forward``."""
        grad: np.ndarray | None = grad_out
        layers, need_dx = self.layers, self._need_dx
        for i in range(len(layers) - 1, -1, -1):
            if grad is None:  # no variables below this layer
                break
            grad = layers[i].backward(grad, need_dx[i])

    def evaluate(
        self, x: np.ndarray, y: np.ndarray, batch_size: int | None = None
    ) -> tuple[float, float]:
        """Mean loss and accuracy over a whole data set, without gradients.

        Accuracy compares the loss's prediction (``Loss.predict``: the argmax, or a threshold
        for one sigmoid output) with `y` (labels) or with the argmax of `y` (targets).

        Returns
        -------
        (loss, accuracy) : tuple of float
        """
        x, y = self._check_input(x), np.asarray(y)
        batch_size = self.eval_batch if batch_size is None else batch_size
        n = x.shape[0]
        if n == 0 or y.shape[:1] != (n,):
            raise ValueError(
                f"evaluate: need n > 0 inputs and n targets, got {n} and {y.shape[:1]}"
            )
        if batch_size < 1:
            raise ValueError(f"evaluate: batch_size must be positive, got {batch_size}")
        total, correct = 0.0, 0
        for start in range(0, n, batch_size):
            out = self._forward(x[start : start + batch_size])
            yb = y[start : start + batch_size]
            total += self.loss.value(out, yb) * yb.shape[0]
            labels = yb if yb.ndim == 1 else yb.argmax(axis=1)
            correct += int(np.count_nonzero(self.loss.predict(out) == labels))
        return total / n, correct / n

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the variable values, in `variables` order."""
        return [v.value.copy() for v in self.variables]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Copy `weights` (in `variables` order) into the existing arrays.

        Raises
        ------
        ModelError
            Wrong count, shape or dtype; the model is left unchanged.
        """
        weights = [np.asarray(w) for w in weights]
        if len(weights) != len(self.variables):
            raise ModelError(
                f"set_weights: expected {len(self.variables)} arrays, got {len(weights)}"
            )
        for var, w in zip(self.variables, weights, strict=True):
            if w.shape != var.value.shape or w.dtype != var.value.dtype:
                raise ModelError(
                    f"set_weights: {var.name} expects {var.value.shape} {var.value.dtype}, "
                    f"got {w.shape} {w.dtype}"
                )
        for var, w in zip(self.variables, weights, strict=True):
            np.copyto(var.value, w)

    def __repr__(self) -> str:
        layers = ", ".join(map(repr, self.layers))
        return f"Sequential([{layers}], loss={self.loss!r}, dtype={self.dtype.name})"

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"expected inputs of shape (n, {self.input_size}), got {x.shape}")
        return x

    def _forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if training != self._training and self._modal:
            for layer in self._modal:
                layer.training = training
        self._training = training
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        for layer in self.layers:
            x = layer.forward(x)
        return x


def _check_layers(layers: list[Layer], input_size: int | None) -> int:
    """The input width of `layers`, after checking that their shapes chain."""
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ModelError(f"Sequential: expected Layer instances, got {layer!r}")
    if len({id(layer) for layer in layers}) != len(layers):
        raise ModelError("Sequential: the same layer instance appears twice")
    trained = [v for layer in layers for v in layer.variables]
    if not trained:
        raise ModelError("Sequential: needs at least one layer with variables (Dense, Conv2D)")
    if len({v.value.dtype for v in trained}) > 1:
        raise ModelError(
            f"Sequential: layers mix dtypes {sorted({v.value.dtype.name for v in trained})}"
        )
    if input_size is None:
        input_size = _input_size(layers)
    shape: tuple[int, ...] = (input_size,)
    previous = "the input"
    for layer in layers:
        try:
            shape = layer.out_shape(shape)
        except ModelError as exc:
            what = f"{shape[0]} values" if len(shape) == 1 else f"samples of shape {shape}"
            raise ModelError(f"Sequential: {previous} outputs {what} but {exc}") from None
        previous = repr(layer)
    if len(shape) != 1:
        raise ModelError(f"Sequential: the last layer outputs samples of shape {shape}, not rows")
    return input_size


def _input_size(layers: list[Layer]) -> int:
    """The width the first shape-fixing layer takes (elementwise layers come before it)."""
    for layer in layers:
        if isinstance(layer, Dense):
            return layer.n_in
        if isinstance(layer, Reshape):
            return layer.size
        if type(layer).out_shape is not Layer.out_shape:
            break
    raise ModelError(f"Sequential: give input_size (the first layer is {layers[0]!r})")


def build_mlp(
    layer_sizes: Sequence[int],
    activation: str = "relu",
    *,
    rng: np.random.Generator | None = None,
    dtype: DTypeLike = np.float32,
    loss: Loss | None = None,
) -> Sequential:
    """A multi-layer perceptron ``Dense, act, Dense, act, ..., Dense`` (logits out).

    Parameters
    ----------
    layer_sizes : sequence of int
        Widths from input to output, e.g. ``[784, 128, 128, 10]`` (at least two).
    activation : {"relu", "tanh", "sigmoid"}
        Hidden activation. Hidden layers get He init for ReLU and Glorot otherwise; the output
        layer gets Glorot. Biases start at zero.
    rng : np.random.Generator, optional
        Source of the initial weights.
    dtype : {float32, float64}
        Parameter dtype.
    loss : Loss, optional
        Defaults to `SoftmaxCrossEntropy`.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r} (valid: {', '.join(ACTIVATIONS)})")
    sizes = list(layer_sizes)
    if len(sizes) < 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
        raise ModelError(f"build_mlp: layer_sizes must be two or more positive ints, got {sizes}")
    dtype = _float_dtype(dtype)
    rng = np.random.default_rng() if rng is None else rng
    hidden_init = "he" if activation == "relu" else "glorot"
    layers: list[Layer] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        last = i == len(sizes) - 2
        init = "glorot" if last else hidden_init
        layers.append(Dense(int(n_in), int(n_out), rng=rng, init=init, dtype=dtype))
        if not last:
            layers.append(ACTIVATIONS[activation]())
    model = Sequential(layers, loss)
    model.activation = activation
    return model


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ModelError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dt
