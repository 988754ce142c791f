"""`Sequential` models, the `build_mlp` factory and pickle-free ``.npz`` save/load."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from psgd.errors import ConfigError, ModelError
from psgd.nn.activations import ACTIVATIONS, Softmax
from psgd.nn.layers import Dense, Layer, Variable
from psgd.nn.losses import LOSSES, Loss, SoftmaxCrossEntropy, make_loss

FORMAT = "psgd.nn/1"
ARCH_KEY = "__architecture__"
DTYPES = ("float32", "float64")
LAYERS: dict[str, type[Layer]] = {"dense": Dense, "softmax": Softmax, **ACTIVATIONS}


class Sequential:
    """A stack of layers trained with one loss.

    Parameters
    ----------
    layers : sequence of Layer
        Applied in order; at least one `Dense`, consecutive Dense widths must chain.
    loss : Loss, optional
        Defaults to `SoftmaxCrossEntropy` (the last layer then outputs logits).

    Attributes
    ----------
    variables : list of Variable
        Trainable variables in layer order: ``dense0.W, dense0.b, dense1.W, ...``.
    layer_sizes : list of int
        Input width followed by the output width of every Dense layer.
    activation : str
        Name of the hidden activation (``"linear"`` if none, names joined by "," if several).
    dtype : np.dtype
        Dtype of every parameter; inputs are converted to it.

    Notes
    -----
    Layers reuse buffers per batch shape, so a model is not safe to share between threads.
    """

    def __init__(self, layers: Sequence[Layer], loss: Loss | None = None) -> None:
        self.layers = list(layers)
        self.loss = SoftmaxCrossEntropy() if loss is None else loss
        dense = _check_layers(self.layers)
        for i, d in enumerate(dense):
            d.rename(f"dense{i}")
        self.dtype: np.dtype = dense[0].dtype
        self.layer_sizes: list[int] = [dense[0].n_in] + [d.n_out for d in dense]
        hidden = self.layers[: self.layers.index(dense[-1])]
        names = list(dict.fromkeys(layer.name for layer in hidden if not isinstance(layer, Dense)))
        self.activation: str = ",".join(names) or "linear"
        self.variables: list[Variable] = [v for layer in self.layers for v in layer.variables]
        # backward computes an input gradient only if some earlier layer has variables
        self._need_dx = [
            any(layer.variables for layer in self.layers[:i]) for i in range(len(self.layers))
        ]

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
        out = self._forward(self._check_input(x))
        loss, grad_out = self.loss.value_and_grad(out, np.asarray(y))
        self.backward(grad_out)
        return loss

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Forward pass keeping what ``backward`` needs; the output is a reused buffer."""
        return self._forward(self._check_input(x))

    def backward(self, grad_out: np.ndarray) -> None:
        """Fill every ``var.grad`` from the gradient of a loss w.r.t. the last ``forward``."""
        grad: np.ndarray | None = grad_out
        layers, need_dx = self.layers, self._need_dx
        for i in range(len(layers) - 1, -1, -1):
            if grad is None:  # no variables below this layer
                break
            grad = layers[i].backward(grad, need_dx[i])

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> tuple[float, float]:
        """Mean loss and accuracy over a whole data set, without gradients.

        Accuracy compares the argmax of the output with `y` (labels) or with the argmax of `y`
        (targets, shape ``(n, k)``).

        Returns
        -------
        (loss, accuracy) : tuple of float
        """
        x, y = self._check_input(x), np.asarray(y)
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
            correct += int(np.count_nonzero(out.argmax(axis=1) == labels))
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
        if x.ndim != 2 or x.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"expected inputs of shape (n, {self.layer_sizes[0]}), got {x.shape}")
        return x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        for layer in self.layers:
            x = layer.forward(x)
        return x


def _check_layers(layers: list[Layer]) -> list[Dense]:
    """The Dense layers of `layers`, after checking that they form a valid stack."""
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ModelError(f"Sequential: expected Layer instances, got {layer!r}")
    if len({id(layer) for layer in layers}) != len(layers):
        raise ModelError("Sequential: the same layer instance appears twice")
    dense = [layer for layer in layers if isinstance(layer, Dense)]
    if not dense:
        raise ModelError("Sequential: needs at least one Dense layer")
    for a, b in pairwise(dense):
        if a.n_out != b.n_in:
            raise ModelError(f"Sequential: {a!r} outputs {a.n_out} values but {b!r} takes {b.n_in}")
    if len({d.dtype for d in dense}) > 1:
        raise ModelError(f"Sequential: Dense layers mix dtypes {[d.dtype.name for d in dense]}")
    return dense


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


