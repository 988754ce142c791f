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

__all__ = [
    "EVAL_CHUNK",
    "Evaluator",
    "client_summary",
    "combine_chunks",
    "evaluate_chunks",
    "evaluate_clients",
    "initial_personal_state",
]

#: The test set is evaluated in chunks of this many rows, each giving (mean loss, correct);
#: whoever evaluates which chunks, combining them in order gives the same figures.
EVAL_CHUNK = 1000


def evaluate_chunks(
    model: Learner, x: np.ndarray, y: np.ndarray, start: int, stop: int
) -> list[tuple[float, int]]:
    """``(mean loss, correct)`` of each ``EVAL_CHUNK`` rows of ``x[start:stop]``.

    ``start`` must be a multiple of ``EVAL_CHUNK`` so that every caller chunks alike.
    """
    assert start % EVAL_CHUNK == 0, "evaluation parts start on a chunk boundary"
    parts = []
    for first in range(start, stop, EVAL_CHUNK):
        last = min(first + EVAL_CHUNK, stop)
        loss, accuracy = model.evaluate(x[first:last], y[first:last])
        parts.append((float(loss), round(accuracy * (last - first))))
    return parts


def combine_chunks(parts: Sequence[tuple[float, int]], rows: int) -> dict[str, float]:
    """The accuracy and loss over ``rows`` rows from ``evaluate_chunks``' parts, in order."""
    sizes = [min(EVAL_CHUNK, rows - i * EVAL_CHUNK) for i in range(len(parts))]
    total = sum(loss * size for (loss, _), size in zip(parts, sizes, strict=True))
    correct = sum(count for _, count in parts)
    return {"accuracy": correct / rows, "loss": total / rows}


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
            rows = len(data.y_test)
            parts = evaluate_chunks(self.model, data.x_test, data.y_test, 0, rows)
            return combine_chunks(parts, rows)
        held_out = self.job.client_test_indices
        assert held_out is not None
        accuracies, losses = evaluate_clients(
            self.model, data.x_train, data.y_train, enumerate(held_out), personal,
            self.initial_personal,
        )  # fmt: skip
        return client_summary(accuracies, losses)
