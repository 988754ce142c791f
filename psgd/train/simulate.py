"""Run a whole job in this process: one thread per node, queues for the network.

The nodes run the same ``Trainer`` the worker daemons run; only the channel differs. With
``--link``/``--device-speed`` the network carries a virtual clock (``psgd.train.vclock``) and
the records report virtual time beside real time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psgd.codec import Parameter_Server
from psgd.errors import ConfigError, Diverged
from psgd.net.channel import JobAborted
from psgd.nn.blas import blas_threads
from psgd.results.outcome import NodeReport, RunResult
from psgd.settings import GlobalSettings
from psgd.train.checkpoint import save_node_checkpoint
from psgd.train.inprocess import InProcessNetwork
from psgd.train.prepare import PreparedJob
from psgd.train.server_model import EpochMarks, ServerEpochs, server_weights
from psgd.train.sync import CodecSet, serve
from psgd.train.trainer import Trainer
from psgd.train.vclock import build_clock, job_bytes

__all__ = ["simulate"]

_log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]


class _Countdown:
    """Sets ``done`` when every worker has finished training (or failed)."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.lock = threading.Lock()
        self.done = threading.Event()

    def finish_one(self) -> None:
        with self.lock:
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()


def simulate(
    job: PreparedJob,
    emit: Emit | None = None,
    checkpoint_dir: Path | None = None,
    resume: dict[int, dict[str, Any]] | None = None,
) -> RunResult:
    """Train ``job`` with every node in this process; never raises for a node's failure.

    A failing node aborts the others; ``RunResult.error`` holds the first failure.
    Checkpoints (``spec.checkpoint_every``) go to ``checkpoint_dir``; ``resume`` maps each
    node to the checkpoint it continues from.
    """
    emit = emit or (lambda event: None)
    spec = job.spec
    waiting = [c.__name__ for c in job.codec_classes if getattr(c, "waits_for_model", False)]
    if waiting:
        raise ConfigError(
            f"{waiting[0]} is a round-based client: run it with psgd.train.rounds.run_rounds "
            "(the command line does)"
        )
    GlobalSettings.set_default(job.settings)
    nodes = list(range(spec.node_count))
    every = nodes + ([Parameter_Server] if job.ps_classes else [])
    clock = build_clock(spec.links, spec.device_speed, every, spec.seed, spec.shared_cores)
    if clock is not None:
        clock.ship({node: job_bytes(job, node) for node in every})
    network = InProcessNetwork(every, job_id=spec.job_id, clock=clock)
    countdown = _Countdown(len(nodes))
    reports: dict[int, NodeReport] = {}
    models: dict[int, Any] = {}
    errors: list[str] = []
    diverged: list[bool] = []
    server_epochs = ServerEpochs.for_job(job)

    def fail(where: str, exc: BaseException) -> None:
        if isinstance(exc, JobAborted):
            return
        message = str(exc) if isinstance(exc, Diverged) else f"{where}: {exc}"
        errors.append(message)
        diverged.append(isinstance(exc, Diverged))
        _log.error("%s", message)
        network.abort(message)
        countdown.done.set()

    def run_worker(node_id: int) -> None:
        trainer = None
        try:
            trainer = Trainer(
                node_id,
                job.build_model(),
                job.node_blocks(node_id),
                (job.dataset.x_test, job.dataset.y_test),
                job.codec_classes,
                network.channel(node_id),
                job.trainer_config,
                emit,
                lambda: network.aborted,
                job.update_attack(node_id),
                _saver(checkpoint_dir, node_id),
            )
            if resume is not None:
                trainer.restore(resume[node_id])
            if clock is not None:
                clock.start(node_id)
            trainer.train()
            countdown.finish_one()
            trainer.drain(countdown.done)
        except BaseException as exc:
            countdown.finish_one()
            fail(f"node {node_id}", exc)
        finally:
            if trainer is not None:
                try:
                    reports[node_id] = trainer.close()
                    models[node_id] = trainer.model
                except BaseException as exc:
                    fail(f"node {node_id}", exc)

    ps_bytes = [0]
    server_model: list[Any] = []

    def run_server() -> None:
        assert job.ps_classes is not None
        channel = network.channel(Parameter_Server)
        if clock is not None:
            clock.start(Parameter_Server)
        try:
            codecs = CodecSet(Parameter_Server, job.ps_classes, channel, job.initial_weights)
            marks = None
            if server_epochs is not None:
                marks = EpochMarks(codecs, spec.node_count, spec.epochs, server_epochs.hold)
            try:
                serve(codecs, countdown.done, marks)
                server_model.extend(server_weights(codecs) or [])
            finally:
                codecs.dispose()
        except BaseException as exc:
            fail("parameter server", exc)
        ps_bytes[0] = channel.bytes_sent

    # One BLAS thread per node: at batch sizes like 64, more threads only contend (PERF.md).
    with blas_threads(1):
        wall = _run_threads(nodes, run_worker, run_server if job.ps_classes else None)
    ordered = [reports[n] for n in nodes if n in reports]
    error = errors[0] if errors else None
    weights = {node: model.get_weights() for node, model in models.items()}
    if server_model:
        weights[Parameter_Server] = server_model
    ps_sent = ps_bytes[0] if job.ps_classes else None
    first_diverged = bool(diverged) and diverged[0]
    result = RunResult(ordered, ps_sent, wall, error, weights, diverged=first_diverged)
    result.emulated = clock.describe() if clock is not None else {}
    if server_epochs is not None:  # the server's model per epoch, off the server's thread
        server_epochs.evaluate_held()
        result.server_rows = server_epochs.rows
    return result


def _saver(folder: Path | None, node: int) -> Callable[[dict[str, Any]], None] | None:
    if folder is None:
        return None

    def save(state: dict[str, Any]) -> None:
        save_node_checkpoint(folder, node, state)

    return save


def _run_threads(
    nodes: list[int], run_worker: Callable[[int], None], run_server: Callable[[], None] | None
) -> float:
    start = time.perf_counter()
    threads = [threading.Thread(target=run_worker, args=(n,), name=f"psgd-node-{n}") for n in nodes]
    if run_server is not None:
        threads.append(threading.Thread(target=run_server, name="psgd-ps"))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start