def save_model(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write `model` to `path` (exactly that name) as an ``.npz`` with no pickled objects.

    Each variable is stored under its name; the architecture (layers, layer sizes,
    activation, dtype, loss name) is a JSON string in the uint8 array ``__architecture__``.
    The file is written to a temporary name and then renamed, so readers never see half a file.
    """
    path = os.fspath(path)
    for layer in model.layers:
        if LAYERS.get(layer.name) is not type(layer):
            raise ModelError(
                f"save_model: cannot save layer {layer!r} (known: {', '.join(LAYERS)})"
            )
    if LOSSES.get(model.loss.name) is not type(model.loss):
        raise ModelError(f"save_model: cannot save loss {model.loss!r}")
    spec = {
        "format": FORMAT,
        "layer_sizes": model.layer_sizes,
        "activation": model.activation,
        "dtype": model.dtype.name,
        "loss": model.loss.name,
        "layers": [layer.spec() for layer in model.layers],
    }
    arrays: dict[str, Any] = {v.name: v.value for v in model.variables}
    arrays[ARCH_KEY] = np.frombuffer(json.dumps(spec).encode(), np.uint8)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ModelError(f"{path}: cannot write model: {exc}") from exc


def load_model(path: str | os.PathLike[str]) -> Sequential:
    """Read a model written by `save_model`.

    Raises
    ------
    ModelError
        Missing or unreadable file, or content that is not a valid model; the message names
        the file and what is wrong.
    """
    path = os.fspath(path)
    arrays = _read_npz(path)
    try:
        model = _model_from_spec(_read_spec(arrays.pop(ARCH_KEY, None)), arrays)
        names = [v.name for v in model.variables]
        extra = sorted(set(arrays) - set(names))
        missing = [name for name in names if name not in arrays]
        if missing or extra:
            raise ModelError(
                f"arrays do not match the architecture: missing {missing}, extra {extra}"
            )
        model.set_weights([arrays[name] for name in names])
    except (ModelError, ConfigError) as exc:
        raise ModelError(f"{path}: {exc}") from None
    return model


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such model file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ModelError(f"{path}: a single .npy array, not a model .npz archive")
        with data:
            return {name: data[name] for name in data.files}
    except ModelError:
        raise
    except Exception as exc:  # zipfile, zlib, numpy header and OS errors: all mean "corrupt"
        raise ModelError(
            f"{path}: not a readable model .npz ({type(exc).__name__}: {exc})"
        ) from None


def _read_spec(raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None:
        raise ModelError(f"no {ARCH_KEY!r} array: not a psgd model file")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelError(f"{ARCH_KEY!r} must be a 1-d uint8 array, got {raw.shape} {raw.dtype}")
    try:
        spec = json.loads(raw.tobytes().decode())
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ModelError(f"architecture is not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ModelError(f"architecture format is not {FORMAT!r}")
    return spec


def _model_from_spec(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Sequential:
    dtype, loss, layer_specs = spec.get("dtype"), spec.get("loss"), spec.get("layers")
    if dtype not in DTYPES:
        raise ModelError(f"architecture dtype {dtype!r} is not one of {DTYPES}")
    if not isinstance(loss, str):
        raise ModelError(f"architecture loss {loss!r} is not a name")
    if not isinstance(layer_specs, list):
        raise ModelError("architecture has no 'layers' list")
    layers: list[Layer] = []
    for s in layer_specs:
        kind = s.get("type") if isinstance(s, dict) else None
        if not isinstance(kind, str) or kind not in LAYERS:
            raise ModelError(f"architecture: unknown layer {s!r} (known: {', '.join(LAYERS)})")
        if kind == "dense":
            n_dense = sum(isinstance(layer, Dense) for layer in layers)
            layers.append(_dense_from_spec(s, arrays.get(f"dense{n_dense}.W"), np.dtype(dtype)))
        else:
            layers.append(LAYERS[kind]())
    model = Sequential(layers, make_loss(loss))
    if spec.get("layer_sizes") != model.layer_sizes:
        raise ModelError(f"architecture: layer_sizes {spec.get('layer_sizes')} do not match layers")
    if isinstance(spec.get("activation"), str):
        model.activation = spec["activation"]
    return model


def _dense_from_spec(spec: dict[str, Any], W: np.ndarray | None, dtype: np.dtype) -> Dense:
    n_in, n_out = spec.get("n_in"), spec.get("n_out")
    if not (isinstance(n_in, int) and isinstance(n_out, int) and n_in > 0 and n_out > 0):
        raise ModelError(f"architecture: bad dense layer {spec!r}")
    # compare with the stored weights before allocating, so a forged size cannot exhaust memory
    if W is None or W.shape != (n_in, n_out):
        stored = "none" if W is None else W.shape
        raise ModelError(f"architecture: dense layer {n_in}x{n_out}, stored weights {stored}")
    return Dense(n_in, n_out, rng=np.random.default_rng(0), dtype=dtype)


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ModelError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dt
