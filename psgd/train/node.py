"""A virtual client: the node's persistent state, and running it until it waits again.

A ``ClientState`` is what survives between a client's rounds: its codec instances (their
result buffers hold the model it was sent), how many local steps it has trained (which
drives its mini-batch order), the learner's personal state (FedEM's mixture weights) and, when
its codec says ``keeps_optimizer_state``, its local optimizers' state.
Model, optimizers and batch buffers belong to the ``ClientRunner`` of an executor and are
reused for whichever client it runs next, so a client costs only its state while it waits.

``ClientRunner.run`` is the trainer's SSGD loop turned inside out: while every layer codec
holds a result, take the results (the weights, ``params`` exchange), train one batch, hand
each layer codec its ``BlockWeight``; when a codec has no result after that, the client is
parked and its state goes back to the scheduler with the packages it sent, encoded with the
real wire format.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psgd.codec import BlockWeight, Codec
from psgd.errors import CodecError
from psgd.net import protocol, wire
from psgd.net.channel import Package
from psgd.nn import Learner, Optimizer, make_optimizer
from psgd.train.evaluation import evaluate_chunks
from psgd.train.sync import CodecSet

__all__ = ["ClientRunner", "ClientState", "EvalOutcome", "EvalTask", "RunOutcome", "drops_out"]

#: A client that trains this many of its local epochs in one run without waiting for a model
#: is a codec that never parks: the job fails instead of training forever.
MAX_LOCAL_EPOCHS_PER_RUN = 1000


@dataclass
class ClientState:
    """What persists of a virtual client between its rounds."""

    node_id: int
    codecs: list[Codec]
    steps: int = 0
    personal: list[np.ndarray] | None = None
    #: The local optimizers, kept between rounds when a codec says ``keeps_optimizer_state``.
    optimizers: list[Optimizer] | None = None


@dataclass
class RunOutcome:
    """What one run of a client produced; travels back from the executor to the scheduler."""

    state: ClientState
    round_no: int
    messages: list[tuple[list[int], Any]] = field(default_factory=list)  # frames or shared
    steps: int = 0
    samples: int = 0
    loss_sum: float = 0.0
    bytes_sent: int = 0
    train_s: float = 0.0
    batch_losses: list[float] = field(default_factory=list)
    error: str | None = None
    #: The client dropped out of this round (``--dropout``): it trained and sent nothing.
    dropped: bool = False
    #: CPU seconds the run took (its thread's), for emulated device speeds.
    cpu_s: float = 0.0


@dataclass
class EvalTask:
    """Evaluate ``weights`` (with the initial personal state) on test rows ``start..stop``."""

    round_no: int
    weights: list[np.ndarray]
    start: int
    stop: int


@dataclass
class EvalOutcome:
    """What an ``EvalTask`` gave: each chunk's ``(mean loss, correct)`` (``evaluate_chunks``)."""

    round_no: int
    start: int
    parts: list[tuple[float, int]] = field(default_factory=list)
    error: str | None = None


class _Outbox:
    """The channel a running client sends through: encodes now (real bytes), routes later."""

    def __init__(self, node_id: int, job_id: str) -> None:
        self.node_id = node_id
        self.job_id = job_id
        self.bytes_sent = 0
        self.messages: list[tuple[list[int], list[bytes]]] = []

    def send(self, targets: list[int], items: Any) -> int:
        frames = [bytes(f) for f in protocol.make_packages(self.job_id, self.node_id, items)]
        size = wire.frames_size(frames) * len(targets)
        self.messages.append((list(targets), frames))
        self.bytes_sent += size
        return size

    def recv(self, timeout_s: float) -> None:
        raise CodecError(f"node {self.node_id}: a virtual client never waits inside a run")


