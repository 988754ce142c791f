"""The maths of the federated codecs (``codecs/federated.py``), as plain functions.

Weighted model averaging (McMahan et al. 2017), client sampling per round, the default
round length of one local epoch, and FedProx's proximal correction (Li et al. 2020).
Tests call these directly; the codecs only wire them to the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "RunningAverage",
    "client_local_steps",
    "clients_per_round",
    "local_epoch_steps",
    "proximal_correction",
    "sample_clients",
    "weighted_average",
]


def weighted_average(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``sum_k weights[k] * arrays[k] / sum_k weights[k]``, in the dtype of ``arrays[0]``.

    Parameters
    ----------
    arrays : sequence of np.ndarray
        One or more arrays of the same shape (e.g. one layer's weights of each client).
    weights : sequence of float
        One non-negative weight per array (e.g. each client's training sample count), not
        all zero.

    Returns
    -------
    np.ndarray
        A new array of the shape and dtype of ``arrays[0]``; accumulated in float64 so the
        order of the clients does not change the float32 result.

    Raises
    ------
    ValueError
        For no arrays, mismatched lengths or shapes, or negative / all-zero / non-finite
        weights.
    """
    if len(arrays) == 0:
        raise ValueError("weighted_average: no arrays to average")
    if len(arrays) != len(weights):
        raise ValueError(
            f"weighted_average: {len(arrays)} arrays but {len(weights)} weights; one each"
        )
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"weighted_average: weights must be finite, >= 0 and not all 0, got {w.tolist()}"
        )
    first = np.asarray(arrays[0])
    total = np.zeros(first.shape, dtype=np.float64)
    for index, (array, weight) in enumerate(zip(arrays, w, strict=True)):
        array = np.asarray(array)
        if array.shape != first.shape:
            raise ValueError(
                f"weighted_average: array {index} has shape {array.shape}, "
                f"array 0 has {first.shape}"
            )
        total += weight * array
    total /= w.sum()
    return total.astype(first.dtype, copy=False)


class RunningAverage:
    """A sample-weighted average built one array at a time, in float64.

    Adding the arrays in a fixed order gives exactly ``weighted_average`` of them, so a server
    can add each client's weights as they arrive (in its own fixed order) instead of holding
    them all until the round's end.
    """

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.weight = 0.0
        self.dtype: np.dtype | None = None
        self._scaled: np.ndarray | None = None

    def add(self, array: np.ndarray, weight: float) -> None:
        """Add ``weight * array`` (weight finite and >= 0)."""
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"RunningAverage: weight must be finite and >= 0, got {weight}")
        array = np.asarray(array)
        if self.total is None:
            self.total = np.zeros(array.shape, dtype=np.float64)
            self._scaled = np.empty_like(self.total)
            self.dtype = array.dtype
        elif array.shape != self.total.shape:
            raise ValueError(
                f"RunningAverage: array of shape {array.shape}, expected {self.total.shape}"
            )
        assert self._scaled is not None
        np.multiply(array, np.float64(weight), out=self._scaled)
        self.total += self._scaled
        self.weight += weight

    def result(self) -> np.ndarray:
        """The average so far, in the dtype of the first array."""
        if self.total is None or self.weight <= 0:
            raise ValueError("RunningAverage: nothing with a positive weight was added")
        return (self.total / self.weight).astype(self.dtype, copy=False)


def clients_per_round(fraction: float, client_count: int) -> int:
    """How many clients a round samples: ``max(1, round(fraction * client_count))``.

    Halves round up (``0.25 * 10`` gives 3), unlike Python's ``round`` which rounds to even.

    Raises
    ------
    ValueError
        For ``fraction`` outside ``(0, 1]`` or ``client_count < 1``.
    """
    if isinstance(fraction, bool) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"--param fraction: must be in (0, 1], got {fraction!r}")
    if client_count < 1:
        raise ValueError(f"clients_per_round: client_count must be >= 1, got {client_count}")
    return max(1, min(client_count, math.floor(float(fraction) * client_count + 0.5)))


def sample_clients(
    clients: Sequence[int], fraction: float, round_no: int, seed: int = 0
) -> list[int]:
    """The clients that take part in round ``round_no``, sorted ascending.

    ``clients_per_round(fraction, len(clients))`` distinct clients drawn uniformly without
    replacement by a generator seeded with ``(seed, round_no)``: the same call always gives
    the same clients (so every layer's server codec picks the same ones), and rounds differ.

    Raises
    ------
    ValueError
        For a bad ``fraction``, no clients, or a negative ``seed`` or ``round_no``.
    """
    if seed < 0 or round_no < 0:
        raise ValueError(
            f"sample_clients: seed and round must be >= 0, got seed={seed} round={round_no}"
        )
    count = clients_per_round(fraction, len(clients))
    rng = np.random.default_rng([int(seed), int(round_no)])
    chosen = rng.choice(len(clients), size=count, replace=False)
    return sorted(int(clients[i]) for i in chosen)


def local_epoch_steps(node_samples: Sequence[int], batch_size: int) -> int | None:
    """Batches in one local epoch of the largest client, ``ceil(max(samples) / batch)``.

    This is the trainer's epoch when each node holds one block (redundancy 1), so a round
    per epoch makes per-epoch evaluation per-round evaluation. ``None`` when either figure
    is unknown (empty ``node_samples`` or ``batch_size`` 0).
    """
    if not node_samples or batch_size < 1 or max(node_samples) < 1:
        return None
    return max(1, math.ceil(max(node_samples) / batch_size))


def client_local_steps(n_samples: int, batch_size: int, local_epochs: float) -> int:
    """McMahan et al.'s ``u_k = E * n_k / B`` local steps of a client, rounded up, at least 1."""
    if batch_size < 1 or not local_epochs > 0:
        raise ValueError(
            f"client_local_steps: batch_size >= 1 and local_epochs > 0, got {batch_size}, "
            f"{local_epochs}"
        )
    return max(1, math.ceil(local_epochs * max(n_samples, 1) / batch_size - 1e-9))


def proximal_correction(
    weights: np.ndarray, global_weights: np.ndarray, learn_rate: float, mu: float
) -> np.ndarray:
    """FedProx's proximal step: ``weights - learn_rate * mu * (weights - global_weights)``.

    The gradient of ``mu/2 * ||w - w_global||^2`` is ``mu * (w - w_global)``; this takes one
    gradient step of size ``learn_rate`` on it, evaluated at ``weights`` (the weights after
    the local loss step). Returns a new array in the dtype of ``weights``.
    """
    weights = np.asarray(weights)
    correction = np.subtract(weights, global_weights, dtype=weights.dtype)
    correction *= weights.dtype.type(learn_rate * mu)
    return np.subtract(weights, correction, out=correction)
