"""The learner interface: what psgd needs of a model, so that users can bring their own.

A learner holds its trainable variables as numpy arrays in a fixed order (one codec per
variable), computes a batch's loss and fills each variable's gradient, and evaluates itself::

    class MyLearner:
        variables: list[Variable]          # psgd.nn.Variable: .name, .value, .grad (numpy)

        def loss_and_grads(self, x, y) -> float: ...       # fills every var.grad in place
        def evaluate(self, x, y) -> tuple[float, float]: ... # (mean loss, accuracy)
        def get_weights(self) -> list[np.ndarray]: ...     # copies, in `variables` order
        def set_weights(self, weights) -> None: ...        # copies into the variables

``x`` is a batch of flat feature rows ``(n, features)`` (float32), ``y`` its ``(n,)`` integer
labels. The trainer steps each ``var.value`` in place after ``loss_and_grads``, so ``value``
must be the array the learner computes with. Optional methods: ``get_state()`` /
``set_state(arrays)`` for state that is not trained by gradients and not exchanged (batch-norm
statistics; kept in checkpoints), ``personal_state()`` / ``load_personal_state(arrays)`` for
state a federated client keeps to itself (FedEM's mixture weights).

A job names its learner with ``--model``: a built-in model (``psgd.nn.zoo``), or a *builder*
function, ``path/to/file.py:build`` or ``module.build`` (``module.py`` in ``./models/``, the
current folder, or on ``sys.path``). psgd calls it as ``build(features, classes, rng,
loss=None, activation="relu")`` -- ``loss`` is the ``--loss`` name or None for the model's
own -- and ships the builder's file (and the sibling modules it imports) to the worker daemons
with the job, as it ships codec source.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from psgd.errors import ModelError
from psgd.loader import load_module_file
from psgd.nn.layers import Variable

__all__ = ["Builder", "Learner", "check_learner", "find_builder", "user_model_file"]


@runtime_checkable
class Learner(Protocol):
    """What a node trains: variables in a fixed order, a batch's loss and gradients."""

    variables: list[Variable]

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float: ...

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]: ...

    def get_weights(self) -> list[np.ndarray]: ...

    def set_weights(self, weights: Sequence[np.ndarray]) -> None: ...


#: ``build(features, classes, rng, loss=None, activation="relu") -> Learner``.
Builder = Callable[..., Any]

_METHODS = ("loss_and_grads", "evaluate", "get_weights", "set_weights")


def check_learner(model: Any, where: str) -> Learner:
    """`model` if it has the learner interface, else a ``ModelError`` naming what is missing."""
    missing = [m for m in _METHODS if not callable(getattr(model, m, None))]
    variables = getattr(model, "variables", None)
    if not isinstance(variables, list) or not variables:
        missing.append("variables (a non-empty list of psgd.nn.Variable)")
    else:
        for var in variables:
            value = getattr(var, "value", None)
            grad = getattr(var, "grad", None)
            if not (
                isinstance(value, np.ndarray)
                and isinstance(grad, np.ndarray)
                and value.shape == grad.shape
                and value.dtype.kind == "f"
            ):
                missing.append(f"variable {getattr(var, 'name', var)!r} with float value and grad")
                break
    if missing:
        raise ModelError(
            f"{where}: returned {type(model).__name__}, not a learner: missing "
            + ", ".join(missing)
        )
    return model  # type: ignore[no-any-return]


def user_model_file(spec: str, cwd: Path | None = None) -> Path | None:
    """The file a user model spec names (``file.py:build`` or ``module.build``), if any."""
    file_part, function = _split(spec)
    if file_part.endswith(".py"):
        path = Path(file_part).expanduser()
        return path if path.is_absolute() or cwd is None else cwd / path
    for folder in _folders(cwd):
        candidate = folder / Path(*file_part.split(".")).with_suffix(".py")
        if candidate.is_file():
            return candidate
    return None


def find_builder(spec: str, cwd: Path | None = None, shipped: Path | None = None) -> Builder:
    """The builder function of a user model spec.

    Parameters
    ----------
    spec:
        ``path/to/file.py:build`` or ``module.build``.
    cwd:
        Folder that relative paths and ``./models/`` are taken from (default: the current one).
    shipped:
        On a worker daemon: the job's bundle folder; the file is read from there (by name)
        and nowhere else.

    Raises
    ------
    ModelError
        No such file, module or function; the message says what was looked for where.
    """
    file_part, function = _split(spec)
    if shipped is not None:
        stem = Path(file_part).stem if file_part.endswith(".py") else file_part.split(".")[-1]
        path: Path | None = shipped / f"{stem}.py"
        if not path.is_file():  # type: ignore[union-attr]
            raise ModelError(f"--model {spec}: {stem}.py is not in the shipped bundle")
        return _function(load_module_file(path), function, spec)  # type: ignore[arg-type]
    path = user_model_file(spec, cwd)
    if path is not None:
        if not path.is_file():
            raise ModelError(f"--model {spec}: file {path} does not exist")
        return _function(load_module_file(path), function, spec)
    try:
        module = importlib.import_module(file_part)
    except ModuleNotFoundError as exc:
        looked = ", ".join(str(f) for f in _folders(cwd))
        raise ModelError(
            f"--model {spec}: no module {file_part!r} (looked in {looked} and sys.path: {exc})"
        ) from None
    return _function(module, function, spec)


def _split(spec: str) -> tuple[str, str]:
    if ".py:" in spec:
        file_part, _, function = spec.rpartition(":")
    else:
        file_part, _, function = spec.rpartition(".")
    if not file_part or not function.isidentifier():
        raise ModelError(
            f"--model {spec!r}: expected a built-in model, layer sizes, "
            "path/to/file.py:build or module.build"
        )
    return file_part, function


def _folders(cwd: Path | None) -> list[Path]:
    base = cwd or Path.cwd()
    return [base / "models", base]


def _function(module: Any, name: str, spec: str) -> Builder:
    function = getattr(module, name, None)
    if not callable(function):
        raise ModelError(f"--model {spec}: {getattr(module, '__file__', module)} has no "
                         f"function {name!r}")  # fmt: skip
    return function  # type: ignore[no-any-return]
