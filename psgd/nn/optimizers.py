"""Per-array optimizers: each turns a gradient into the step to subtract from its variable.

One `Optimizer` instance serves one array; its state is created on the first call with the
gradient's shape and dtype, and all arithmetic stays in that dtype (float32 in, float32 out).
`delta` allocates only the array it returns and updates its state in place.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np

from psgd.errors import ConfigError


class Optimizer:
    """Base class of optimizers.

    Parameters
    ----------
    learning_rate : float
        Step size, a positive finite number.
    """

    name: str = "optimizer"

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = _check(self, "learning_rate", learning_rate, low=0.0, open_low=True)
        self._slots: list[np.ndarray] = []

    def delta(self, grad: np.ndarray) -> np.ndarray:
        """The step for one gradient: the caller does ``value -= delta(grad)``.

        Parameters
        ----------
        grad : np.ndarray
            Gradient of the array this optimizer updates; same shape on every call.

        Returns
        -------
        np.ndarray
            A new array of the shape and dtype of `grad` (callers may keep or send it).
        """
        raise NotImplementedError

    def get_state(self) -> list[np.ndarray]:
        """Copies of the arrays that hold this optimizer's progress (for checkpoints).

        The moment buffers, then the step count as a 0-d int64 array.
        """
        return [slot.copy() for slot in self._slots] + [np.array(getattr(self, "t", 0))]

    def set_state(self, state: list[np.ndarray]) -> None:
        """Restore what ``get_state`` returned."""
        self._slots = [np.array(slot, copy=True) for slot in state[:-1]]
        if hasattr(self, "t"):
            self.t = int(state[-1])

    def _state(self, grad: np.ndarray, count: int) -> list[np.ndarray]:
        slots = self._slots
        if not slots:
            slots.extend(np.zeros_like(grad) for _ in range(count))
        elif grad.shape != slots[0].shape or grad.dtype != slots[0].dtype:
            raise ValueError(
                f"{self!r}: state is for shape {slots[0].shape} {slots[0].dtype}, got gradient "
                f"{grad.shape} {grad.dtype} (use one optimizer per array)"
            )
        return slots

    def __repr__(self) -> str:
        params = inspect.signature(type(self)).parameters
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in params)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain gradient descent: ``delta = lr * g``."""

    name = "sgd"

    def delta(self, grad: np.ndarray) -> np.ndarray:
        return np.multiply(grad, self.learning_rate)


class Momentum(Optimizer):
    """Heavy-ball momentum: ``v = momentum * v + g``; ``delta = lr * v`` (``v`` starts at 0)."""

    name = "momentum"

    def __init__(self, learning_rate: float, momentum: float = 0.9) -> None:
        super().__init__(learning_rate)
        self.momentum = _check(self, "momentum", momentum, low=0.0, high=1.0)

    def delta(self, grad: np.ndarray) -> np.ndarray:
        (v,) = self._state(grad, 1)
        v *= self.momentum
        v += grad
        return np.multiply(v, self.learning_rate)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction.

    ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g**2``, ``t += 1``,
    ``delta = lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1-b1**t)`` and
    ``v_hat = v / (1-b2**t)``.
    """

    name = "adam"

    def __init__(
        self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        super().__init__(learning_rate)
        self.beta1 = _check(self, "beta1", beta1, low=0.0, high=1.0)
        self.beta2 = _check(self, "beta2", beta2, low=0.0, high=1.0)
        self.eps = _check(self, "eps", eps, low=0.0, open_low=True)
        self.t = 0

    def delta(self, grad: np.ndarray) -> np.ndarray:
        # The state holds m / (1-b1) and v / (1-b2): each then updates in two in-place passes
        # (m = b1*m + g), and the constant factors fold into two scalars below.
        m, v = self._state(grad, 2)
        b1, b2 = self.beta1, self.beta2
        self.t += 1
        c1 = (1.0 - b1) / (1.0 - b1**self.t)  # m_hat = c1 * m
        c2 = math.sqrt((1.0 - b2) / (1.0 - b2**self.t))  # sqrt(v_hat) = c2 * sqrt(v)
        m *= b1
        m += grad
        out = np.square(grad)
        v *= b2
        v += out
        np.sqrt(v, out=out)
        out += self.eps / c2
        np.divide(m, out, out=out)
        out *= self.learning_rate * c1 / c2
        return out


class Adagrad(Optimizer):
    """Adagrad: ``G += g**2``; ``delta = lr * g / (sqrt(G) + eps)`` (``G`` starts at 0)."""

    name = "adagrad"

    def __init__(self, learning_rate: float, eps: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.eps = _check(self, "eps", eps, low=0.0, open_low=True)

    def delta(self, grad: np.ndarray) -> np.ndarray:
        (acc,) = self._state(grad, 1)
        out = np.square(grad)
        acc += out
        np.sqrt(acc, out=out)
        out += self.eps
        np.divide(grad, out, out=out)
        out *= self.learning_rate
        return out


class RMSprop(Optimizer):
    """RMSprop: ``s = rho*s + (1-rho)*g**2``; ``delta = lr * g / (sqrt(s) + eps)``."""

    name = "rmsprop"

    def __init__(self, learning_rate: float, rho: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.rho = _check(self, "rho", rho, low=0.0, high=1.0)
        self.eps = _check(self, "eps", eps, low=0.0, open_low=True)

    def delta(self, grad: np.ndarray) -> np.ndarray:
        # The state holds s / (1-rho), updated as s = rho*s + g**2 (see Adam).
        (s,) = self._state(grad, 1)
        c = math.sqrt(1.0 - self.rho)  # sqrt(s_true) = c * sqrt(s)
        out = np.square(grad)
        s *= self.rho
        s += out
        np.sqrt(s, out=out)
        out += self.eps / c
        np.divide(grad, out, out=out)
        out *= self.learning_rate / c
        return out


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Adam, Adagrad, RMSprop)
}


def make_optimizer(name: str, learning_rate: float, **options: Any) -> Optimizer:
    """A new optimizer for one array.

    Parameters
    ----------
    name : str
        One of `OPTIMIZERS`: ``"sgd"``, ``"momentum"``, ``"adam"``, ``"adagrad"``, ``"rmsprop"``.
    learning_rate : float
        Step size.
    **options
        Hyper-parameters of that optimizer (e.g. ``beta1=0.9`` for Adam).

    Raises
    ------
    ConfigError
        Unknown name, unknown option or out-of-range value; the message lists what is valid.
    """
    cls = OPTIMIZERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown optimizer {name!r} (valid: {', '.join(OPTIMIZERS)})")
    valid = [p for p in inspect.signature(cls).parameters if p != "learning_rate"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"optimizer {name!r}: unknown option {unknown[0]!r} (valid: {', '.join(valid) or '-'})"
        )
    return cls(learning_rate, **options)


def _check(
    opt: Optimizer,
    what: str,
    value: float,
    *,
    low: float,
    high: float = math.inf,
    open_low: bool = False,
) -> float:
    """`value` as a python float (so float32 arrays stay float32) in ``[low, high)``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    x = float(value) if ok else math.nan
    if not (math.isfinite(x) and (x > low if open_low else x >= low) and x < high):
        bound = f"{'(' if open_low else '['}{low}, {high})"
        raise ConfigError(
            f"optimizer {opt.name!r}: {what} must be a number in {bound}, got {value!r}"
        )
    return x
