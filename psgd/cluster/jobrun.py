"""One job on a worker daemon: prepare it, train (or serve as PS) on a thread, report back.

A job is prepared (checked, codec loaded, data channel opened) by a ``Preparation`` thread, then
waits for START, then runs on a thread of its own. Everything it sends to its submitter goes
through the daemon's outbox queue; the daemon's main thread owns the control socket.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from psgd.cluster.jobprep import Preparation, Prepared
from psgd.cluster.roundrun import run_pool, run_round_server
from psgd.data.grey_levels import unpack_features
from psgd.errors import Diverged
from psgd.net import protocol, wire
from psgd.net.bundle import unload_bundle
from psgd.net.channel import JobAborted
from psgd.net.droplog import DAEMON_ONLY_ATTR
from psgd.net.security import Security
from psgd.net.transport import PeerChannel
from psgd.net.wire_objects import set_active
from psgd.settings import GlobalSettings
from psgd.train.server_model import EpochMarks, server_weights
from psgd.train.sync import CodecSet, serve
from psgd.train.trainer import Trainer

__all__ = ["JobRun"]

_log = logging.getLogger(__name__)

Outbox = queue.SimpleQueue[tuple[bytes, list[Any]]]

#: The job log sent back to the submitter keeps at most this many lines and characters.
JOB_LOG_MAX_LINES = 20_000
JOB_LOG_MAX_CHARS = 4_000_000


class _LogCapture(logging.Handler):
    """Keeps the job's log lines to send back to the submitter (bounded).

    Lines about the daemon rather than the job (its control port's drops and refusals,
    marked ``DAEMON_ONLY``) stay in the daemon's own log.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.chars = 0
        self.left_out = 0
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, DAEMON_ONLY_ATTR, False):
            return
        if len(self.lines) >= JOB_LOG_MAX_LINES or self.chars >= JOB_LOG_MAX_CHARS:
            self.left_out += 1
            return
        line = self.format(record)
        self.lines.append(line)
        self.chars += len(line)

    def text(self) -> str:
        tail = [f"... {self.left_out} more log lines left out"] if self.left_out else []
        return "\n".join(self.lines + tail)


