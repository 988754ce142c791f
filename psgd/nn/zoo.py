"""Models by name (``--model``): MLPs, the federated-learning CNNs, logistic regression, or a
user's builder function.

- ``784,128,128,10`` or ``mlp:784,200,200,10``: an MLP with those layer sizes (``--activation``
  between them).
- ``cnn-mnist``: McMahan et al. 2017's MNIST CNN: 5x5 conv 32 (same padding), ReLU, 2x2 max
  pool, 5x5 conv 64, ReLU, pool, FC 512, ReLU, softmax output (1,663,370 parameters). Takes
  28x28 grey images as 784 features (MNIST, FEMNIST).
- ``cnn-cifar``: the small CIFAR-10 CNN of the PyTorch and Flower tutorials: 5x5 conv 6, ReLU,
  pool, 5x5 conv 16, ReLU, pool, FC 120, FC 84, softmax (62,006 parameters). Takes 32x32x3
  images as 3072 features in height, width, channel order (psgd's CIFAR-10 reader's order).
- ``logreg``: logistic regression, one sigmoid output trained with binary cross-entropy
  (``--loss ce`` makes it multinomial: one output per class, softmax).
- anything else: a user builder (``psgd.nn.learner``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psgd.errors import ConfigError, ModelError
from psgd.nn.activations import ACTIVATIONS, ReLU
from psgd.nn.conv import Conv2D, MaxPool2D
from psgd.nn.layers import Dense, Layer
from psgd.nn.learner import Learner, check_learner, find_builder
from psgd.nn.losses import Loss, make_loss
from psgd.nn.mixture import MixtureMLP
from psgd.nn.model import Sequential, build_mlp
from psgd.nn.shaping import Flatten, Reshape

__all__ = ["MODELS", "build_model", "mlp_sizes", "parse_model"]

ModelSpec = str | Sequence[int]


def mlp_sizes(spec: ModelSpec) -> list[int] | None:
    """The layer sizes of an MLP spec (``[784, 128, 10]``, ``"784,128,10"``, ``"mlp:..."``),
    else None."""
    if not isinstance(spec, str):
        return [int(size) for size in spec]
    text = spec.strip().removeprefix("mlp:")
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        return None
    return [int(part) for part in parts]


def parse_model(spec: ModelSpec) -> ModelSpec:
    """`spec` checked for syntax only: layer sizes as a list, or the name as given.

    Raises ``ConfigError`` for bad layer sizes or an empty name.
    """
    if isinstance(spec, str) and not spec.strip():
        raise ConfigError("--model: empty")
    sizes = mlp_sizes(spec)
    if isinstance(spec, str) and spec.strip().startswith("mlp:") and sizes is None:
        raise ConfigError(f"--model {spec}: expected mlp:784,128,10 (whole numbers)")
    if sizes is not None:
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(
                f"--model: expected layer sizes like 784,128,128,10, got {list(spec)!r}"
                if not isinstance(spec, str)
                else f"--model: expected layer sizes like 784,128,128,10, got {spec!r}"
            )
        return sizes if not isinstance(spec, str) or not spec.startswith("mlp:") else spec
    return spec


def _image_input(features: int, shape: tuple[int, int, int], name: str) -> Reshape:
    if features != shape[0] * shape[1] * shape[2]:
        raise ConfigError(
            f"--model {name} takes {shape[0]}x{shape[1]}x{shape[2]} images "
            f"({shape[0] * shape[1] * shape[2]} features), the dataset has {features} features"
        )
    return Reshape(shape)


def cnn_mnist(features: int, classes: int, rng: np.random.Generator, loss: Loss) -> Sequential:
    """McMahan et al.'s MNIST CNN (see the module docstring)."""
    layers: list[Layer] = [
        _image_input(features, (28, 28, 1), "cnn-mnist"),
        Conv2D(1, 32, 5, padding="same", rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 5, padding="same", rng=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(7 * 7 * 64, 512, rng=rng, init="he"), ReLU(),
        Dense(512, classes, rng=rng),
    ]  # fmt: skip
    model = Sequential(layers, loss)
    model.eval_batch = 100
    return model


def cnn_cifar(features: int, classes: int, rng: np.random.Generator, loss: Loss) -> Sequential:
    """The PyTorch/Flower tutorials' CIFAR-10 CNN (see the module docstring)."""
    layers: list[Layer] = [
        _image_input(features, (32, 32, 3), "cnn-cifar"),
        Conv2D(3, 6, 5, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(6, 16, 5, rng=rng), ReLU(), MaxPool2D(2),
        Flatten(), Dense(5 * 5 * 16, 120, rng=rng, init="he"), ReLU(),
        Dense(120, 84, rng=rng, init="he"), ReLU(), Dense(84, classes, rng=rng),
    ]  # fmt: skip
    model = Sequential(layers, loss)
    model.eval_batch = 200
    return model


def logreg(features: int, classes: int, rng: np.random.Generator, loss: Loss) -> Sequential:
    """One sigmoid output with binary cross-entropy, or one output per class for other losses."""
    if loss.name == "binary_cross_entropy":
        if classes > 2:
            raise ConfigError(
                f"--model logreg: one sigmoid output separates 2 classes, the dataset has "
                f"{classes}; use --loss ce for multinomial logistic regression"
            )
        outputs = 1
    else:
        outputs = classes
    return Sequential([Dense(features, outputs, rng=rng)], loss)


#: Built-in models by name, and the loss each trains with unless ``--loss`` says otherwise.
MODELS: dict[str, tuple[Callable[..., Sequential], str]] = {
    "cnn-mnist": (cnn_mnist, "softmax_cross_entropy"),
    "cnn-cifar": (cnn_cifar, "softmax_cross_entropy"),
    "logreg": (logreg, "binary_cross_entropy"),
}


def build_model(
    spec: ModelSpec,
    features: int,
    classes: int,
    rng: np.random.Generator,
    *,
    loss: str | None = None,
    activation: str = "relu",
    components: int = 1,
    cwd: Path | None = None,
    shipped: Path | None = None,
) -> Learner:
    """The learner `spec` names, for data of `features` columns and `classes` labels.

    ``components`` > 1 makes FedEM's mixture of that many (built-in Sequential models only).
    ``cwd`` and ``shipped`` locate a user builder (see ``psgd.nn.learner.find_builder``).

    Raises
    ------
    ConfigError
        The model does not fit the data, or an unknown name or loss.
    ModelError
        A user builder is missing, fails, or returns something that is not a learner.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r} (valid: {', '.join(ACTIVATIONS)})")
    sizes = mlp_sizes(spec)
    if sizes is None and isinstance(spec, str) and spec not in MODELS:
        if "." not in spec:
            close = difflib.get_close_matches(spec, list(MODELS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"--model {spec}: unknown model{hint}; built-in: {', '.join(MODELS)}, "
                "mlp:784,128,10; or a builder, path/to/file.py:build or module.build"
            )
        if components > 1:
            raise ConfigError(f"--components: a mixture needs a built-in model, not {spec}")
        return _user_model(spec, features, classes, rng, loss, activation, cwd, shipped)

    def one() -> Sequential:
        if sizes is not None:
            _check_mlp(sizes, features, classes)
            return build_mlp(sizes, activation, rng=rng, loss=make_loss(loss or "ce"))
        build, default_loss = MODELS[str(spec)]
        return build(features, classes, rng, make_loss(loss or default_loss))

    if components <= 1:
        return one()
    return MixtureMLP([one() for _ in range(components)])


def _check_mlp(sizes: list[int], features: int, classes: int) -> None:
    if sizes[0] != features:
        raise ConfigError(
            f"--model: first layer has {sizes[0]} inputs but the dataset has {features} features"
        )
    if sizes[-1] < classes:
        raise ConfigError(
            f"--model: last layer has {sizes[-1]} outputs but the dataset has {classes} classes"
        )


def _user_model(
    spec: str,
    features: int,
    classes: int,
    rng: np.random.Generator,
    loss: str | None,
    activation: str,
    cwd: Path | None,
    shipped: Path | None,
) -> Learner:
    try:
        builder = find_builder(spec, cwd, shipped)
        model: Any = builder(features, classes, rng, loss=loss, activation=activation)
    except (ModelError, ConfigError):
        raise
    except Exception as exc:
        raise ModelError(f"--model {spec}: {type(exc).__name__}: {exc}") from exc
    return check_learner(model, f"--model {spec}")
