"""The submitter of a round job on daemons: pools of virtual clients and the round PS.

``--node_count K`` clients are spread over the listed worker daemons (``P`` pools, each hosting
a contiguous range of clients, ``psgd.net.routing.Placement``); the PS daemon runs the server
codecs and reports every completed round. This side evaluates each round's global model,
records it, and tells every daemon to finish once the last round (or the target accuracy) is
reached. Liveness, failures and aborts work as for every other job (``Submitter``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from psgd.cluster.roundrun import pool_content
from psgd.cluster.shipping import model_files
from psgd.cluster.submit import Emit, Submitter, _Node
from psgd.cluster.workers import Endpoint
from psgd.codec import Parameter_Server
from psgd.errors import Diverged, JobFailed
from psgd.net import protocol
from psgd.net.bundle import bundle_codecs
from psgd.net.routing import Placement
from psgd.net.security import Security
from psgd.results.outcome import RunResult
from psgd.train.evaluation import client_summary
from psgd.train.prepare import PreparedJob
from psgd.train.rounds import DEFAULT_ROUNDS
from psgd.train.server_side import RoundStats

__all__ = ["RoundSubmitter"]

_log = logging.getLogger(__name__)

#: Every daemon of a round job idle, with nothing in flight and no change for this long: the
#: job can make no progress (a few heartbeats, so the picture is consistent).
DEADLOCK_CONFIRM_S = 3.0

OnRound = Callable[[RoundStats, list[np.ndarray]], bool]


class RoundSubmitter(Submitter):
    """Runs one round job on ``pools`` worker daemons and the ``ps`` daemon.

    Parameters
    ----------
    job:
        The prepared round job.
    pools, ps:
        The worker daemons that host the clients (at most one per client) and the PS daemon.
    on_round:
        Called with each round's stats and global model, in round order; True ends the job.
    executors:
        Executor processes per pool (``None``: each pool uses its host's cores).
    on_start:
        Called once every daemon has been told to start (the rounds' clock starts there).
    emit, security, answer_timeout_s:
        As for ``Submitter``.
    """

    def __init__(
        self,
        job: PreparedJob,
        pools: list[Endpoint],
        ps: Endpoint | None,
        on_round: OnRound,
        executors: int | None = None,
        on_start: Callable[[], None] | None = None,
        emit: Emit | None = None,
        security: Security | None = None,
        answer_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(job, pools, ps, emit, answer_timeout_s, security)
        self.placement = Placement(job.spec.node_count, len(pools))
        self.on_round = on_round
        self.executors = executors
        self.on_start = on_start
        #: Called when a pool evaluation completes; True ends the job (the target is reached).
        self.on_evaluated: Callable[[], bool] = lambda: False
        self.rounds = 0
        for node in self.nodes.values():
            if node.node != Parameter_Server:
                clients = self.placement.range_of(node.node)
                node.label = f"pool {node.node} (clients {clients.start}..{clients.stop - 1})"
        self._handlers[protocol.ROUND] = self._on_round
        self._handlers.pop(protocol.TRAINED)
        self._handlers[protocol.EVALUATED] = self._on_evaluated
        self._evaluations: dict[int, tuple[Future[dict[str, float]], dict[int, Any]]] = {}
        self._rounds_over = False
        self._quiet: dict[int, tuple[int, int, str]] = {}
        self._still: tuple[Any, float] | None = None  # a quiescent snapshot, since when
        self._client_rows = job.client_train_indices()

    def _job_frames(self, node: _Node, common: dict[str, Any]) -> list[Any]:
        job = self.job
        common = {**common, "pools": self.placement.pools}
        if node.node == Parameter_Server:
            assert job.ps_classes is not None
            sources, names = bundle_codecs(job.ps_classes)
            weights = {"weights": job.initial_weights}
            return protocol.make(protocol.JOB, weights, node=node.node, role="round-ps",
                                 bundle=sources, codecs=names, **common)  # fmt: skip
        clients = self.placement.range_of(node.node)
        data = job.dataset
        content: dict[str, Any] = {
            "weights": job.initial_weights, "executors": self.executors,
            "model_dims": list(job.model_dims),
            **pool_content(data.x_train, data.y_train, self._client_rows,
                           job.client_test_indices, clients),
        }  # fmt: skip
        sources, names = bundle_codecs(job.codec_classes, model_files(job))
        return protocol.make(protocol.JOB, content, node=node.node, role="pool",
                             bundle=sources, codecs=names, **common)  # fmt: skip

    def evaluate_on_pools(self, round_no: int, model: list[np.ndarray]) -> Future[dict[str, float]]:
        """Ask every pool to evaluate its clients on ``model``; the round's figures, later."""
        future: Future[dict[str, float]] = Future()
        self._evaluations[round_no] = (future, {})
        for node in self.nodes.values():
            if node.node != Parameter_Server:
                node.socket.send_multipart(protocol.make(
                    protocol.EVAL, {"weights": model}, job=self.job.spec.job_id, round=round_no
                ), copy=False)  # fmt: skip
        return future

    def _on_evaluated(self, node: _Node, message: protocol.Message) -> None:
        pending = self._evaluations.get(message["round"])
        content = message.content if isinstance(message.content, dict) else {}
        accuracy, loss = content.get("accuracy"), content.get("loss")
        clients = len(self.placement.range_of(node.node)) if node.node >= 0 else -1
        if pending is None or not all(
            isinstance(a, np.ndarray) and a.shape == (clients,) for a in (accuracy, loss)
        ):
            _log.warning("dropped an unexpected evaluation report from %s", node.name)
            return
        future, answers = pending
        answers[node.node] = (accuracy, loss)
        if len(answers) < self.placement.pools:
            return
        del self._evaluations[message["round"]]
        ordered = [answers[pool] for pool in sorted(answers)]
        accuracies = [float(v) for pool_accuracy, _ in ordered for v in pool_accuracy]
        losses = [float(v) for _, pool_loss in ordered for v in pool_loss]
        future.set_result(client_summary(accuracies, losses))
        if self.on_evaluated() or (self._rounds_over and not self._evaluations):
            self._finish_all()

    def _start(self) -> None:
        super()._start()
        if self.on_start is not None:
            self.on_start()

    def _on_round(self, node: _Node, message: protocol.Message) -> None:
        weights = message.content.get("weights") if isinstance(message.content, dict) else None
        try:
            if node.node != Parameter_Server or not isinstance(weights, list):
                raise ValueError("not a round report of the parameter server")
            stats = RoundStats.from_wire(message["stats"])
        except (ValueError, TypeError, KeyError) as exc:
            _log.warning("dropped a malformed round report from %s: %s", node.name, exc)
            return
        model = [np.array(w, copy=True) for w in weights]
        self.rounds = max(self.rounds, stats.round_no)
        try:
            stop = self.on_round(stats, model)
        except Diverged as exc:
            self.diverged = True
            raise JobFailed(str(exc)) from None
        if stats.round_no >= (self.job.spec.rounds or DEFAULT_ROUNDS):
            self._rounds_over = True
        if stop or (self._rounds_over and not self._evaluations):
            self._finish_all()

    def _on_heartbeat(self, node: _Node, message: protocol.Message) -> None:
        super()._on_heartbeat(node, message)
        quiet = message.get("quiet")
        if (
            isinstance(quiet, list) and len(quiet) == 3 and type(quiet[0]) is int
            and type(quiet[1]) is int and isinstance(quiet[2], str)
        ):  # fmt: skip
            self._quiet[node.node] = (quiet[0], quiet[1], quiet[2])
        else:
            self._quiet.pop(node.node, None)

    def _heartbeat(self, now: float) -> None:
        super()._heartbeat(now)
        if self._finish_sent or any(n.state != "running" for n in self.nodes.values()):
            return
        quiet = self._quiet
        if len(quiet) < len(self.nodes) or sum(q[0] for q in quiet.values()) != sum(
            q[1] for q in quiet.values()
        ):
            self._still = None
            return
        snapshot = (self.rounds, sorted((n, q[:2]) for n, q in quiet.items()))
        if self._still is None or self._still[0] != snapshot:
            self._still = (snapshot, now)
        elif now - self._still[1] >= DEADLOCK_CONFIRM_S:
            raise JobFailed(self._deadlock_report())

    def _deadlock_report(self) -> str:
        lines = []
        for node in sorted(self.nodes.values(), key=lambda n: n.node != Parameter_Server):
            who = "the parameter server" if node.node == Parameter_Server else node.label
            lines.append(f"{who}: {self._quiet[node.node][2]}")
        return (
            f"deadlock after round {self.rounds}: no client can run and no package is in flight "
            f"(every daemon idle for {DEADLOCK_CONFIRM_S:g} s with nothing sent). "
            + "; ".join(lines)
        )

    def _finish_all(self) -> None:
        if self._finish_sent:
            return
        self._finish_sent = True
        for node in self.nodes.values():
            node.socket.send_multipart(protocol.make(protocol.FINISH, job=self.job.spec.job_id))

    def _result(self, wall_s: float, error: str | None) -> RunResult:
        ps_bytes = 0
        pools: list[dict[str, Any]] = []
        read: set[str] = set()
        for node in self.nodes.values():
            report = node.report or {}
            read.update(k for k in report.get("params_read", ()) if isinstance(k, str))
            figures = report.get("figures", {})
            if node.node == Parameter_Server:
                ps_bytes = int(figures.get("bytes_sent", 0))
            elif figures:
                pools.append(figures)
        return RunResult(
            [], ps_bytes, wall_s, error, logs={n.node: n.log for n in self.nodes.values()},
            diverged=self.diverged, figures={"pools": pools}, params_read=sorted(read),
        )  # fmt: skip
