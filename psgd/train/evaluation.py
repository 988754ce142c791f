"""Evaluating a round's global model: on the test set, or on every client's held-out split.

With ``--eval clients`` each client's own model (the global model with the client's personal
state, e.g. FedEM's mixture weights) is evaluated on the client's held-out rows, and the round
is reported as the distribution over clients (mean, 10th percentile, worst). In-process the
``Evaluator`` does it all; on daemons each pool evaluates the clients it hosts
(``evaluate_clients``, so personal state never leaves them) and the submitter summarises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from psgd.nn import Learner
from psgd.train.prepare import PreparedJob

__all__ = ["Evaluator", "client_summary", "evaluate_clients", "initial_personal_state"]


def evaluate_clients(
    model: Learner,
    x: np.ndarray,
    y: np.ndarray,
    held_out: Iterable[tuple[int, np.ndarray]],
    personal: Mapping[int, Any],
    initial_personal: Any,
) -> tuple[list[float], list[float]]:
    """Each client's accuracy and loss on its held-out ``(node, rows)``, in that order.

    ``model`` holds the global model; a client's personal state (``personal[node]``, else
    ``initial_personal``) is loaded into it first when the learner has one.
    """
    load = getattr(model, "load_personal_state", None)
    accuracies, losses = [], []
    for node, rows in held_out:
        if callable(load):
            load(personal.get(node) or initial_personal)
        loss, accuracy = model.evaluate(x[rows], y[rows])
        accuracies.append(float(accuracy))
        losses.append(float(loss))
    return accuracies, losses


def client_summary(accuracies: Sequence[float], losses: Sequence[float]) -> dict[str, float]:
    """A round's figures from every client's accuracy and loss."""
    values = np.array(accuracies)
    return {
        "accuracy": float(values.mean()),
        "loss": float(np.mean(losses)),
        "client_accuracy_p10": float(np.percentile(values, 10)),
        "client_accuracy_worst": float(values.min()),
    }


def initial_personal_state(model: Learner) -> Any:
    """The personal state a client starts with (``None`` for a learner without one)."""
    get = getattr(model, "personal_state", None)
    return get() if callable(get) else None


class Evaluator:
    """Evaluates each round's global model in this process (``--eval global`` or ``clients``)."""

    def __init__(self, job: PreparedJob, model: Learner) -> None:
        self.job = job
        self.model = model
        self.per_client = job.spec.eval == "clients"
        self.initial_personal = initial_personal_state(model)

    def __call__(self, weights: list[np.ndarray], personal: dict[int, Any]) -> dict[str, float]:
        self.model.set_weights(weights)
        data = self.job.dataset
        if not self.per_client:
            loss, accuracy = self.model.evaluate(data.x_test, data.y_test)
            return {"accuracy": float(accuracy), "loss": float(loss)}
        held_out = self.job.client_test_indices
        assert held_out is not None
        accuracies, losses = evaluate_clients(
            self.model, data.x_train, data.y_train, enumerate(held_out), personal,
            self.initial_personal,
        )  # fmt: skip
        return client_summary(accuracies, losses)