class ClientRunner:
    """Runs virtual clients in one executor: one scratch model, reused for every client.

    Parameters
    ----------
    model:
        The executor's learner; its weights are replaced by each client's model.
    x_train, y_train:
        The whole training set (shared, never copied); clients hold index arrays into it.
    client_indices:
        ``client_indices[node]``: the rows of node ``node``'s training data (a list over all
        clients, or a mapping over the clients this runner may be given).
    batch_size, optimizer, learn_rate, seed, job_id:
        The job's settings.
    record_batches:
        Keep each batch's loss in the outcome (``--batch-records``).
    test:
        The test set (shared, never copied), for ``EvalTask``s.
    dropout:
        Probability that a client drops out of a round it was sent a model for
        (``drops_out``): it lets the model go and trains nothing.
    """

    def __init__(
        self,
        model: Learner,
        x_train: np.ndarray,
        y_train: np.ndarray,
        client_indices: Sequence[np.ndarray] | Mapping[int, np.ndarray],
        batch_size: int,
        optimizer: str,
        learn_rate: float,
        seed: int,
        job_id: str,
        record_batches: bool = False,
        test: tuple[np.ndarray, np.ndarray] | None = None,
        dropout: float = 0.0,
    ) -> None:
        self.model = model
        self.variables = model.variables
        self.x_train, self.y_train = x_train, y_train
        self.client_indices = client_indices
        self.batch_size = batch_size
        self.optimizer, self.learn_rate = optimizer, learn_rate
        self.seed, self.job_id = seed, job_id
        self.record_batches = record_batches
        self._x = np.empty((batch_size, x_train.shape[1]), dtype=x_train.dtype)
        self._y = np.empty(batch_size, dtype=y_train.dtype)
        self._initial_personal = _personal_state(model)
        self.test = test
        self.dropout = dropout

    def evaluate(self, task: EvalTask) -> EvalOutcome:
        """Evaluate the global model of ``task`` on its test rows; never raises."""
        outcome = EvalOutcome(task.round_no, task.start)
        try:
            assert self.test is not None, "this runner was given no test set"
            self.model.set_weights(task.weights)
            _load_personal(self.model, self._initial_personal)
            x, y = self.test
            outcome.parts = evaluate_chunks(self.model, x, y, task.start, task.stop)
        except Exception as exc:
            outcome.error = f"evaluation: {type(exc).__name__}: {exc}"
        return outcome

    def run(
        self, state: ClientState, round_no: int, messages: Sequence[Sequence[Any]] | None = None
    ) -> RunOutcome:
        """Deliver ``messages`` (encoded packages sent to the client), then train while the
        client holds a model; never raises for a codec's fault."""
        outcome = RunOutcome(state, round_no)
        outbox = _Outbox(state.node_id, self.job_id)
        codecs = CodecSet.around(state.node_id, state.codecs, outbox)
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            for frames in messages or []:
                message = protocol.parse(list(frames), protocol.PEER_TYPES)
                for item in protocol.split_packages(message, wire.frames_size(frames)):
                    codecs.deliver(Package(*item))
            if self.dropout and drops_out(self.seed, round_no, state.node_id, self.dropout):
                outcome.dropped = True
                for codec in state.codecs:  # it lets the round's model go, trains nothing
                    codec.get_result()
            else:
                self._train_while_holding(state, codecs, outcome)
        except CodecError as exc:
            outcome.error = str(exc)
        except Exception as exc:  # the learner or the data: still this client's failure
            outcome.error = f"node {state.node_id}: {type(exc).__name__}: {exc}"
        outcome.train_s = time.perf_counter() - started
        outcome.cpu_s = time.thread_time() - cpu
        outcome.messages, outcome.bytes_sent = outbox.messages, outbox.bytes_sent
        return outcome

    def _train_while_holding(
        self, state: ClientState, codecs: CodecSet, outcome: RunOutcome
    ) -> None:
        indices = self.client_indices[state.node_id]
        per_epoch = max(1, math.ceil(len(indices) / self.batch_size))
        limit = state.steps + MAX_LOCAL_EPOCHS_PER_RUN * per_epoch
        _load_personal(self.model, state.personal or self._initial_personal)
        optimizers = state.optimizers or [
            make_optimizer(self.optimizer, self.learn_rate) for _ in self.variables
        ]
        batches, order_epoch = indices[None, :0], -1
        while all(codec.is_done() for codec in state.codecs):
            for variable, codec in zip(self.variables, state.codecs, strict=True):
                variable.value = _as_value(codec.get_result(), variable.value)
            if state.steps >= limit:
                raise CodecError(
                    f"node {state.node_id}: trained {MAX_LOCAL_EPOCHS_PER_RUN} local epochs "
                    "without waiting for a model; a round-based client codec must stop "
                    "setting results once it has sent its round's update"
                )
            epoch, step = divmod(state.steps, per_epoch)
            if epoch != order_epoch:  # the epoch's batches: a permutation, wrapped to full ones
                rng = np.random.default_rng([self.seed, state.node_id, epoch])
                order = indices[rng.permutation(len(indices))]
                batches = np.resize(order, per_epoch * self.batch_size).reshape(per_epoch, -1)
                order_epoch = epoch
            rows = batches[step]
            np.take(self.x_train, rows, axis=0, out=self._x)
            np.take(self.y_train, rows, axis=0, out=self._y)
            loss = float(self.model.loss_and_grads(self._x, self._y))
            state.steps += 1
            outcome.steps += 1
            outcome.samples += self.batch_size
            outcome.loss_sum += loss
            if self.record_batches:
                outcome.batch_losses.append(round(loss, 6))
            with codecs.batched():
                for layer, variable in enumerate(self.variables):
                    stepped = optimizers[layer].delta(variable.grad)  # new: codecs may keep it
                    np.subtract(variable.value, stepped, out=stepped)
                    codec = state.codecs[layer]
                    try:  # round jobs give each client one block, numbered by the client
                        returned = codec.update_blocks(BlockWeight(stepped, state.node_id))
                    except Exception as exc:
                        raise codecs.failure(layer, "update_blocks", exc) from exc
                    if returned is not None:
                        codecs.send_returned(layer, "update_blocks", returned)
        state.personal = _personal_state(self.model)
        if any(getattr(codec, "keeps_optimizer_state", False) for codec in state.codecs):
            state.optimizers = optimizers


def drops_out(seed: int, round_no: int, node: int, probability: float) -> bool:
    """Whether client ``node`` drops out of round ``round_no`` (the same draw everywhere)."""
    return bool(np.random.default_rng([seed, round_no, node, 0xD70]).random() < probability)


def _as_value(result: Any, current: np.ndarray) -> np.ndarray:
    """The array to train from: the result itself when it fits (no copy), else a copy.

    The runner never writes into ``variable.value`` (each step's weights are a new array), so
    taking the codec's array as it is is safe even when the codec keeps it or it is read-only.
    """
    if (
        type(result) is np.ndarray
        and result.dtype == current.dtype
        and result.shape == current.shape
    ):
        return result
    return np.array(result, dtype=current.dtype, copy=True).reshape(current.shape)


def _personal_state(model: Learner) -> list[np.ndarray] | None:
    get = getattr(model, "personal_state", None)
    return [np.array(a, copy=True) for a in get()] if callable(get) else None


def _load_personal(model: Learner, personal: list[np.ndarray] | None) -> None:
    load = getattr(model, "load_personal_state", None)
    if callable(load) and personal is not None:
        load(personal)
