"""Model-averaging family: nodes train locally and meet every few steps.

- ``ModelAverage`` (periodic model averaging, "local SGD"): peer-to-peer; every
  ``--param block_steps=M`` (default 10) local steps every node sends its weights to all others
  and every node adopts their mean.
- ``BMUF`` (Chen & Huo 2016, blockwise model-update filtering): the same exchange, but the mean
  goes through block momentum before the nodes adopt it.
- ``EASGDWorker`` / ``EASGDServer`` (Zhang, Choromanska & LeCun 2015, elastic averaging SGD,
  synchronous) and ``AsyncEASGDWorker`` / ``AsyncEASGDServer`` (its asynchronous form): each
  worker is pulled towards a center variable kept by the parameter server, and the center
  towards the workers.

``ModelAverage`` and ``BMUF`` exchange parameters (``--exchange params``, their default) and
expect ``--sync ssgd``. Under ``--sync asgd`` a mean that arrives late replaces the weights when
it comes, dropping the local steps made meanwhile. The EASGD workers exchange steps
(``--exchange delta``) and track their weights from the ``initial_weights`` hook, so that steps
and elastic moves merge by addition whatever order they come in. Every node's content is the
mean of its blocks' contents (with ``--redundancy`` > 1 a node holds several). The maths is in
``psgd.algorithms.averaging``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from psgd import BlockWeight, Codec, ConfigError, GlobalSettings, Parameter_Server, netEncapsulation
from psgd.algorithms.averaging import (
    BMUFState,
    NodeBatch,
    bmuf_start,
    bmuf_update,
    check_easgd_alpha,
    easgd_center_update,
    elastic_force,
    mean,
)

DEFAULT_BLOCK_STEPS = 10
DEFAULT_EASGD_TAU = 10
#: EASGD's default ``beta = n * alpha``: the paper's recommended 0.9.
DEFAULT_EASGD_BETA = 0.9


def _int_param(owner: str, key: str, default: int) -> int:
    value = GlobalSettings.get_params(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: --param {key} must be a whole number >= 1, got {value!r}")
    return value


def _float_param(owner: str, key: str, default: float) -> float:
    value = GlobalSettings.get_params(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{owner}: --param {key} must be a number, got {value!r}")
    return float(value)


def _bool_param(owner: str, key: str, default: bool) -> bool:
    value = GlobalSettings.get_params(key, default)
    if value in (True, False):  # also 1 and 0
        return bool(value)
    raise ConfigError(f"{owner}: --param {key} must be true or false, got {value!r}")


def _replace(old: Any, new: Any) -> Any:
    return new


def _keep_pending(old: Any, new: Any) -> Any:
    # An empty buffer hands the merge np.asarray(0.0) (Parallel-SGD's rule): take ``new``.
    return new if np.ndim(old) == 0 else old


class ModelAverage(Codec):
    """Periodic model averaging ("local SGD"; e.g. Zhang, De Sa, Mitliagkas & Re 2016, "Parallel
    SGD: when does averaging help?"): every ``block_steps`` local steps all nodes adopt the mean.

    ``--exchange params``, ``--sync ssgd``, any ``--optimizer``; ``--param block_steps=M``
    (default 10). In between, the result is the node's own weights.
    At a sync step each node sends ``(round, node, weights)`` to every other node; round ``r``
    completes when every node's weights of round ``r`` are in, averaged in node order (so every
    node computes the same bits); packages of a later round wait for theirs.
    """

    exchange = "params"
    params = {"block_steps": (DEFAULT_BLOCK_STEPS, "local steps between two averages")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        settings = GlobalSettings.get_default()
        self.block_steps = _int_param(type(self).__name__, "block_steps", DEFAULT_BLOCK_STEPS)
        self.batch = NodeBatch(len(settings.node_2_block[node_id]))
        self.others = [n for n in settings.nodes if n != node_id]
        self.turn = 0
        self.round = 0
        self.pending: dict[int, dict[int, np.ndarray]] = defaultdict(dict)

    def dispose(self) -> None:
        self.pending.clear()

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation | None:
        weights = self.batch.add(block_weight.block_id, block_weight.content)
        if weights is None:
            return None
        self.turn += 1
        if self.turn % self.block_steps:
            self.set_result(weights, _keep_pending)  # never hide a mean that came in meanwhile
            return None
        round_no = self.turn // self.block_steps - 1
        self._store(round_no, self.node_id, weights)
        return netEncapsulation(self.others, (round_no, self.node_id, weights))

    def receive_blocks(self, content: tuple[int, int, np.ndarray]) -> None:
        round_no, sender, weights = content
        self._store(round_no, sender, weights)

    def _store(self, round_no: int, sender: int, weights: np.ndarray) -> None:
        self.pending[round_no][sender] = weights
        while len(self.pending.get(self.round, ())) == len(self.others) + 1:
            everyone = self.pending.pop(self.round)
            average = mean([everyone[n] for n in sorted(everyone)])
            self.set_result(self.combine(average), _replace)
            self.round += 1

    def combine(self, average: np.ndarray) -> np.ndarray:
        """The weights every node adopts given the round's mean (the mean itself here)."""
        return average


