"""SSGD and ASGD drivers: between a node's trainer, its layer codecs and its channel.

SSGD: after each batch the node waits until every layer codec ``is_done()``, feeding arriving
packages to ``receive_blocks``; on timeout it calls ``do_something_to_save_yourself()`` once,
sends what that returns, waits once more, then fails naming node, layer and batch.
ASGD: packages are fed to ``receive_blocks`` on a receiver thread as they arrive; the trainer
never blocks and takes a layer's result only when there is one.
Double buffering (Parallel-SGD's ``DoubleBufferingOptimizer``): SSGD with each batch's result
applied one batch late, so communication overlaps the next batch's computation.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from psgd.codec import BlockWeight, Codec, collect_packages
from psgd.errors import CodecError, PsgdError, SyncTimeout
from psgd.net.channel import Channel, JobAborted, Package

__all__ = [
    "ASGD",
    "SSGD",
    "SYNC_MODES",
    "CodecSet",
    "EPOCH_MARK_LAYER",
    "DoubleBuffer",
    "build_codecs",
    "make_driver",
    "serve",
]

_log = logging.getLogger(__name__)

#: How often a serving loop wakes to check whether it should stop.
SERVE_POLL_S = 0.05
#: The layer of a worker's epoch mark to the server: its content is the epoch it finished
#: (``psgd.train.server_model``); ``serve`` hands marks to its ``on_mark``, never to a codec.
EPOCH_MARK_LAYER = -1


class CodecSet:
    """One node's codec instances, one per layer, each called by one thread at a time.

    Every call's return value is checked and what it asks for is sent through ``channel``.
    A codec that raises, or returns something else than packages, becomes a ``CodecError``
    naming the node, the layer, the class and the method, with the original traceback.
    A codec that defines ``initial_weights(value)`` is given its layer's initial value (the
    job's initial model) before anything else; it may return packages like the other calls.
    """

    def __init__(
        self,
        node_id: int,
        classes: Sequence[type[Codec]],
        channel: Channel,
        initial: Sequence[Any] | None = None,
    ) -> None:
        self.node_id = node_id
        self.channel = channel
        self.codecs: list[Codec] = build_codecs(node_id, classes)
        self._locks = [threading.Lock() for _ in self.codecs]
        self._batch = threading.local()
        self.packages_sent = 0
        if initial is not None:
            for layer, codec in enumerate(self.codecs):
                if callable(getattr(codec, "initial_weights", None)):
                    self.call(layer, "initial_weights", np.array(initial[layer], copy=True))

    @classmethod
    def around(cls, node_id: int, codecs: list[Codec], channel: Channel) -> CodecSet:
        """A set over codec instances that already exist (a virtual client's, between runs)."""
        self = cls.__new__(cls)
        self.node_id, self.channel, self.codecs = node_id, channel, codecs
        self._locks = [threading.Lock() for _ in codecs]
        self._batch = threading.local()
        self.packages_sent = 0
        return self

    def __len__(self) -> int:
        return len(self.codecs)

    def call(self, layer: int, method: str, *args: Any) -> None:
        """Call ``method`` of layer ``layer``'s codec and send the packages it returns."""
        codec = self.codecs[layer]
        with self._locks[layer]:
            try:
                returned = getattr(codec, method)(*args)
            except (CodecError, JobAborted):
                raise
            except Exception as exc:
                raise self.failure(layer, method, exc) from exc
            if returned is not None:
                self.send_returned(layer, method, returned)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every layer's lock: no codec method runs in the block (a consistent read)."""
        with ExitStack() as stack:
            for lock in self._locks:
                stack.enter_context(lock)
            yield

    def failure(self, layer: int, method: str, exc: BaseException) -> CodecError:
        """The error for layer ``layer``'s codec raising ``exc`` in ``method``."""
        return CodecError(
            f"node {self.node_id} layer {layer}: {type(self.codecs[layer]).__name__}.{method} "
            f"raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        )

    def send_returned(self, layer: int, method: str, returned: Any) -> None:
        """Check what a codec method returned and send its packages (batched if in a block)."""
        codec = self.codecs[layer]
        try:
            packages = collect_packages(codec, method, returned)
        except CodecError:
            raise
        except Exception as exc:  # a generator the codec returned raised while iterated
            raise self.failure(layer, method, exc) from exc
        batch = getattr(self._batch, "items", None)
        for package in packages:
            targets = package.target()
            if not targets:
                continue
            if batch is None:
                self.channel.send(targets, [(layer, package.content)])
            else:
                for target in targets:
                    batch.setdefault(target, []).append((layer, package.content))
            package._mark_sent()
            self.packages_sent += len(targets)

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Hold what the codecs send in this block, then send one message per target.

        One message per step instead of one per layer halves the exchange cost (fewer
        wake-ups of the I/O threads on both sides). Per thread: the ASGD receiver is unaffected.
        """
        if getattr(self._batch, "items", None) is not None:
            yield
            return
        self._batch.items = {}
        try:
            yield
            held: dict[int, list[tuple[int, Any]]] = self._batch.items
        finally:
            self._batch.items = None
        by_content: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for target, items in held.items():  # targets sent the same items share one encoding
            key = tuple((layer, id(content)) for layer, content in items)
            by_content.setdefault(key, []).append(target)
        for targets in by_content.values():
            self.channel.send(targets, held[targets[0]])

    def deliver(self, package: Package) -> None:
        """Hand a received package to its layer's ``receive_blocks``; drop a bad layer index."""
        if not isinstance(package.layer, int) or not 0 <= package.layer < len(self.codecs):
            _log.warning(
                "node %s: dropped package from %s for unknown layer %r",
                self.node_id,
                package.sender,
                package.layer,
            )
            return
        self.call(package.layer, "receive_blocks", package.content)

    def dispose(self) -> None:
        for layer, codec in enumerate(self.codecs):
            try:
                codec.dispose()
            except Exception:
                _log.exception("node %s layer %s: dispose() raised", self.node_id, layer)


def build_codecs(node_id: int, classes: Sequence[type[Codec]]) -> list[Codec]:
    """One instance of each layer's codec class for ``node_id``; a failure names the layer."""
    codecs = []
    for layer, cls in enumerate(classes):
        try:
            codecs.append(cls(node_id))
        except Exception as exc:
            raise CodecError(
                f"node {node_id} layer {layer}: {cls.__name__}.__init__ raised "
                f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            ) from exc
    return codecs


class SSGD:
    """Synchronous exchange: block until every layer has its result (bounded wait)."""

    name = "ssgd"

    def __init__(self, codecs: CodecSet, timeout_s: float) -> None:
        self.codecs = codecs
        self.timeout_s = timeout_s
        self.retries = 0

    def exchange(self, batch: int, blocks: Sequence[Sequence[BlockWeight]]) -> list[Any]:
        """Give each layer codec its blocks, wait for every result, return them by layer."""
        with self.codecs.batched():
            for layer, layer_blocks in enumerate(blocks):
                for block_weight in layer_blocks:
                    self.codecs.call(layer, "update_blocks", block_weight)
        self._wait(batch)
        return [codec.get_result() for codec in self.codecs.codecs]

    def _wait(self, batch: int) -> None:
        codecs = self.codecs.codecs
        pending = [layer for layer, codec in enumerate(codecs) if not codec.is_done()]
        deadline = time.monotonic() + self.timeout_s
        retried = False
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if retried:
                    raise SyncTimeout(
                        f"node {self.codecs.node_id}: layer {pending[0]} batch {batch}: no result "
                        f"within {self.timeout_s:g}s, even after do_something_to_save_yourself() "
                        f"(layers still waiting: {pending})"
                    )
                retried = True
                self.retries += 1
                _log.warning(
                    "node %s batch %s: layers %s timed out; asking the codecs to save themselves",
                    self.codecs.node_id,
                    batch,
                    pending,
                )
                for layer in pending:
                    self.codecs.call(layer, "do_something_to_save_yourself")
                deadline = time.monotonic() + self.timeout_s
            else:
                package = self.codecs.channel.recv(remaining)
                if package is not None:
                    self.codecs.deliver(package)
            pending = [layer for layer in pending if not codecs[layer].is_done()]

    def flush(self, batch: int) -> list[Any] | None:
        """Results still owed to the trainer (none: SSGD returns each batch's own)."""
        return None

    def close(self) -> None:
        return None


class DoubleBuffer(SSGD):
    """Parallel-SGD's double buffering: a batch's merged result is applied one batch late.

    Step k hands the codecs batch k's blocks and returns batch k-1's results (waiting for them
    as SSGD does), so the exchange of batch k-1 overlaps the computation of batch k; the
    gradient of batch k is computed on weights without batch k-1's update (one batch stale).
    ``flush`` takes the last batch's results (the trainer calls it at the end of each epoch,
    so every evaluation sees every update).
    """

    name = "double_buffer"

    def __init__(self, codecs: CodecSet, timeout_s: float) -> None:
        super().__init__(codecs, timeout_s)
        self._owed: int | None = None  # the batch whose results are still owed

    def exchange(self, batch: int, blocks: Sequence[Sequence[BlockWeight]]) -> list[Any]:
        """Return the previous batch's results (None by layer for the first), send this one."""
        previous = self.flush(batch - 1)
        with self.codecs.batched():
            for layer, layer_blocks in enumerate(blocks):
                for block_weight in layer_blocks:
                    # A copy: the trainer reuses its step buffers for the next batch while the
                    # codecs may still hold this batch's content.
                    own = BlockWeight(np.array(block_weight.content), block_weight.block_id)
                    self.codecs.call(layer, "update_blocks", own)
        self._owed = batch
        return previous if previous is not None else [None] * len(self.codecs)

    def flush(self, batch: int) -> list[Any] | None:
        if self._owed is None:
            return None
        owed, self._owed = self._owed, None
        self._wait(owed)
        return [codec.get_result() for codec in self.codecs.codecs]


class ASGD:
    """Asynchronous exchange: a receiver thread feeds codecs; the trainer never waits."""

    name = "asgd"

    def __init__(self, codecs: CodecSet, timeout_s: float) -> None:
        self.codecs = codecs
        self.timeout_s = timeout_s
        self.retries = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._receive_loop, name=f"psgd-asgd-recv-{codecs.node_id}", daemon=True
        )
        self._thread.start()

    def _receive_loop(self) -> None:
        try:
            serve(self.codecs, self._stop)
        except BaseException as exc:  # handed to the trainer thread on its next exchange
            self._error = exc

    def exchange(self, batch: int, blocks: Sequence[Sequence[BlockWeight]]) -> list[Any]:
        """Give each layer codec its blocks; return each layer's result or None."""
        if self._error is not None:
            raise self._error
        with self.codecs.batched():
            for layer, layer_blocks in enumerate(blocks):
                for block_weight in layer_blocks:
                    self.codecs.call(layer, "update_blocks", block_weight)
        return [codec.get_result() if codec.is_done() else None for codec in self.codecs.codecs]

    def flush(self, batch: int) -> list[Any] | None:
        """Nothing is owed: ASGD applies results as they come."""
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None and not isinstance(self._error, JobAborted):
            raise self._error


def serve(
    codecs: CodecSet, stop: threading.Event, on_mark: Callable[[Package], None] | None = None
) -> None:
    """Deliver packages to ``codecs`` until ``stop`` is set (a parameter server's whole life),
    then those already waiting: an asynchronous worker's last steps may still be queued when
    it finishes, and a server that dropped them would not hold the model the workers trained.

    Epoch marks (``EPOCH_MARK_LAYER``) go to ``on_mark``, between two deliveries.
    """
    while True:
        stopping = stop.is_set()
        package = codecs.channel.recv(0 if stopping else SERVE_POLL_S)
        if package is None:
            if stopping:
                return
            continue
        with codecs.batched():  # replies to what is already here go out together
            while package is not None:
                if package.layer == EPOCH_MARK_LAYER and on_mark is not None:
                    on_mark(package)
                else:
                    codecs.deliver(package)
                package = codecs.channel.recv(0)


SYNC_MODES: dict[str, type[SSGD] | type[ASGD]] = {
    "ssgd": SSGD,
    "asgd": ASGD,
    "double_buffer": DoubleBuffer,
}


def make_driver(mode: str, codecs: CodecSet, timeout_s: float) -> SSGD | ASGD:
    """The sync driver named ``mode`` ("ssgd", "asgd" or "double_buffer")."""
    try:
        driver = SYNC_MODES[mode]
    except KeyError:
        raise PsgdError(
            f"unknown sync mode {mode!r}; expected one of {sorted(SYNC_MODES)}"
        ) from None
    return driver(codecs, timeout_s)
