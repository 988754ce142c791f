"""FedEM's learner (Marfoq et al. 2021): a mixture of M MLPs with local mixture weights.

Each client holds M component models (shared with the federation through the codecs, one
variable each, components after one another) and mixture weights ``pi`` that never leave it.
A batch's loss is the mixture's negative log-likelihood ``-log sum_m pi_m p_m(y|x)``; its
gradient for component m is the EM-weighted one, ``q_im * grad(-log p_m(y_i|x_i))`` with
responsibilities ``q_im ∝ pi_m p_m(y_i|x_i)`` (E-step), and ``pi`` moves towards the batch mean
of ``q`` (an online M-step, step ``pi_rate``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from psgd.errors import ModelError
from psgd.nn.layers import Variable
from psgd.nn.model import Sequential

__all__ = ["MixtureMLP"]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:  # one sigmoid output z: p(1) = sigmoid(z) = softmax([0, z])[1]
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def check_mixture_loss(model: Sequential) -> None:
    """Refuse a component whose outputs are not class probabilities through a softmax (or one
    sigmoid): the mixture's likelihood ``p_m(y|x)`` needs them.

    Raises ``ModelError`` naming the loss.
    """
    loss = model.loss.name
    if loss == "softmax_cross_entropy":
        return
    if loss == "binary_cross_entropy" and model.layer_sizes[-1] == 1:
        return
    outputs = model.layer_sizes[-1]
    raise ModelError(
        f"a mixture (--components) needs models trained with softmax cross-entropy (--loss ce) "
        f"or one sigmoid output (logreg), not {loss} on {outputs} outputs"
    )


class MixtureMLP:
    """M component ``Sequential`` models of one architecture and local weights ``pi``.

    Parameters
    ----------
    components:
        The M models (M >= 2), same layer sizes and dtype, trained with softmax
        cross-entropy, or with binary cross-entropy on one sigmoid output (``logreg``).
    pi_rate:
        Step of the online M-step ``pi <- (1 - rate) pi + rate * mean(q)``.
    """

    def __init__(self, components: Sequence[Sequential], pi_rate: float = 0.1) -> None:
        if len(components) < 2:
            raise ModelError("a mixture needs at least two components")
        sizes = {tuple(c.layer_sizes) for c in components}
        if len(sizes) != 1:
            raise ModelError(f"mixture components differ in layer sizes: {sorted(sizes)}")
        check_mixture_loss(components[0])
        self.components = list(components)
        self.pi = np.full(len(components), 1.0 / len(components))
        self.pi_rate = pi_rate
        first = components[0]
        self.layer_sizes, self.activation, self.dtype = (
            first.layer_sizes, first.activation, first.dtype,
        )  # fmt: skip
        self.variables: list[Variable] = [v for c in components for v in c.variables]

    def parameters(self) -> list[Variable]:
        return self.variables

    def _log_likelihoods(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``log p_m(y_i | x_i)``, shape (n, M), after a forward pass of every component."""
        rows = np.arange(len(y))
        columns = []
        self._log_probs = []
        for component in self.components:
            log_p = _log_softmax(component.forward(x).astype(np.float64))
            self._log_probs.append(log_p)
            columns.append(log_p[rows, y])
        return np.stack(columns, axis=1)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float:
        """E-step, every component's weighted gradient, online M-step; the mixture NLL."""
        y = np.asarray(y)
        n = len(y)
        joint = self._log_likelihoods(x, y) + np.log(self.pi)[None, :]
        top = joint.max(axis=1, keepdims=True)
        log_total = top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))
        q = np.exp(joint - log_total[:, None])  # responsibilities, rows sum to 1
        rows = np.arange(n)
        for m, component in enumerate(self.components):
            grad = np.exp(self._log_probs[m])
            grad[rows, y] -= 1.0
            grad *= q[:, m : m + 1] / n
            if grad.shape[1] != self.layer_sizes[-1]:  # one sigmoid output: d/dz is column 1
                grad = grad[:, 1:]
            component.backward(grad.astype(self.dtype))
        self.pi = (1.0 - self.pi_rate) * self.pi + self.pi_rate * q.mean(axis=0)
        return float(-log_total.mean())

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``sum_m pi_m softmax(h_m(x))``, shape (n, classes)."""
        total = 0.0
        for weight, component in zip(self.pi, self.components, strict=True):
            total = total + weight * np.exp(_log_softmax(component(x).astype(np.float64)))
        return np.asarray(total)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> tuple[float, float]:
        """Mean mixture NLL and accuracy of the mixture prediction."""
        y = np.asarray(y)
        total, correct = 0.0, 0
        for start in range(0, len(y), batch_size):
            probs = self.predict_proba(x[start : start + batch_size])
            labels = y[start : start + batch_size]
            total += float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).sum())
            correct += int(np.count_nonzero(probs.argmax(axis=1) == labels))
        return total / len(y), correct / len(y)

    def get_weights(self) -> list[np.ndarray]:
        return [w for c in self.components for w in c.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        per = len(self.components[0].variables)
        if len(weights) != per * len(self.components):
            raise ModelError(
                f"set_weights: expected {per * len(self.components)} arrays, got {len(weights)}"
            )
        for m, component in enumerate(self.components):
            component.set_weights(weights[m * per : (m + 1) * per])

    def personal_state(self) -> list[np.ndarray]:
        """What never leaves a client: the mixture weights ``pi``."""
        return [self.pi.copy()]

    def load_personal_state(self, state: list[np.ndarray]) -> None:
        """Restore ``personal_state`` (another client's, or the initial uniform weights)."""
        self.pi = np.array(state[0], dtype=np.float64, copy=True)

    def __repr__(self) -> str:
        return f"MixtureMLP({len(self.components)} x {self.components[0]!r}, pi={self.pi.round(3)})"