class BMUF(ModelAverage):
    """Blockwise model-update filtering (Chen & Huo, ICASSP 2016).

    Every ``block_steps`` local steps (a "block"), with ``avg`` the mean of all nodes' weights:
    ``G = avg - w_init``; ``Delta = mu * Delta + zeta * G``; ``w_g = w_g + Delta``; every node
    restarts from ``w_init = w_g + mu * Delta`` (Nesterov block momentum) or ``w_g``. ``G`` is
    measured from where the block started, ``w_init``, which is ``w_g`` for classical block
    momentum; under Nesterov, measuring it from ``w_g`` would feed ``mu * Delta`` back into
    every ``G`` and grow ``Delta`` by ``(1 + zeta) * mu`` per block. Every node runs the same
    deterministic update on the same mean, so all stay identical. ``w_g`` starts at the job's
    initial model (``initial_weights`` hook; without it, at the first block's mean).

    Expects ``--sync ssgd``. ``--param block_steps`` (default 10), ``bmuf_mu`` (block momentum,
    default ``1 - 1/N`` for N nodes: the paper's recommendation, which makes the filter's gain
    ``1 / (1 - mu) = N`` undo the ``1/N`` of averaging N nodes' progress), ``bmuf_zeta`` (block
    learning rate, default 1.0), ``bmuf_nesterov`` (default true).
    """

    params = {
        "bmuf_mu": ("1 - 1/N", "block momentum, in [0, 1)"),
        "bmuf_zeta": (1.0, "block learning rate, > 0"),
        "bmuf_nesterov": (True, "Nesterov block momentum"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        owner = type(self).__name__
        default_mu = 1.0 - 1.0 / GlobalSettings.get_default().node_count
        self.mu = _float_param(owner, "bmuf_mu", default_mu)
        self.zeta = _float_param(owner, "bmuf_zeta", 1.0)
        self.nesterov = _bool_param(owner, "bmuf_nesterov", True)
        if not 0 <= self.mu < 1 or not self.zeta > 0:
            raise ConfigError(
                f"{owner}: expected 0 <= bmuf_mu < 1 and bmuf_zeta > 0, "
                f"got bmuf_mu={self.mu:g}, bmuf_zeta={self.zeta:g}"
            )
        self.state: BMUFState | None = None

    def initial_weights(self, value: np.ndarray) -> None:
        self.state = bmuf_start(value)

    def combine(self, average: np.ndarray) -> np.ndarray:
        if self.state is None:
            self.state = bmuf_start(average)
        else:
            self.state = bmuf_update(self.state, average, self.mu, self.zeta, self.nesterov)
        return self.state.start


def easgd_alpha(owner: str) -> float:
    """EASGD's moving rate from ``--param easgd_alpha``, else ``learn_rate * easgd_rho``, else
    ``0.9 / N`` (``beta = 0.9`` as the paper recommends); checked for ``alpha * N < 1``."""
    settings = GlobalSettings.get_default()
    alpha = GlobalSettings.get_params("easgd_alpha", None)
    rho = GlobalSettings.get_params("easgd_rho", None)
    if alpha is None and rho is not None:
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not settings.learn_rate:
            raise ConfigError(f"{owner}: --param easgd_rho needs a number and the learning rate")
        alpha = settings.learn_rate * rho
    if alpha is None:
        alpha = DEFAULT_EASGD_BETA / settings.node_count
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ConfigError(f"{owner}: --param easgd_alpha must be a number, got {alpha!r}")
    problem = check_easgd_alpha(float(alpha), settings.node_count)
    if problem:
        raise ConfigError(f"{owner}: EASGD {problem}; lower --param easgd_alpha or easgd_rho")
    return float(alpha)


class EASGDWorker(Codec):
    """EASGD worker: local steps, and every ``tau`` steps an elastic pull towards the center.

    Every ``--param easgd_tau`` steps (default 10) it sends its weights ``x_i`` to the server
    and holds back that step; with the center ``x~`` the server replies, the result is the held
    step plus ``alpha * (x_i - x~)``: ``x_i <- x_i - alpha * (x_i - x~)``. Steps flow
    (``--exchange delta``): the worker tracks ``x_i`` from the ``initial_weights`` hook (zeros
    without it, as in the codec test scripts). Pair with ``EASGDServer`` under ``--sync ssgd``;
    any ``--optimizer`` makes the local steps (the paper's is SGD, with or without momentum).
    ``--param easgd_alpha`` / ``easgd_rho``: see ``easgd_alpha``.
    """

    exchange = "delta"
    params = {
        "easgd_tau": (DEFAULT_EASGD_TAU, "local steps between two elastic pulls"),
        "easgd_alpha": ("0.9 / N", "moving rate alpha (alpha * N < 1)"),
        "easgd_rho": (None, "alpha as learn_rate * rho, when easgd_alpha is not given"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        settings = GlobalSettings.get_default()
        self.tau = _int_param(type(self).__name__, "easgd_tau", DEFAULT_EASGD_TAU)
        self.alpha = easgd_alpha(type(self).__name__)
        self.batch = NodeBatch(len(settings.node_2_block[node_id]))
        self.weights: np.ndarray | None = None
        self.turn = 0
        self.held: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # round -> (step, x_i sent)

    def dispose(self) -> None:
        self.held.clear()

    def initial_weights(self, value: np.ndarray) -> None:
        self.weights = value

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation | None:
        step = self.batch.add(block_weight.block_id, block_weight.content)
        if step is None:
            return None
        if self.weights is None:
            self.weights = np.zeros_like(step)
        self.weights = self.weights - step
        self.turn += 1
        if self.turn % self.tau:
            self.set_result(step)
            return None
        round_no = self.turn // self.tau - 1
        self.held[round_no] = (step, self.weights)
        return netEncapsulation(Parameter_Server, (round_no, self.node_id, self.weights))

    def receive_blocks(self, content: tuple[int, np.ndarray]) -> None:
        round_no, center = content
        step, sent = self.held.pop(round_no)
        force = elastic_force(sent, center, self.alpha)
        self.weights = self.weights - force
        self.set_result(step + force)


class EASGDServer(Codec):
    """Synchronous EASGD center: when every worker's ``x_i`` of a round is in, reply the center
    ``x~`` to all, then ``x~ <- x~ + alpha * sum_i (x_i - x~)`` (``= x~ + beta * (mean - x~)``).

    Both updates use the same ``x~`` and ``x_i``, the paper's symmetric synchronous form. The
    center starts at the job's initial model (``initial_weights`` hook; zeros without it).
    """

    params = {
        "easgd_alpha": ("0.9 / N", "moving rate alpha (alpha * N < 1)"),
        "easgd_rho": (None, "alpha as learn_rate * rho, when easgd_alpha is not given"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.alpha = easgd_alpha(type(self).__name__)
        self.center: np.ndarray | None = None
        self.pending: dict[int, dict[int, np.ndarray]] = defaultdict(dict)

    def dispose(self) -> None:
        self.pending.clear()

    def initial_weights(self, value: np.ndarray) -> None:
        self.center = value

    def current_weights(self) -> np.ndarray | None:
        """The centre variable: the model EASGD produces."""
        return self.center

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: tuple[int, int, np.ndarray]) -> netEncapsulation | None:
        round_no, sender, weights = content
        workers = self.pending[round_no]
        workers[sender] = weights
        settings = GlobalSettings.get_default()
        if len(workers) < settings.node_count:
            return None
        del self.pending[round_no]
        center = self.center if self.center is not None else np.zeros_like(weights)
        self.center = easgd_center_update(center, [workers[n] for n in sorted(workers)], self.alpha)
        return netEncapsulation(settings.nodes, (round_no, center))


class AsyncEASGDWorker(EASGDWorker):
    """Asynchronous EASGD worker (the paper's Algorithm 1): ``EASGDWorker`` paired with
    ``AsyncEASGDServer``, under ``--sync asgd``.

    A reply may come after further local steps; the elastic move ``alpha * (x_i - x~)`` uses
    the ``x_i`` it sent (the one the server pulled the center with) and is subtracted from the
    weights the node has by then, keeping the local progress made meanwhile.
    """


class AsyncEASGDServer(Codec):
    """Asynchronous EASGD center: on each worker's ``x_i``, reply the current ``x~`` to that
    worker, then ``x~ <- x~ + alpha * (x_i - x~)``. Starts like ``EASGDServer``."""

    params = {
        "easgd_alpha": ("0.9 / N", "moving rate alpha (alpha * N < 1)"),
        "easgd_rho": (None, "alpha as learn_rate * rho, when easgd_alpha is not given"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.alpha = easgd_alpha(type(self).__name__)
        self.center: np.ndarray | None = None

    def dispose(self) -> None:
        self.center = None

    def initial_weights(self, value: np.ndarray) -> None:
        self.center = value

    def current_weights(self) -> np.ndarray | None:
        """The centre variable: the model EASGD produces."""
        return self.center

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: tuple[int, int, np.ndarray]) -> netEncapsulation:
        round_no, sender, weights = content
        center = self.center if self.center is not None else np.zeros_like(weights)
        self.center = easgd_center_update(center, [weights], self.alpha)
        return netEncapsulation(sender, (round_no, center))
