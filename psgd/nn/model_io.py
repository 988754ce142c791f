"""Model files: pickle-free ``.npz`` archives of a model's variables and architecture.

`save_model` writes a `Sequential` of built-in layers so that `load_model` rebuilds it; any
other learner (a user's, FedEM's components are saved one by one) is saved weights-only, by
variable name. `load_weights` and `init_weights` read either kind (``--init``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from psgd.errors import ConfigError, ModelError
from psgd.nn.activations import ACTIVATIONS, Softmax
from psgd.nn.conv import Conv2D, MaxPool2D
from psgd.nn.layers import Dense, Layer
from psgd.nn.losses import LOSSES, make_loss
from psgd.nn.model import DTYPES, Sequential
from psgd.nn.shaping import Dropout, Flatten, Reshape

__all__ = ["ARCH_KEY", "init_weights", "load_model", "load_weights", "save_model"]

FORMAT = "psgd.nn/1"
#: Format of a weights-only file (a learner that is not a `Sequential` of built-in layers).
WEIGHTS_FORMAT = "psgd.weights/1"
ARCH_KEY = "__architecture__"
LAYERS: dict[str, type[Layer]] = {
    "dense": Dense, "softmax": Softmax, "conv": Conv2D, "maxpool": MaxPool2D,
    "reshape": Reshape, "flatten": Flatten, "dropout": Dropout, **ACTIVATIONS,
}  # fmt: skip


def save_model(model: Any, path: str | os.PathLike[str], weights_only: bool = False) -> None:
    """Write `model` to `path` (exactly that name) as an ``.npz`` with no pickled objects.

    Each variable is stored under its name; the architecture (layers, layer sizes,
    activation, dtype, loss name) is a JSON string in the uint8 array ``__architecture__``.
    A learner that is not a `Sequential` of built-in layers (or with `weights_only`) is saved
    weights-only: `load_weights` and ``--init`` read it, `load_model` cannot rebuild it.
    The file is written to a temporary name and then renamed, so readers never see half a file.
    """
    path = os.fspath(path)
    names = [v.name for v in model.variables]
    if len(set(names)) != len(names) or ARCH_KEY in names:
        raise ModelError(f"save_model: variable names must be unique, got {names}")
    if weights_only or not isinstance(model, Sequential):
        spec: dict[str, Any] = {"format": WEIGHTS_FORMAT, "learner": type(model).__name__}
    else:
        for layer in model.layers:
            if LAYERS.get(layer.name) is not type(layer):
                raise ModelError(
                    f"save_model: cannot save layer {layer!r} (known: {', '.join(LAYERS)}); "
                    "save_model(..., weights_only=True) keeps its weights"
                )
        if LOSSES.get(model.loss.name) is not type(model.loss):
            raise ModelError(f"save_model: cannot save loss {model.loss!r}")
        spec = {
            "format": FORMAT,
            "layer_sizes": model.layer_sizes,
            "input_size": model.input_size,
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
        spec = _read_spec(arrays.pop(ARCH_KEY, None))
        if spec.get("format") == WEIGHTS_FORMAT:
            raise ModelError(
                f"holds only the weights of a {spec.get('learner')!r} learner, built by its own "
                "code: build it, then psgd.nn.init_weights(model, path) (or --init)"
            )
        model = _model_from_spec(spec, arrays)
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
    if not isinstance(spec, dict) or spec.get("format") not in (FORMAT, WEIGHTS_FORMAT):
        raise ModelError(f"architecture format is not {FORMAT!r} or {WEIGHTS_FORMAT!r}")
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
    counts: dict[str, int] = {}
    for s in layer_specs:
        kind = s.get("type") if isinstance(s, dict) else None
        if not isinstance(kind, str) or kind not in LAYERS:
            raise ModelError(f"architecture: unknown layer {s!r} (known: {', '.join(LAYERS)})")
        index = counts.get(kind, 0)
        counts[kind] = index + 1
        layers.append(_layer_from_spec(kind, s, arrays.get(f"{kind}{index}.W"), np.dtype(dtype)))
    input_size = spec.get("input_size")
    try:
        model = Sequential(
            layers, make_loss(loss), input_size if isinstance(input_size, int) else None
        )
    except (TypeError, ValueError) as exc:
        raise ModelError(f"architecture: {exc}") from None
    if spec.get("layer_sizes") != model.layer_sizes:
        raise ModelError(f"architecture: layer_sizes {spec.get('layer_sizes')} do not match layers")
    if isinstance(spec.get("activation"), str):
        model.activation = spec["activation"]
    return model


def _layer_from_spec(
    kind: str, spec: dict[str, Any], W: np.ndarray | None, dtype: np.dtype
) -> Layer:
    try:
        if kind == "dense":
            return _dense_from_spec(spec, W, dtype)
        if kind == "conv":
            return _conv_from_spec(spec, W, dtype)
        if kind == "maxpool":
            return MaxPool2D(int(spec["size"]))
        if kind == "reshape":
            return Reshape([int(side) for side in spec["shape"]])
        if kind == "dropout":
            return Dropout(float(spec["rate"]))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"architecture: bad {kind} layer {spec!r}") from None
    return LAYERS[kind]()


def _conv_from_spec(spec: dict[str, Any], W: np.ndarray | None, dtype: np.dtype) -> Conv2D:
    c, f, k = spec["in_channels"], spec["out_channels"], spec["kernel"]
    shape = (k, k, c, f)
    # compare with the stored weights before allocating, so a forged size cannot exhaust memory
    if W is None or W.shape != shape:
        stored = "none" if W is None else W.shape
        raise ModelError(f"architecture: conv layer {shape}, stored weights {stored}")
    return Conv2D(c, f, k, padding=int(spec["padding"]), rng=np.random.default_rng(0), dtype=dtype)


def _dense_from_spec(spec: dict[str, Any], W: np.ndarray | None, dtype: np.dtype) -> Dense:
    n_in, n_out = spec.get("n_in"), spec.get("n_out")
    if not (isinstance(n_in, int) and isinstance(n_out, int) and n_in > 0 and n_out > 0):
        raise ModelError(f"architecture: bad dense layer {spec!r}")
    # compare with the stored weights before allocating, so a forged size cannot exhaust memory
    if W is None or W.shape != (n_in, n_out):
        stored = "none" if W is None else W.shape
        raise ModelError(f"architecture: dense layer {n_in}x{n_out}, stored weights {stored}")
    return Dense(n_in, n_out, rng=np.random.default_rng(0), dtype=dtype)


def load_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``{variable name: array}`` of a model file (either format) or of any ``.npz``.

    Raises
    ------
    ModelError
        Missing or unreadable file; the message names it.
    """
    arrays = _read_npz(os.fspath(path))
    arrays.pop(ARCH_KEY, None)
    return arrays


def init_weights(model: Any, path: str | os.PathLike[str]) -> None:
    """Copy the arrays of model file `path` into `model`'s variables, matched by name.

    Raises
    ------
    ModelError
        The file is unreadable, or its names, shapes or dtypes differ from the model's; the
        message names the file and every mismatch. The model is then left unchanged.
    """
    path = os.fspath(path)
    arrays = load_weights(path)
    names = [v.name for v in model.variables]
    if len(set(names)) != len(names):
        raise ModelError(f"{path}: the model's variable names repeat ({names}); cannot match")
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    wrong = [
        f"{v.name} is {arrays[v.name].shape} {arrays[v.name].dtype} in the file, "
        f"{v.value.shape} {v.value.dtype} in the model"
        for v in model.variables
        if v.name in arrays
        and (arrays[v.name].shape != v.value.shape or arrays[v.name].dtype.kind != "f")
    ]
    if missing or extra or wrong:
        problems = [f"missing {missing}" if missing else "", f"extra {extra}" if extra else ""]
        detail = "; ".join([p for p in problems if p] + wrong)
        raise ModelError(f"{path}: does not fit the model: {detail}")
    model.set_weights([arrays[v.name].astype(v.value.dtype) for v in model.variables])
