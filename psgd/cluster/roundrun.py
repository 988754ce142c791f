"""A round job's parts on a daemon: a pool of virtual clients, or the round job's PS.

The submitter ships a pool the training rows of the clients it hosts (once: clients hold index
arrays into them), and the PS the initial model. Both run until the submitter says FINISH
(the last round is recorded, or the target accuracy reached) or ABORT; the PS reports every
completed round (its global model and what the round cost) as it goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from psgd.cluster.jobprep import Prepared
from psgd.errors import ConfigError
from psgd.net import protocol
from psgd.net.routing import Placement, RoutedChannel
from psgd.nn import build_learner
from psgd.train.executors import default_executor_count, make_executors
from psgd.train.node import ClientRunner
from psgd.train.pool import PoolHost, serve_rounds
from psgd.train.rounds import DEFAULT_ROUNDS
from psgd.train.server_side import RoundStats, ServerSide
from psgd.train.shm import job_prefix, remove_stale

__all__ = ["pool_content", "run_pool", "run_round_server"]

_log = logging.getLogger(__name__)

Report = Callable[..., None]


def pool_content(
    x: np.ndarray, y: np.ndarray, clients: list[np.ndarray], first: int, count: int
) -> dict[str, Any]:
    """What pool hosting clients ``first..first+count-1`` is shipped: their rows, once.

    ``x``, ``y``: the whole training set; ``clients[n]``: client ``n``'s rows in it.
    """
    mine = clients[first : first + count]
    rows = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
    used, local = np.unique(rows, return_inverse=True)
    bounds = np.cumsum([0, *(len(c) for c in mine)]).astype(np.int64)
    return {"x": x[used], "y": y[used], "rows": local.astype(np.int64), "bounds": bounds}


def _channel(prepared: Prepared, pools: int) -> RoutedChannel:
    channel = prepared.channel
    assert isinstance(channel, RoutedChannel), "a round job's channel is a RoutedChannel"
    channel.place(Placement(prepared.parts.spec.node_count, pools))
    return channel


def run_pool(
    prepared: Prepared,
    node: int,
    pools: int,
    content: dict[str, Any],
    finished: Callable[[], bool],
) -> dict[str, Any]:
    """Host pool ``node``'s clients until ``finished()``; returns the pool's figures."""
    spec = prepared.parts.spec
    channel = _channel(prepared, pools)
    clients = Placement(spec.node_count, pools).range_of(node)
    x, y = np.asarray(content["x"]), np.asarray(content["y"])
    rows, bounds = np.asarray(content["rows"]), np.asarray(content["bounds"])
    if len(bounds) != len(clients) + 1 or (len(rows) and rows.max() >= len(x)):
        raise ConfigError(f"pool {node}: its client rows do not match the data it was sent")
    indices = {n: rows[bounds[i] : bounds[i + 1]] for i, n in enumerate(clients)}
    weights = list(content["weights"])

    def make_runner() -> ClientRunner:
        rng = np.random.default_rng(0)
        model = build_learner(spec.model, spec.activation, spec.components, rng)
        model.set_weights(weights)
        return ClientRunner(
            model, x, y, indices, spec.batch_size, spec.optimizer, spec.learn_rate, spec.seed,
            spec.job_id, spec.batch_records,
        )  # fmt: skip

    count = content.get("executors") or default_executor_count()
    remove_stale()
    prefix = job_prefix()
    executors = make_executors(0 if count == 1 else count, make_runner, prefix)
    _log.info(
        "job %s: pool %d hosts clients %d..%d on %d executor(s)",
        spec.job_id, node, clients.start, clients.stop - 1, count,
    )  # fmt: skip
    host = PoolHost(channel, clients, prepared.classes, executors, prefix)
    try:
        host.run(finished)
    finally:
        executors.close()
    return {**host.figures(), "executors": count}


def run_round_server(
    prepared: Prepared,
    pools: int,
    content: dict[str, Any],
    report: Report,
    finished: Callable[[], bool],
) -> tuple[list[np.ndarray], int]:
    """Serve as the round job's PS until ``finished()``: the last model and bytes sent."""
    spec = prepared.parts.spec
    channel = _channel(prepared, pools)
    server = ServerSide(
        spec.job_id, prepared.classes, list(content["weights"]), spec.rounds or DEFAULT_ROUNDS
    )
    last: list[np.ndarray] = list(content["weights"])

    def on_round(stats: RoundStats, model: list[np.ndarray]) -> None:
        nonlocal last
        last = [np.asarray(w) for w in model]
        report(protocol.ROUND, {"weights": last}, round=stats.round_no, stats=stats.to_wire())

    serve_rounds(server, channel, on_round, finished)
    return last, server.bytes_sent
