"""One job on a worker daemon: unpack it, train (or serve as PS) on a thread, report back.

Everything the job sends to its submitter goes through the daemon's outbox queue; the daemon's
main thread owns the control socket.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from psgd.algorithms.attacks import Attack, parse_attacks
from psgd.codec import Codec
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.net import protocol, wire
from psgd.net.bundle import load_bundle, unload_bundle
from psgd.net.channel import JobAborted
from psgd.net.security import Security
from psgd.net.transport import PeerChannel
from psgd.nn import build_learner
from psgd.settings import GlobalSettings
from psgd.train.sync import CodecSet, serve
from psgd.train.trainer import Trainer, TrainerConfig

__all__ = ["JobRun", "prepare_run"]

_log = logging.getLogger(__name__)

Outbox = queue.SimpleQueue[tuple[bytes, list[Any]]]


class _LogCapture(logging.Handler):
    """Keeps the job's log lines to send back to the submitter."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 100_000:
            self.lines.append(self.format(record))


class JobRun:
    """A job accepted by this daemon, from unpacking to its last report."""

    def __init__(
        self,
        message: protocol.Message,
        submitter: bytes,
        parts: _JobParts,
        classes: list[type[Codec]],
        channel: PeerChannel,
        folder: Path,
        outbox: Outbox,
    ) -> None:
        self.job_id: str = message["job"]
        self.node_id: int = message["node"]
        self.role: str = message["role"]
        self.content = message.content
        self.spec, self.config, self.settings = parts.spec, parts.config, parts.settings
        self.attack = parts.attack
        self.submitter = submitter
        self.classes = classes
        self.channel = channel
        self.folder = folder
        self.outbox = outbox
        #: DONE or FAILED, sent by the daemon once it is idle again (never before).
        self.final: list[Any] | None = None
        self.last_heard = time.monotonic()
        self.started = False
        self.aborted = False
        self.outcome = "not started"
        self._abort = threading.Event()
        self._finish = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = _LogCapture()

    @property
    def data_port(self) -> int:
        return int(self.channel.address.rsplit(":", 1)[1])

    def start(self, peers: dict[int, str]) -> None:
        """Connect to the peers (checked by the caller) and run the job on its own thread."""
        self.channel.connect(peers)
        self.started = True
        target = self._run_worker if self.role == "worker" else self._run_server
        self._thread = threading.Thread(target=self._guarded, args=(target,), name="psgd-job")
        self._thread.start()

    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def finish(self) -> None:
        self._finish.set()

    def abort(self, reason: str) -> None:
        self.aborted = True
        self._abort.set()
        self._finish.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def cleanup(self) -> None:
        """Close sockets and forget the codec modules (the job is over)."""
        self.channel.close()
        unload_bundle(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _report(self, type_: str, content: Any = None, **fields: Any) -> None:
        frames = protocol.make(type_, content, job=self.job_id, **fields)
        if type_ in (protocol.DONE, protocol.FAILED):
            self.final = frames
        else:
            self.outbox.put((self.submitter, frames))

    def _checkpoint(self, state: dict[str, Any]) -> None:
        self._report(protocol.CHECKPOINT, state, node=self.node_id, epoch=int(state["epoch"]))

    def _emit(self, event: dict[str, Any]) -> None:
        self._report(protocol.PROGRESS, event=event)

    def _guarded(self, target: Any) -> None:
        root = logging.getLogger("psgd")
        root.addHandler(self._log)
        try:
            GlobalSettings.set_default(self.settings)
            names = sorted({c.__name__ for c in self.classes})
            _log.info(
                "job %s: node %s (%s) starting with codecs %s on %s",
                self.job_id, self.node_id, self.role, names, self.channel.address,
            )  # fmt: skip
            target()
            self.outcome = "completed"
        except JobAborted:
            self.outcome = "aborted"
            _log.info("job %s node %s aborted", self.job_id, self.node_id)
        except BaseException as exc:
            self.outcome = "failed"
            error = f"node {self.node_id}: {exc}"
            if "Traceback" not in error:
                error += "\n" + traceback.format_exc()
            _log.error("job %s failed: %s", self.job_id, error)
            self._report(
                protocol.FAILED, node=self.node_id, error=error, log="\n".join(self._log.lines)
            )
        finally:
            root.removeHandler(self._log)
            self.cleanup()

    def _run_worker(self) -> None:
        spec = self.spec
        model = build_learner(
            spec.model, spec.activation, spec.components, np.random.default_rng(0)
        )
        model.set_weights(list(self.content["weights"]))
        blocks = {
            int(b): (np.asarray(x), np.asarray(y)) for b, (x, y) in self.content["blocks"].items()
        }
        test = tuple(self.content["test"])
        trainer = Trainer(
            self.node_id, model, blocks, test, self.classes, self.channel, self.config,
            self._emit, self._abort.is_set, self.attack, self._checkpoint,
        )  # fmt: skip
        if self.content.get("resume") is not None:
            trainer.restore(self.content["resume"])
        try:
            report = trainer.train()
            _log.info(
                "job %s: node %s trained %d batches, %d samples in %.2f s, test accuracy %.4f",
                self.job_id, self.node_id, report.batches, report.samples, report.train_s,
                report.accuracy,
            )  # fmt: skip
            self._report(protocol.TRAINED, node=self.node_id)
            trainer.drain(self._finish)
        finally:
            report = trainer.close()
        if self._abort.is_set():
            raise JobAborted("aborted")
        figures = {"figures": report.figures(), "batches": report.batch_rows,
                   "epochs": report.epoch_rows,
                   "params_read": sorted(GlobalSettings.params_read())}  # fmt: skip
        self._report(
            protocol.DONE,
            {"weights": model.get_weights()},
            node=self.node_id,
            report=figures,
            log="\n".join(self._log.lines),
        )

    def _run_server(self) -> None:
        initial = list(self.content["weights"]) if isinstance(self.content, dict) else None
        codecs = CodecSet(self.node_id, self.classes, self.channel, initial)
        try:
            serve(codecs, self._finish)
        finally:
            codecs.dispose()
        if self._abort.is_set():
            raise JobAborted("aborted")
        figures = {"figures": {"node": self.node_id, "bytes_sent": self.channel.bytes_sent},
                   "batches": [], "epochs": [],
                   "params_read": sorted(GlobalSettings.params_read())}  # fmt: skip
        self._report(
            protocol.DONE, None, node=self.node_id, report=figures, log="\n".join(self._log.lines)
        )


@dataclass
class _JobParts:
    """A JOB message's settings, checked before any of its code is loaded."""

    spec: JobSpec
    config: TrainerConfig
    settings: GlobalSettings
    attack: Attack | None


def _parts(message: protocol.Message) -> _JobParts:
    try:
        spec = JobSpec.from_dict(message["spec"])
        config = TrainerConfig(**message["trainer"])
        settings = GlobalSettings.for_job(spec, [int(n) for n in message["node_samples"]])
        attack = parse_attacks(spec.attacks, spec.node_count).get(message["node"])
    except Exception as exc:
        raise ConfigError(f"bad job settings: {type(exc).__name__}: {exc}") from None
    if attack is not None and attack.on_data:
        attack = None  # data attacks were applied by the submitter
    return _JobParts(spec, config, settings, attack)


def prepare_run(
    message: protocol.Message,
    submitter: bytes,
    context: zmq.Context,
    bind_host: str,
    work_dir: Path,
    outbox: Outbox,
    limits: wire.Limits = wire.DEFAULT_LIMITS,
    security: Security | None = None,
) -> JobRun:
    """Check a JOB message, load its codecs and open its data channel; raises on any problem."""
    role = message["role"]
    if role not in ("worker", "ps"):
        raise ConfigError(f"job role must be 'worker' or 'ps', got {role!r:.20}")
    if role == "worker" and not isinstance(message.content, dict):
        raise ConfigError("job carries no model and data")
    parts = _parts(message)  # before running any shipped code
    folder = work_dir / f"job-{message['job']}-{message['node']}"
    if folder.resolve().parent != work_dir.resolve():
        raise ConfigError(f"job id {message['job']!r:.40} is not a plain name")
    try:
        classes = load_bundle(message["bundle"], message["codecs"], folder)
    except Exception as exc:
        unload_bundle(folder)
        shutil.rmtree(folder, ignore_errors=True)
        detail = traceback.format_exc()
        raise ConfigError(f"cannot load the codec: {type(exc).__name__}: {exc}\n{detail}") from None
    aborted = threading.Event()
    try:
        channel = PeerChannel(
            context, message["node"], message["job"], bind_host, aborted.is_set, limits, security
        )
    except Exception:
        unload_bundle(folder)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    run = JobRun(message, submitter, parts, classes, channel, folder, outbox)
    channel.aborted = run._abort.is_set
    return run
