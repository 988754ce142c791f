"""Maths of the model-averaging and asynchronous parameter-server codecs.

Plain numpy functions on the arrays of one trainable variable, used by ``codecs/averaging.py``
(model averaging, BMUF, EASGD) and ``codecs/ps.py`` (asynchronous PS, DC-ASGD) and tested
against the papers' formulas directly. None of them modifies its arguments: codecs send the
arrays they keep without copying, so a kept array must never change once made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BMUFState",
    "NodeBatch",
    "bmuf_start",
    "bmuf_update",
    "check_easgd_alpha",
    "dc_asgd_update",
    "easgd_center_update",
    "elastic_force",
    "mean",
]


def mean(values: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of ``values`` summed in the order given, in the first value's dtype.

    Every node that averages the same arrays in the same order gets the same bits.
    """
    total = np.array(values[0], copy=True)
    for value in values[1:]:
        total += value
    total /= len(values)
    return total


class NodeBatch:
    """One node's contents of a batch, one per block it holds; their mean once all are in.

    Parameters
    ----------
    blocks_held:
        How many blocks the node holds (``len(GlobalSettings.node_2_block[node])``).
    """

    def __init__(self, blocks_held: int) -> None:
        self.blocks_held = blocks_held
        self.contents: dict[int, np.ndarray] = {}

    def add(self, block_id: int, content: np.ndarray) -> np.ndarray | None:
        """Keep one block's content; the mean over blocks (in block-id order) once complete."""
        self.contents[block_id] = content
        if len(self.contents) < self.blocks_held:
            return None
        value = mean([self.contents[b] for b in sorted(self.contents)])
        self.contents.clear()
        return value


# --- BMUF: Chen & Huo 2016, blockwise model-update filtering -------------------------------


@dataclass(frozen=True)
class BMUFState:
    """The state every BMUF node keeps, identical on all of them.

    Attributes
    ----------
    global_weights:
        ``w_g``, the filtered global model.
    delta:
        ``Delta``, the block momentum (the last global model update).
    start:
        ``w_init``, where every node starts the next block: ``w_g``, or with Nesterov block
        momentum ``w_g + mu * Delta``.
    """

    global_weights: np.ndarray
    delta: np.ndarray
    start: np.ndarray


def bmuf_start(weights: np.ndarray) -> BMUFState:
    """The state before the first block: ``w_g = w_init = weights``, ``Delta = 0``."""
    return BMUFState(weights, np.zeros_like(weights), weights)


def bmuf_update(
    state: BMUFState, average: np.ndarray, mu: float, zeta: float, nesterov: bool
) -> BMUFState:
    """One block update of BMUF from the average of the nodes' weights at the block's end.

    ``G = average - w_init`` (the block's mean progress from where the nodes started);
    ``Delta = mu * Delta + zeta * G``; ``w_g = w_g + Delta``;
    ``w_init = w_g + mu * Delta`` (Nesterov) or ``w_g`` (classical block momentum).
    """
    progress = average - state.start
    delta = mu * state.delta + zeta * progress
    global_weights = state.global_weights + delta
    start = global_weights + mu * delta if nesterov else global_weights
    return BMUFState(global_weights, delta, start)


# --- EASGD: Zhang, Choromanska & LeCun 2015, elastic averaging SGD ---------------------------


def elastic_force(weights: np.ndarray, center: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * (x_i - x~)``: what a worker subtracts from its weights at a communication."""
    return alpha * (weights - center)


def easgd_center_update(
    center: np.ndarray, workers: Sequence[np.ndarray], alpha: float
) -> np.ndarray:
    """``x~ + alpha * sum_i (x_i - x~)``: the center after a communication with ``workers``.

    All workers at once is synchronous EASGD (``= x~ + beta * (mean(x_i) - x~)``, ``beta =
    n * alpha``); one worker is asynchronous EASGD.
    """
    pull = np.zeros_like(center)
    for weights in workers:
        pull += weights - center
    return center + alpha * pull


def check_easgd_alpha(alpha: float, workers: int) -> str | None:
    """Why ``alpha`` is not a stable EASGD moving rate for ``workers`` workers, or None.

    The center stays a convex combination of itself and the workers only when
    ``0 < alpha`` and ``beta = workers * alpha < 1``.
    """
    if not alpha > 0:
        return f"alpha must be > 0, got {alpha!r}"
    if not workers * alpha < 1:
        return (
            f"alpha * workers must be < 1 for the center to stay stable, got "
            f"{alpha:g} * {workers} = {alpha * workers:g}"
        )
    return None


# --- DC-ASGD: Zheng et al. 2017, delay-compensated asynchronous SGD -------------------------


def dc_asgd_update(
    weights: np.ndarray,
    backup: np.ndarray,
    grad: np.ndarray,
    learn_rate: float,
    lam: float,
) -> np.ndarray:
    """``W - eta * (g + lam * g * g * (W - W_bak))``: a delay-compensated server step.

    ``g`` was computed at ``W_bak`` (the weights the worker last received); ``g * g`` is the
    paper's cheap diagonal approximation of the Hessian that carries it over to ``W``.
    """
    compensated = grad + lam * grad * grad * (weights - backup)
    return weights - learn_rate * compensated
