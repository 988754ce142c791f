"""The training loop one worker node runs, in-process or inside a worker daemon.

Per batch the node computes, for each block it holds, the gradient on that block's next
mini-batch and the optimizer's step; it hands each layer codec a ``BlockWeight`` per block
(the step itself in ``delta`` mode, the stepped weights in ``params`` mode), lets the sync
driver exchange, and applies each layer's merged result: ``w -= result`` for deltas,
``w = result`` for parameters, ``w = w_initial + result`` for ``accumulate`` (Parallel-SGD's
gradient averaging: the step is sent, the server returns the sum of what it applied). Over a
channel with emulated links (``virtual_now``, see ``psgd.train.vclock``) the records carry the
node's virtual time beside the real one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from psgd.algorithms.attacks import Attack
from psgd.codec import BlockWeight, Codec, Parameter_Server
from psgd.errors import Diverged
from psgd.net.channel import Channel, JobAborted
from psgd.nn import Learner, make_optimizer
from psgd.results.outcome import NodeReport
from psgd.train.sync import EPOCH_MARK_LAYER, CodecSet, make_driver, serve

__all__ = ["BlockSampler", "Trainer", "exchange_modes", "steps_per_epoch"]

Emit = Callable[[dict[str, Any]], None]


def exchange_modes(classes: Sequence[type[Codec]], requested: str) -> list[str]:
    """What flows through each layer's codec: ``delta``, ``params`` or ``accumulate``.

    ``requested`` "auto" takes each codec class's ``exchange`` attribute (default "delta").
    """
    if requested != "auto":
        return [requested] * len(classes)
    return [getattr(cls, "exchange", "delta") for cls in classes]


def per_block_batch(batch_size: int, blocks_held: int) -> int:
    """Samples per block per step: the node's batch split evenly over the blocks it holds."""
    return max(1, batch_size // max(1, blocks_held))


def steps_per_epoch(block_sizes: Sequence[int], block_batch: int) -> int:
    """Steps in one epoch: enough for the largest block to be seen once."""
    return max(1, math.ceil(max(block_sizes) / block_batch))


class BlockSampler:
    """Mini-batches of one block, identical on every node holding it.

    Epoch ``e`` walks a permutation drawn from ``(seed, block, e)`` cyclically, so a batch
    depends only on (seed, block, epoch, step): nothing to save for a checkpoint, and a
    resumed job draws exactly the batches the uninterrupted one would have.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int, seed: int, block: int) -> None:
        self.x, self.y, self.batch, self.seed, self.block = x, y, batch, seed, block
        self._epoch = -1
        self._order = np.arange(len(x))
        self._x_buffer = np.empty((batch, *x.shape[1:]), dtype=x.dtype)
        self._y_buffer = np.empty((batch, *y.shape[1:]), dtype=y.dtype)

    def batch_of(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``step`` of ``epoch`` (views of reused buffers: valid until the next call)."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.block, epoch])
            self._order, self._epoch = rng.permutation(len(self.x)), epoch
        start = step * self.batch
        index = self._order.take(np.arange(start, start + self.batch), mode="wrap")
        np.take(self.x, index, axis=0, out=self._x_buffer)
        np.take(self.y, index, axis=0, out=self._y_buffer)
        return self._x_buffer, self._y_buffer


@dataclass
class TrainerConfig:
    """The part of a job a node's training loop needs."""

    epochs: int
    batch_size: int
    learn_rate: float
    optimizer: str
    sync: str
    exchange: str
    timeout_s: float
    seed: int
    steps_per_epoch: int
    progress_every: int = 0
    checkpoint_every: int = 0
    #: Tell the parameter server the end of each epoch but the last (its model is evaluated
    #: then: ``psgd.train.server_model``).
    mark_epochs: bool = False


class Trainer:
    """One worker node's training loop, over any ``Channel``.

    Parameters
    ----------
    node_id:
        This worker's id.
    model:
        The node's model (already holding the job's initial weights).
    blocks:
        ``{block_id: (x, y)}``: the training data of every block this node holds.
    test:
        ``(x, y)`` evaluated after each epoch.
    codec_classes:
        One codec class per trainable variable of ``model``.
    channel:
        Where packages go and come from.
    emit:
        Receives progress events (dicts with a ``type`` key).
    aborted:
        Returns True once the job is stopped from outside; checked before every batch.
    attack:
        An update attack this node simulates (what it sends is tampered with), or None.
    on_checkpoint:
        Receives the node's state every ``config.checkpoint_every`` epochs.
    """

    def __init__(
        self,
        node_id: int,
        model: Learner,
        blocks: dict[int, tuple[np.ndarray, np.ndarray]],
        test: tuple[np.ndarray, np.ndarray],
        codec_classes: Sequence[type[Codec]],
        channel: Channel,
        config: TrainerConfig,
        emit: Emit | None = None,
        aborted: Callable[[], bool] | None = None,
        attack: Attack | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.model = model
        self.variables = model.variables
        self.test = test
        self.config = config
        self.emit = emit or (lambda event: None)
        self.aborted = aborted or (lambda: False)
        self.channel = channel
        self.codecs = CodecSet(node_id, codec_classes, channel, [v.value for v in self.variables])
        self.attack = attack
        self.on_checkpoint = on_checkpoint or (lambda state: None)
        self._attack_rng = np.random.default_rng([config.seed, node_id, 7])
        self.modes = exchange_modes(codec_classes, config.exchange)
        #: The job's initial weights, for ``accumulate`` layers (``w = w_initial + result``).
        self.initial: list[Any] = [
            v.value.copy() if mode == "accumulate" else None
            for v, mode in zip(self.variables, self.modes, strict=True)
        ]
        self.driver = make_driver(config.sync, self.codecs, config.timeout_s)
        batch = per_block_batch(config.batch_size, len(blocks))
        self.block_ids = sorted(blocks)
        self.samplers = {b: BlockSampler(*blocks[b], batch, config.seed, b) for b in self.block_ids}
        self.first_epoch = 1
        self._epoch_start = time.perf_counter()
        self._bytes_offset = 0
        self.optimizers = [
            {b: make_optimizer(config.optimizer, config.learn_rate) for b in self.block_ids}
            for _ in self.variables
        ]
        self.report = NodeReport(node_id)
        self._virtual_now: Callable[[], float | None] = getattr(
            channel, "virtual_now", lambda: None
        )

    def train(self) -> NodeReport:
        """Run every epoch (from ``first_epoch`` after ``restore``); returns the report."""
        every = self.config.checkpoint_every
        for epoch in range(self.first_epoch, self.config.epochs + 1):
            self._epoch_start = time.perf_counter()
            virtual_start = self._virtual_now()
            for step in range(self.config.steps_per_epoch):
                loss = self._step(epoch, step)
                self._record_batch(epoch, step, loss)
            owed = self.driver.flush(epoch * self.config.steps_per_epoch - 1)
            if owed is not None:  # double buffering: the epoch's last result, before evaluating
                for layer, variable in enumerate(self.variables):
                    self._apply(layer, variable.value, owed[layer], [])
            self.report.train_s += time.perf_counter() - self._epoch_start
            virtual_end = self._virtual_now()
            if virtual_start is not None and virtual_end is not None:
                spent = virtual_end - virtual_start
                self.report.virtual_train_s = (self.report.virtual_train_s or 0.0) + spent
            if self.config.mark_epochs and epoch < self.config.epochs:
                self._mark_epoch(epoch)
            self._evaluate(epoch)
            if every and epoch % every == 0 and epoch < self.config.epochs:
                self.on_checkpoint(self.checkpoint(epoch))
        return self.report

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        """The node's state after ``epoch`` (see ``psgd.train.checkpoint``)."""
        report = self.report
        get_state = getattr(self.model, "get_state", None)
        return {
            "epoch": epoch,
            "weights": self.model.get_weights(),
            "state": list(get_state()) if callable(get_state) else [],
            "optimizers": [
                [layer[b].get_state() for b in self.block_ids] for layer in self.optimizers
            ],
            "report": {
                "samples": report.samples, "train_s": report.train_s, "batches": report.batches,
                "loss": report.loss, "accuracy": report.accuracy,
                "batch_rows": report.batch_rows, "epoch_rows": report.epoch_rows,
            },
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimizer states, progress and records."""
        self.model.set_weights(list(state["weights"]))
        set_state = getattr(self.model, "set_state", None)
        if state.get("state") and callable(set_state):
            set_state(list(state["state"]))
        for layer, blocks in zip(self.optimizers, state["optimizers"], strict=True):
            for block_id, block_state in zip(self.block_ids, blocks, strict=True):
                layer[block_id].set_state(list(block_state))
        saved = state["report"]
        report = self.report
        report.samples, report.train_s = int(saved["samples"]), float(saved["train_s"])
        report.batches = int(saved["batches"])
        report.loss, report.accuracy = float(saved["loss"]), float(saved["accuracy"])
        report.batch_rows, report.epoch_rows = list(saved["batch_rows"]), list(saved["epoch_rows"])
        self.first_epoch = int(state["epoch"]) + 1
        last = report.batch_rows[-1] if report.batch_rows else {}
        self._bytes_offset = int(last.get("bytes_sent", 0))
        report.bytes_sent = self._bytes_offset

    @property
    def _bytes_sent(self) -> int:
        """Bytes this node sent in the whole job, checkpointed part included."""
        return self._bytes_offset + self.channel.bytes_sent

    def _step(self, epoch: int, step: int) -> float:
        if self.aborted():
            raise JobAborted(f"node {self.node_id}: job aborted in epoch {epoch} batch {step}")
        batch_no = (epoch - 1) * self.config.steps_per_epoch + step
        contents: list[list[BlockWeight]] = [[] for _ in self.variables]
        loss = 0.0
        for block_id in self.block_ids:
            x, y = self.samplers[block_id].batch_of(epoch, step)
            loss += self.model.loss_and_grads(x, y)
            self.report.samples += len(x)
            for layer, variable in enumerate(self.variables):
                delta = self.optimizers[layer][block_id].delta(variable.grad)
                if self.attack is not None:
                    delta = self.attack.tamper(delta, self._attack_rng)
                if self.modes[layer] == "params":
                    np.subtract(variable.value, delta, out=delta)
                contents[layer].append(BlockWeight(delta, block_id))
        where = f"epoch {epoch} batch {step} (round {batch_no})"
        if not math.isfinite(loss):
            raise Diverged(f"node {self.node_id} diverged: the training loss is {loss} in {where}")
        results = self.driver.exchange(batch_no, contents)
        for layer, variable in enumerate(self.variables):
            self._apply(layer, variable.value, results[layer], contents[layer])
            if not np.isfinite(variable.value).all():
                raise Diverged(
                    f"node {self.node_id} diverged: layer {layer}'s weights became non-finite "
                    f"(nan or inf) after the exchange of {where}"
                )
        return loss / len(self.block_ids)

    def _apply(self, layer: int, value: np.ndarray, result: Any, own: list[BlockWeight]) -> None:
        mode = self.modes[layer]
        if mode == "delta" or (mode == "accumulate" and result is None):
            if result is not None:
                value -= result
            elif mode == "accumulate" and own:  # ASGD, no reply yet: keep the local step
                value -= own[0].content if len(own) == 1 else sum(b.content for b in own) / len(own)
            return
        if mode == "accumulate":
            np.add(self.initial[layer], result, out=value, casting="same_kind")
            return
        if result is None:  # ASGD without a server reply yet: keep the local step
            result = own[0].content if len(own) == 1 else np.mean([b.content for b in own], axis=0)
        np.copyto(value, result, casting="same_kind")

    def _record_batch(self, epoch: int, step: int, loss: float) -> None:
        report = self.report
        report.batches += 1
        sent_before = report.bytes_sent
        report.bytes_sent = self._bytes_sent
        report.batch_rows.append(
            {
                "epoch": epoch,
                "batch": step,
                "loss": round(loss, 6),
                "bytes_round": report.bytes_sent - sent_before,
                "bytes_sent": report.bytes_sent,
                "time_s": round(report.train_s + time.perf_counter() - self._epoch_start, 4),
            }
        )
        virtual = self._virtual_now()
        if virtual is not None:
            report.batch_rows[-1]["virtual_s"] = round(virtual, 4)
        every = self.config.progress_every
        if every and (step + 1) % every == 0:
            self.emit(
                {
                    "type": "progress",
                    "node": self.node_id,
                    "epoch": epoch,
                    "batch": step + 1,
                    "batches": self.config.steps_per_epoch,
                    "loss": loss,
                    "bytes_sent": report.bytes_sent,
                }
            )

    def _mark_epoch(self, epoch: int) -> None:
        """Tell the server this node finished ``epoch`` (after all it sent in it; not counted
        in ``bytes_sent``: it is psgd's bookkeeping, not the algorithm's traffic)."""
        sent = self.channel.send([Parameter_Server], [(EPOCH_MARK_LAYER, epoch)])
        self._bytes_offset -= sent

    def _evaluate(self, epoch: int) -> None:
        loss, accuracy = self.model.evaluate(*self.test)
        self.report.loss, self.report.accuracy = float(loss), float(accuracy)
        row = {
            "epoch": epoch,
            "test_loss": round(float(loss), 6),
            "test_accuracy": round(float(accuracy), 6),
            "train_s": round(self.report.train_s, 4),
            "bytes_sent": self._bytes_sent,
        }
        virtual = self._virtual_now()
        if virtual is not None:  # evaluation included: the node's next message waits for it
            self.report.virtual_s = virtual
            row["virtual_train_s"] = round(self.report.virtual_train_s or 0.0, 4)
            row["virtual_s"] = round(virtual, 4)
        self.report.epoch_rows.append(row)
        self.emit({"type": "epoch", "node": self.node_id, **row})

    def drain(self, stop: Any) -> None:
        """Keep feeding packages to the codecs until ``stop`` (an Event) is set."""
        if self.driver.name != "asgd":
            serve(self.codecs, stop)
        else:
            stop.wait()

    def close(self) -> NodeReport:
        """Stop the driver, dispose the codecs, finish the report."""
        try:
            self.driver.close()
        finally:
            self.codecs.dispose()
        self.report.retries = self.driver.retries
        self.report.bytes_sent = self._bytes_sent
        self.report.packages_sent = self.codecs.packages_sent
        return self.report
