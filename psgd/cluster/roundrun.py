"""A round job's parts on a daemon: a pool of virtual clients, or the round job's PS.

The submitter ships a pool the training rows of the clients it hosts (once: clients hold index
arrays into them), and the PS the initial model. Both run until the submitter says FINISH
(the last round is recorded, or the target accuracy reached) or ABORT; the PS reports every
completed round (its global model and what the round cost) as it goes.
"""

from __future__ import annotations

import copy
import logging
import queue
from collections.abc import Callable
from typing import Any

import numpy as np

from psgd.cluster.jobprep import Prepared
from psgd.data.grey_levels import pack_features, unpack_features
from psgd.errors import ConfigError
from psgd.net import protocol
from psgd.net.routing import Placement, RoutedChannel
from psgd.nn import Learner
from psgd.train.evaluation import evaluate_clients, initial_personal_state
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
    x: np.ndarray,
    y: np.ndarray,
    clients: list[np.ndarray],
    held_out: list[np.ndarray] | None,
    hosted: range,
) -> dict[str, Any]:
    """What the pool hosting clients ``hosted`` is shipped: their rows, once.

    ``x``, ``y``: the whole training set; ``clients[n]``: client ``n``'s training rows in it;
    ``held_out[n]``: its held-out rows (``--eval clients``), or ``None``.
    """
    parts = [clients[n] for n in hosted]
    if held_out is not None:
        parts += [held_out[n] for n in hosted]
    rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    used, local = np.unique(rows, return_inverse=True)
    bounds = np.cumsum([0, *(len(p) for p in parts)]).astype(np.int64)
    rows = local.astype(np.int64)
    return {"x": pack_features(x[used]), "y": y[used], "rows": rows, "bounds": bounds}


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
    requests: queue.SimpleQueue[protocol.Message],
    report: Report,
) -> dict[str, Any]:
    """Host pool ``node``'s clients until ``finished()``; returns the pool's figures.

    EVAL messages put in ``requests`` are answered (``report``) between the pool's tasks.
    """
    spec = prepared.parts.spec
    channel = _channel(prepared, pools)
    clients = Placement(spec.node_count, pools).range_of(node)
    x, y = unpack_features(content["x"]), np.asarray(content["y"])
    rows, bounds = np.asarray(content["rows"]), np.asarray(content["bounds"])
    parts = [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if len(parts) not in (len(clients), 2 * len(clients)) or (len(rows) and rows.max() >= len(x)):
        raise ConfigError(f"pool {node}: its client rows do not match the data it was sent")
    indices = dict(zip(clients, parts, strict=False))
    held_out = list(zip(clients, parts[len(clients) :], strict=False))
    weights = list(content["weights"])

    def make_runner() -> ClientRunner:
        model = copy.deepcopy(prepared.model)  # the job's model, built from the shipped spec
        model.set_weights(weights)
        return ClientRunner(
            model, x, y, indices, spec.batch_size, spec.optimizer, spec.learn_rate, spec.seed,
            spec.job_id, spec.batch_records, dropout=spec.dropout,
        )  # fmt: skip

    count = content.get("executors")
    if type(count) is not int or count < 0:
        count = default_executor_count()
    remove_stale()
    prefix = job_prefix()
    executors = make_executors(0 if count <= 1 else count, make_runner, prefix)  # 1: inline
    _log.info(
        "job %s: pool %d hosts clients %d..%d on %s",
        spec.job_id, node, clients.start, clients.stop - 1,
        f"{count} executor processes" if count > 1 else "its job thread",
    )  # fmt: skip
    host = PoolHost(channel, clients, prepared.classes, executors, prefix)
    evaluate = _PoolEvaluator(make_runner().model, x, y, held_out, host, report, node)
    try:
        host.run(finished, lambda: evaluate.serve(requests))
    finally:
        executors.close()
    return {**host.figures(), "executors": count}


class _PoolEvaluator:
    """Evaluates the pool's clients on a round's model, each with its own personal state."""

    def __init__(
        self,
        model: Learner,
        x: np.ndarray,
        y: np.ndarray,
        held_out: list[tuple[int, np.ndarray]],
        host: PoolHost,
        report: Report,
        node: int,
    ) -> None:
        self.model, self.x, self.y, self.held_out = model, x, y, held_out
        self.host, self.report, self.node = host, report, node
        self.initial = initial_personal_state(model)
        self.shapes = [w.shape for w in model.get_weights()]

    def serve(self, requests: queue.SimpleQueue[protocol.Message]) -> None:
        """Answer every EVAL waiting in ``requests``."""
        while not requests.empty():
            message = requests.get()
            weights = message.content.get("weights") if isinstance(message.content, dict) else None
            if (
                not self.held_out
                or not isinstance(weights, list)
                or [getattr(w, "shape", None) for w in weights] != self.shapes
            ):
                _log.warning("pool %d: dropped an EVAL without a model of this job", self.node)
                continue
            self.model.set_weights(weights)
            round_no = message["round"]
            accuracy, loss = evaluate_clients(
                self.model, self.x, self.y, self.held_out, self.host.personal_at(round_no),
                self.initial,
            )  # fmt: skip
            content = {"accuracy": np.array(accuracy), "loss": np.array(loss)}
            self.report(protocol.EVALUATED, content, node=self.node, round=round_no)


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

    serve_rounds(server, channel, on_round, finished, spec.round_deadline)
    return last, server.bytes_sent
