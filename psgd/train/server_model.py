"""The server's model: what parameter-server and EASGD server codecs hold, as a result.

A server codec that keeps the model (``AsyncPSServer``'s weights, ``EASGDServer``'s centre,
``GradientPSServer``'s copy of the weights every worker holds) says so with a method
``current_weights()`` returning its layer's array. When every layer's codec has one, the job's
server model is evaluated on the test set and saved as ``model.npz`` (the workers' models go
to ``model-node<i>.npz``).

It is also evaluated once per epoch. *The server model at epoch e* is what ``current_weights()``
returns once the server has received every worker's end of epoch e: at the end of each epoch but
the last, each worker sends the server an epoch mark (``EPOCH_MARK_LAYER``) after everything it
sent in that epoch, on the same channel, so it arrives after them; the server's serving loop
reads the model between two deliveries when the last worker's mark arrives. With a synchronous
server (``GradientPSServer``, ``EASGDServer``) that is exactly the model after epoch e; an
asynchronous one may also hold updates that faster workers sent in epoch e+1. In-process and on
daemons alike; the snapshot is evaluated off the server's thread (in-process, after the run; on
daemons, by the submitter, which the PS daemon sends it to). The last epoch's is the end-of-job
model, so its figures are ``server_accuracy`` and ``server_loss`` of ``summary.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from psgd.net.channel import Package
from psgd.train.sync import CodecSet

if TYPE_CHECKING:
    from psgd.train.prepare import PreparedJob

__all__ = [
    "EpochMarks",
    "ServerEpochs",
    "keeps_model",
    "marks_epochs",
    "server_row",
    "server_weights",
]

_log = logging.getLogger(__name__)

Snapshot = Callable[[int, list[np.ndarray]], None]


def keeps_model(classes: Sequence[type] | None) -> bool:
    """True when every layer's server codec class defines ``current_weights()``."""
    return bool(classes) and all(
        callable(getattr(cls, "current_weights", None)) for cls in classes or ()
    )


def marks_epochs(codec_classes: Sequence[type], ps_classes: Sequence[type] | None) -> bool:
    """Whether the workers mark their epochs: an epoch job whose server keeps the model."""
    rounds = any(getattr(cls, "waits_for_model", False) for cls in codec_classes)
    return keeps_model(ps_classes) and not rounds


def server_weights(codecs: CodecSet) -> list[np.ndarray] | None:
    """Each layer's ``current_weights()`` (copies, read together), or None when some codec
    keeps no model. Safe while another thread serves: no codec method runs during the read."""
    weights: list[Any] = []
    with codecs.paused():
        for codec in codecs.codecs:
            get = getattr(codec, "current_weights", None)
            value = get() if callable(get) else None
            if not isinstance(value, np.ndarray):
                return None
            weights.append(np.array(value, copy=True))
    return weights


class EpochMarks:
    """The server's ``serve(..., on_mark=)``: counts the workers' epoch marks and, when the last
    worker's mark of an epoch arrives, gives ``snapshot(epoch, weights)`` the server's model.

    Runs on the serving thread. A mark that is not an epoch before the last, from a worker,
    seen once, is logged and dropped; a codec failing in ``current_weights()`` too (the
    end-of-job read fails the job if it fails again).
    """

    def __init__(self, codecs: CodecSet, workers: int, epochs: int, snapshot: Snapshot) -> None:
        self.codecs = codecs
        self.workers = workers
        self.epochs = epochs
        self.snapshot = snapshot
        self._seen: dict[int, set[int]] = {}

    def __call__(self, package: Package) -> None:
        epoch, sender = package.content, package.sender
        valid = type(epoch) is int and 0 < epoch < self.epochs and 0 <= sender < self.workers
        seen = self._seen.setdefault(epoch, set()) if valid else set()
        if not valid or sender in seen:
            _log.warning("node %s: dropped an epoch mark %r from node %s", self.codecs.node_id,
                         epoch, sender)  # fmt: skip
            return
        seen.add(sender)
        if len(seen) < self.workers:
            return
        try:
            weights = server_weights(self.codecs)
        except Exception as exc:
            _log.warning("node %s: server model at epoch %s not read: %s: %s",
                         self.codecs.node_id, epoch, type(exc).__name__, exc)  # fmt: skip
            return
        if weights is not None:
            self.snapshot(epoch, weights)


class ServerEpochs:
    """The server model's test figures per epoch: the rows of ``server_eval.csv``.

    ``hold`` keeps a snapshot to evaluate later (in-process: evaluating on the server's thread
    would hold up the workers); ``evaluate`` evaluates one at once (the submitter). A snapshot
    that does not fit the model (a daemon's malformed message) is logged and dropped.
    """

    def __init__(self, job: PreparedJob) -> None:
        self.job = job
        self.rows: list[dict[str, Any]] = []
        self._held: list[tuple[int, float, list[np.ndarray]]] = []
        self._start = time.perf_counter()
        self._model: Any = None

    @classmethod
    def for_job(cls, job: PreparedJob) -> ServerEpochs | None:
        """A tracker when the job's workers mark their epochs (``marks_epochs``), else None."""
        return cls(job) if job.trainer_config.mark_epochs else None

    def hold(self, epoch: int, weights: list[np.ndarray]) -> None:
        self._held.append((epoch, time.perf_counter() - self._start, weights))

    def evaluate_held(self) -> None:
        for epoch, wall_s, weights in self._held:
            self.evaluate(epoch, weights, wall_s)
        self._held.clear()

    def received(self, epoch: Any, content: Any) -> None:
        """A PS daemon's SERVER_MODEL: ``content`` should be ``{"weights": [arrays]}``."""
        self.evaluate(epoch, content.get("weights") if isinstance(content, dict) else None)

    def evaluate(self, epoch: Any, weights: Any, wall_s: float | None = None) -> None:
        """Evaluate ``weights`` as the server model at ``epoch``; a bad snapshot is dropped."""
        if type(epoch) is not int or not 0 < epoch < self.job.spec.epochs:
            _log.warning("server model for epoch %r: not an epoch before the last, dropped", epoch)
            return
        if any(row["epoch"] == epoch for row in self.rows):
            _log.warning("server model at epoch %s: a second snapshot, dropped", epoch)
            return
        if self._model is None:
            self._model = self.job.build_model()
        model = self._model
        try:
            expected = [(w.shape, w.dtype) for w in model.get_weights()]
            got = [(w.shape, w.dtype) for w in weights] if isinstance(weights, list) else None
            if got != expected:
                raise ValueError(f"expected arrays {expected}, got {got}")
            model.set_weights(weights)
            loss, accuracy = model.evaluate(self.job.dataset.x_test, self.job.dataset.y_test)
        except Exception as exc:
            _log.warning("server model at epoch %s: dropped (%s: %s)", epoch,
                         type(exc).__name__, exc)  # fmt: skip
            return
        wall = time.perf_counter() - self._start if wall_s is None else wall_s
        self.rows.append(server_row(epoch, float(loss), float(accuracy), wall))
        self.rows.sort(key=lambda row: row["epoch"])


def server_row(epoch: int, loss: float, accuracy: float, wall_s: float) -> dict[str, Any]:
    """One row of ``server_eval.csv``: ``wall_s`` is the time since the job started."""
    return {
        "epoch": epoch,
        "test_loss": round(float(loss), 6),
        "test_accuracy": round(float(accuracy), 6),
        "wall_s": round(float(wall_s), 4),
    }
