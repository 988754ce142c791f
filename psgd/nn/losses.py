"""Losses: mean over the batch of a per-sample loss, with the gradient for the model output."""

from __future__ import annotations

import numpy as np

from psgd.errors import ConfigError
from psgd.nn.layers import Buffers


class Loss:
    """Base class of losses. ``value_and_grad`` is the training hot path."""

    name: str = "loss"

    def __init__(self) -> None:
        self._buffers = Buffers()
        self._rows: np.ndarray = np.arange(0)

    def value_and_grad(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss over the batch and its gradient with respect to `pred`.

        Parameters
        ----------
        pred : np.ndarray, shape (n, k)
            Model output.
        target : np.ndarray
            Targets; the accepted shape depends on the loss.

        Returns
        -------
        (float, np.ndarray of shape (n, k))
            The gradient array is a buffer owned by the loss, overwritten by the next call.
        """
        raise NotImplementedError

    def value(self, pred: np.ndarray, target: np.ndarray) -> float:
        """Mean loss over the batch, ``(n, k), target -> float``."""
        return self.value_and_grad(pred, target)[0]

    def predict(self, pred: np.ndarray) -> np.ndarray:
        """Class labels ``(n,)`` from model outputs ``(n, k)``: the argmax of each row."""
        return pred.argmax(axis=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy on logits with integer class labels.

    ``loss = mean_i(logsumexp(z_i) - z_i[y_i])``, computed with the row maximum subtracted so it
    never overflows; the gradient is ``(softmax(z) - onehot(y)) / n``.

    `pred` is ``(n, k)`` logits, `target` ``(n,)`` integer labels in ``[0, k)``.
    """

    name = "softmax_cross_entropy"

    def value_and_grad(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        n, k = pred.shape
        if target.shape != (n,) or target.dtype.kind not in "iu":
            raise ValueError(
                f"SoftmaxCrossEntropy: expected ({n},) integer labels, "
                f"got shape {target.shape} dtype {target.dtype}"
            )
        # one reduction catches both ends: negative labels are huge once read as unsigned
        if n and target.view(f"u{target.itemsize}").max() >= k:
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must be in [0, {k}), "
                f"got values from {target.min()} to {target.max()}"
            )
        if self._rows.shape[0] != n:
            self._rows = np.arange(n)
        rows, inv_n = self._rows, 1.0 / max(n, 1)
        # numpy reduces slowly along a short contiguous axis: take row maxima of a transposed
        # copy and row sums with a matrix-vector product instead
        zt = self._buffers.get("zt", (k, n), pred.dtype)
        np.copyto(zt, pred.T)
        p = np.subtract(
            pred, zt.max(axis=0)[:, None], out=self._buffers.get("p", (n, k), pred.dtype)
        )
        picked = p[rows, target]
        np.exp(p, out=p)
        s = np.dot(p, self._buffers.get("ones", (k,), pred.dtype, fill=1.0))
        loss = float(np.log(s).sum() - picked.sum()) * inv_n
        np.divide(inv_n, s, out=s)  # p * (1 / (n * s)): one pass over p does both scalings
        p *= s[:, None]
        p[rows, target] -= inv_n
        return loss, p


class MSE(Loss):
    """Half squared error summed over outputs, averaged over the batch.

    ``loss = (1/n) * sum_i 0.5 * ||pred_i - target_i||**2``; the gradient is
    ``(pred - target) / n``. `target` has the shape of `pred`, ``(n, k)``, or holds ``(n,)``
    integer labels, read as one-hot rows (a single output is then fit to the label itself).
    """

    name = "mse"

    def value_and_grad(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        if target.ndim == 1 and target.dtype.kind in "iu" and pred.ndim == 2:
            target = _one_hot(target, pred, "MSE")
        if target.shape != pred.shape:
            raise ValueError(f"MSE: expected targets of shape {pred.shape}, got {target.shape}")
        if target.dtype != pred.dtype:
            target = target.astype(pred.dtype)
        n = max(pred.shape[0], 1)
        diff = np.subtract(pred, target, out=self._buffers.get("diff", pred.shape, pred.dtype))
        loss = 0.5 * float(np.vdot(diff, diff)) / n
        diff *= 1.0 / n
        return loss, diff

    def predict(self, pred: np.ndarray) -> np.ndarray:
        """The argmax of each row; with one output, 1 where it is above 0.5."""
        if pred.shape[1] == 1:
            return (pred[:, 0] > 0.5).astype(np.int64)
        return pred.argmax(axis=1)


class BinaryCrossEntropy(Loss):
    """Sigmoid output with binary cross-entropy, on logits ``z``.

    ``loss = mean_i sum_j (log(1 + exp(z_ij)) - t_ij * z_ij)`` (computed with ``logaddexp``,
    so it never overflows); the gradient is ``(sigmoid(z) - t) / n``. With one output
    (logistic regression) `target` is ``(n,)`` labels in {0, 1}; with k outputs, ``(n,)``
    labels read as one-hot rows or ``(n, k)`` targets in [0, 1] (multi-label).
    """

    name = "binary_cross_entropy"

    def value_and_grad(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        n, k = pred.shape
        if target.ndim == 1 and k == 1:
            if target.dtype.kind in "iu" and n and target.view(f"u{target.itemsize}").max() > 1:
                raise ValueError("BinaryCrossEntropy: one output needs labels 0 or 1")
            target = target.reshape(n, 1)
        elif target.ndim == 1 and target.dtype.kind in "iu":
            target = _one_hot(target, pred, "BinaryCrossEntropy")
        if target.shape != pred.shape:
            raise ValueError(
                f"BinaryCrossEntropy: expected ({n},) labels or ({n}, {k}) targets, "
                f"got {target.shape}"
            )
        inv_n = 1.0 / max(n, 1)
        t = target.astype(pred.dtype, copy=False)
        softplus = np.logaddexp(0.0, pred, out=self._buffers.get("sp", pred.shape, pred.dtype))
        loss = float(softplus.sum() - np.vdot(t, pred)) * inv_n
        grad = np.multiply(pred, 0.5, out=self._buffers.get("g", pred.shape, pred.dtype))
        np.tanh(grad, out=grad)  # sigmoid(z) = (1 + tanh(z / 2)) / 2, which never overflows
        grad += 1.0
        grad *= 0.5
        grad -= t
        grad *= inv_n
        return loss, grad

    def predict(self, pred: np.ndarray) -> np.ndarray:
        """With one output: 1 where the logit is above 0 (probability above 0.5)."""
        if pred.shape[1] == 1:
            return (pred[:, 0] > 0).astype(np.int64)
        return pred.argmax(axis=1)


def _one_hot(labels: np.ndarray, pred: np.ndarray, owner: str) -> np.ndarray:
    n, k = pred.shape
    if labels.shape != (n,):
        raise ValueError(f"{owner}: expected ({n},) labels, got {labels.shape}")
    if k == 1:
        return labels.reshape(n, 1).astype(pred.dtype)
    if n and labels.view(f"u{labels.itemsize}").max() >= k:
        raise ValueError(f"{owner}: labels must be in [0, {k}) for {k} outputs")
    hot = np.zeros((n, k), pred.dtype)
    hot[np.arange(n), labels] = 1.0
    return hot


LOSSES: dict[str, type[Loss]] = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "mse": MSE,
}

#: Short names accepted by `make_loss` (and ``--loss``).
LOSS_ALIASES = {"ce": "softmax_cross_entropy", "bce": "binary_cross_entropy"}


def make_loss(name: str) -> Loss:
    """A new loss from its `name` (a key of `LOSSES`, or ``ce`` / ``bce``)."""
    try:
        return LOSSES[LOSS_ALIASES.get(name, name)]()
    except KeyError:
        valid = ", ".join([*LOSSES, *LOSS_ALIASES])
        raise ConfigError(f"unknown loss {name!r} (valid: {valid})") from None