class JobRun:
    """A job this daemon took, from its JOB message to its last report.

    ``state``: ``preparing`` (a ``Preparation`` thread checks the job, loads its codec and opens
    its data channel), then ``rejected`` (``reason`` says why) or ``ready`` (accepted, waiting
    for START), then ``running`` (on its own thread) until ``thread_alive()`` turns False.
    Only the daemon's main thread changes ``state``.
    """

    def __init__(
        self,
        message: protocol.Message,
        submitter: bytes,
        outbox: Outbox,
        context: zmq.Context,
        bind_host: str,
        work_dir: Path,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        security: Security | None = None,
    ) -> None:
        self.job_id: str = message["job"]
        self.node_id: int = message["node"]
        self.role: str = message["role"]
        self.pools: int = message.get("pools") or 0  # round jobs: the job's client pools
        #: EVAL messages for a round job's pool, from the daemon's control thread.
        self.eval_requests: queue.SimpleQueue[protocol.Message] = queue.SimpleQueue()
        self.content = message.content
        self.submitter = submitter
        self.outbox = outbox
        #: DONE or FAILED, sent by the daemon once it is idle again (never before).
        self.final: list[Any] | None = None
        self.last_heard = time.monotonic()
        self.state = "preparing"
        self.reason = ""
        self.aborted = False
        self.outcome = "not started"
        self._abort = threading.Event()
        self._finish = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = _LogCapture()
        self._prepared: Prepared | None = None
        self.preparation = Preparation(message, context, bind_host, work_dir, limits, security)

    @property
    def started(self) -> bool:
        return self.state == "running"

    @property
    def prepared(self) -> Prepared:
        assert self._prepared is not None, "the job is not prepared"
        return self._prepared

    @property
    def channel(self) -> PeerChannel:
        return self.prepared.channel

    @property
    def data_port(self) -> int:
        return int(self.channel.address.rsplit(":", 1)[1])

    def take_preparation(self) -> None:
        """Once ``preparation.done``: ``ready``, or ``rejected`` with the ``reason``."""
        preparation = self.preparation
        if preparation.prepared is None:
            self.state, self.reason = "rejected", preparation.reason
            return
        self._prepared = preparation.prepared
        self._prepared.channel.aborted = self._abort.is_set
        self.state = "ready"

    def start(self, peers: dict[int, str]) -> None:
        """Connect to the peers (checked by the caller) and run the job on its own thread."""
        self.channel.connect(peers)
        self.state = "running"
        target = {
            "worker": self._run_worker, "ps": self._run_server, "pool": self._run_pool,
            "round-ps": self._run_round_server,
        }[self.role]  # fmt: skip
        self._thread = threading.Thread(
            target=self._guarded, args=(target,), name="psgd-job", daemon=True
        )
        self._thread.start()

    def thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def finish(self) -> None:
        self._finish.set()

    def abort(self, reason: str) -> None:
        self.aborted = True
        self._abort.set()
        self._finish.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the preparation and the job's thread; True once both have ended."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        threads = [self.preparation.thread, *([self._thread] if self._thread else [])]
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def cleanup(self) -> None:
        """Close sockets and forget the codec modules (the job is over)."""
        if self._prepared is None:
            return  # a failed preparation cleaned up after itself
        self.channel.close()
        set_active(None)  # nothing of this job is visible to the next one
        GlobalSettings.clear_default()
        unload_bundle(self.prepared.folder)
        shutil.rmtree(self.prepared.folder, ignore_errors=True)

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
            GlobalSettings.set_default(self.prepared.parts.settings)
            set_active(self.prepared.content_classes)
            names = sorted({c.__name__ for c in self.prepared.classes})
            _log.info(
                "job %s: node %s (%s) starting with codecs %s on %s",
                self.job_id, self.node_id, self.role, names, self.channel.address,
            )  # fmt: skip
            target()
            self.outcome = "completed"
        except JobAborted:
            self.outcome = "aborted"
            _log.info("job %s node %s aborted", self.job_id, self.node_id)
        except Diverged as exc:
            self.outcome = "diverged"
            _log.error("job %s: %s", self.job_id, exc)
            self._report(protocol.FAILED, node=self.node_id, error=str(exc), log=self._log.text(),
                         diverged=True)  # fmt: skip
        except BaseException as exc:  # a codec may raise anything, SystemExit included
            self.outcome = "failed"
            error = f"node {self.node_id}: {exc}"
            if not isinstance(exc, Exception):
                error = f"node {self.node_id}: {type(exc).__name__}: {exc}"
            if "Traceback" not in error:
                error += "\n" + traceback.format_exc()
            _log.error("job %s failed: %s", self.job_id, error)
            self._report(protocol.FAILED, node=self.node_id, error=error, log=self._log.text())
        finally:
            root.removeHandler(self._log)
            self.cleanup()

    def _run_worker(self) -> None:
        parts = self.prepared.parts
        model = self.prepared.model  # built with the shipped weights while preparing
        blocks = {
            int(b): (unpack_features(x), np.asarray(y))
            for b, (x, y) in self.content["blocks"].items()
        }
        x_test, y_test = self.content["test"]
        test = (unpack_features(x_test), np.asarray(y_test))
        trainer = Trainer(
            self.node_id, model, blocks, test, self.prepared.classes, self.channel, parts.config,
            self._emit, self._abort.is_set, parts.attack, self._checkpoint,
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
            log=self._log.text(),
        )

    def _run_server(self) -> None:
        initial = list(self.content["weights"]) if isinstance(self.content, dict) else None
        codecs = CodecSet(self.node_id, self.prepared.classes, self.channel, initial)
        spec = self.prepared.parts.spec
        marks = EpochMarks(codecs, spec.node_count, spec.epochs, self._send_server_model)
        try:
            serve(codecs, self._finish, marks)
            weights = server_weights(codecs)
        finally:
            codecs.dispose()
        if self._abort.is_set():
            raise JobAborted("aborted")
        figures = {"figures": {"node": self.node_id, "bytes_sent": self.channel.bytes_sent},
                   "batches": [], "epochs": [],
                   "params_read": sorted(GlobalSettings.params_read())}  # fmt: skip
        content = None if weights is None else {"weights": weights}
        self._report(
            protocol.DONE, content, node=self.node_id, report=figures, log=self._log.text()
        )

    def _send_server_model(self, epoch: int, weights: list[np.ndarray]) -> None:
        self._report(protocol.SERVER_MODEL, {"weights": weights}, epoch=epoch)

    def _run_pool(self) -> None:
        figures = run_pool(
            self.prepared, self.node_id, self.pools, self.content, self._finish.is_set,
            self.eval_requests, self._report,
        )  # fmt: skip
        if self._abort.is_set():
            raise JobAborted("aborted")
        report = {"figures": figures, "batches": [], "epochs": [],
                  "params_read": sorted(GlobalSettings.params_read())}  # fmt: skip
        self._report(protocol.DONE, None, node=self.node_id, report=report, log=self._log.text())

    def _run_round_server(self) -> None:
        weights, sent = run_round_server(
            self.prepared, self.pools, self.content, self._report, self._finish.is_set
        )
        if self._abort.is_set():
            raise JobAborted("aborted")
        report = {"figures": {"node": self.node_id, "bytes_sent": sent}, "batches": [],
                  "epochs": [], "params_read": sorted(GlobalSettings.params_read())}  # fmt: skip
        self._report(protocol.DONE, {"weights": weights}, node=self.node_id, report=report,
                     log=self._log.text())  # fmt: skip
