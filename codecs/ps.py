"""Parameter-server family: workers send their steps (``--exchange delta``) to a server.

- ``GradientPSClient`` / ``GradientPSServer``: synchronous. When every worker's step of a round
  is in, the server aggregates them (the mean; subclasses override ``aggregate``, see
  ``robust.py``) and sends the result to every worker, which applies it. Every worker therefore
  holds the same weights.
- ``AsyncPSClient`` / ``AsyncPSServer``: asynchronous SGD (ASGD, as in Dean et al. 2012's
  Downpour SGD with one server shard). The server applies each step on arrival to its copy of
  the weights and replies, to that worker only, with its current weights.
- ``AsyncPSClient`` / ``DCASGDServer``: delay-compensated ASGD (Zheng et al. 2017).
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import numpy as np

from psgd import BlockWeight, Codec, ConfigError, GlobalSettings, Parameter_Server, netEncapsulation
from psgd.algorithms.averaging import NodeBatch, dc_asgd_update

#: DC-ASGD's lambda_0 of its constant variant DC-ASGD-c (Zheng et al. 2017, CIFAR-10 setup).
DEFAULT_DC_LAMBDA = 0.04


class GradientPSClient(Codec):
    """Sends its step of each round to the server; the server's aggregate is the result."""

    exchange = "delta"
    params = {}  # reads no --param

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.round = 0
        self.blocks: dict[int, Any] = {}

    def dispose(self) -> None:
        self.blocks.clear()

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation | None:
        self.blocks[block_weight.block_id] = block_weight.content
        held = GlobalSettings.get_default().node_2_block[self.node_id]
        if len(self.blocks) < len(held):
            return None
        step = _mean([self.blocks[b] for b in sorted(self.blocks)])
        self.blocks.clear()
        package = (self.round, self.node_id, step)
        self.round += 1
        return netEncapsulation(Parameter_Server, package)

    def receive_blocks(self, content: tuple[int, Any]) -> None:
        _, aggregate = content
        self.set_result(np.array(aggregate, copy=True))


class GradientPSServer(Codec):
    """Collects one step per worker and round, replies with ``aggregate`` of them.

    A worker's update that is not ``(round, node, array)`` with the layer's shape (a broken or
    Byzantine worker) is recorded and left out of its round, which then completes with the
    others: one bad worker cannot stop the job.
    """

    params = {}  # reads no --param

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.pending: dict[int, dict[int, Any]] = defaultdict(dict)
        self.shape: tuple[int, ...] | None = None
        self.refused = 0
        self.weights: np.ndarray | None = None

    def initial_weights(self, value: np.ndarray) -> None:
        self.shape = value.shape
        self.weights = np.array(value, copy=True)

    def current_weights(self) -> np.ndarray | None:
        """The weights every worker holds: the initial ones minus every aggregate sent."""
        return self.weights

    def dispose(self) -> None:
        self.pending.clear()

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: Any) -> netEncapsulation | None:
        settings = GlobalSettings.get_default()
        parsed = self._parse(content, settings.node_count)
        if parsed is None:
            return None
        round_no, sender, step = parsed
        updates = self.pending[round_no]
        updates[sender] = step
        if len(updates) < settings.node_count:
            return None
        del self.pending[round_no]
        ordered = [updates[n] for n in sorted(updates) if updates[n] is not None]
        if not ordered:
            return None
        aggregate = self.aggregate(ordered)
        if self.weights is not None:
            self.weights -= aggregate
        return netEncapsulation(settings.nodes, (round_no, aggregate))

    def _parse(self, content: Any, nodes: int) -> tuple[int, int, Any] | None:
        """``(round, sender, step)``; a bad step becomes None, a bad envelope is dropped."""
        if not (isinstance(content, tuple) and len(content) == 3):
            self._refuse(f"an update that is not (round, node, step): {type(content).__name__}")
            return None
        round_no, sender, step = content
        if not (isinstance(round_no, int) and isinstance(sender, int) and 0 <= sender < nodes):
            self._refuse(f"an update with a bad round or node: {round_no!r:.20}, {sender!r:.20}")
            return None
        good = isinstance(step, np.ndarray) and step.dtype.kind == "f"
        good = good and (self.shape is None or step.shape == self.shape)
        if not good or not np.all(np.isfinite(step)):
            self._refuse(
                f"node {sender}'s step of round {round_no}: wrong shape/dtype or not finite"
            )
            return round_no, sender, None
        return round_no, sender, step

    def _refuse(self, what: str) -> None:
        self.refused += 1
        self.record(f"left out {what} ({self.refused} so far)")

    def aggregate(self, updates: list[np.ndarray]) -> np.ndarray:
        """Combine one round's updates, in node order (the mean here)."""
        return _mean(updates)


def _mean(values: list[np.ndarray]) -> np.ndarray:
    total = np.array(values[0], copy=True)
    for value in values[1:]:
        total += value
    total /= len(values)
    return total


class AsyncPSClient(Codec):
    """ASGD worker: pushes each batch's step to the server, adopts the weights it replies with.

    Expects ``--exchange delta`` (its default). The trainer subtracts the result, so the
    server's weights ``W`` become the result ``w - W``, where ``w`` is what this node holds once
    its results are applied: its start value (the ``initial_weights`` hook; zeros without it,
    as in the codec test scripts), then what it adopted.

    ``--sync ssgd`` is the ASGD of Dean et al. 2012 and Zheng et al. 2017: a worker waits for
    its own reply (never for the other workers) and computes its next step at the ``W`` it got.
    ``--sync asgd`` is Downpour SGD's client (Dean et al. 2012, ``n_fetch = n_push = 1``): the
    worker never waits, and a step made while a reply is still awaited is also applied locally.
    A reply's ``W`` is then adopted plus this worker's locally applied steps that the server has
    not applied yet (replies come in the order of the steps they answer), so a lagging server
    never takes back the worker's own progress.
    """

    exchange = "delta"
    params = {}  # reads no --param

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        held = GlobalSettings.get_default().node_2_block[node_id]
        self.batch = NodeBatch(len(held))
        self.weights: np.ndarray | None = None
        #: Per step awaiting its reply, oldest first: the step if applied locally, else 0.
        self.in_flight: deque[Any] = deque()
        self.local: Any = 0.0  # their sum

    def dispose(self) -> None:
        self.in_flight.clear()

    def initial_weights(self, value: np.ndarray) -> None:
        self.weights = value

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation | None:
        step = self.batch.add(block_weight.block_id, block_weight.content)
        if step is None:
            return None
        if self.weights is None:
            self.weights = np.zeros_like(step)
        if self.in_flight:  # a reply is awaited, so the trainer does not wait for replies (asgd)
            self.weights = self.weights - step
            self.local = self.local + step
            self.set_result(step)
            self.in_flight.append(step)
        else:  # the trainer may wait (ssgd): the step comes back inside the reply
            self.in_flight.append(0.0)
        return netEncapsulation(Parameter_Server, (self.node_id, step))

    def receive_blocks(self, server_weights: np.ndarray) -> None:
        if self.in_flight:
            self.local = self.local - self.in_flight.popleft()
        if not self.in_flight:
            self.local = 0.0  # nothing local awaits a reply: drop the rounding residue
        adopted = server_weights - self.local
        self.set_result(self.weights - adopted)
        self.weights = adopted


class AsyncPSServer(Codec):
    """ASGD server: ``W = apply(worker, step)`` on each arrival, ``W`` back to that worker.

    Starts from the job's initial model (the ``initial_weights`` hook; zeros without it).
    ``apply`` is plain SGD, ``W - step``; ``DCASGDServer`` overrides it.
    """

    params = {}  # reads no --param

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.weights: np.ndarray | None = None

    def dispose(self) -> None:
        self.weights = None

    def initial_weights(self, value: np.ndarray) -> None:
        self.weights = value

    def current_weights(self) -> np.ndarray | None:
        """The server's weights ``W``."""
        return self.weights

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: tuple[int, Any]) -> netEncapsulation:
        sender, step = content
        if self.weights is None:
            self.initial_weights(np.zeros_like(step))
        self.weights = self.apply(sender, step)
        return netEncapsulation(sender, self.weights)

    def apply(self, sender: int, step: np.ndarray) -> np.ndarray:
        """The weights after ``sender``'s step (new array: the current one may still be sending)."""
        return self.weights - step


class DCASGDServer(AsyncPSServer):
    """DC-ASGD server (Zheng et al. 2017, "Asynchronous SGD with delay compensation").

    Keeps ``W_bak[m]``, the weights worker ``m`` last received (the initial model before its
    first reply); on worker ``m``'s gradient ``g``:
    ``W = W - eta * (g + lambda * g * g * (W - W_bak[m]))``, then ``W_bak[m] = W``, reply ``W``.
    Use with ``ps.AsyncPSClient`` workers and ``--optimizer sgd`` (the gradient is recovered as
    ``g = step / eta`` with ``eta = --learn_rate``; other optimizers' steps are not ``eta * g``).
    ``--sync ssgd`` is the paper's setting (a worker pulls ``W``, computes ``g`` there, pushes
    it; only the other workers' updates make it stale), in which ``W_bak[m]`` is exactly where
    ``g`` was computed. Under ``--sync asgd`` the workers also apply their steps locally while
    replies are awaited, so ``W_bak[m]`` is that point only up to those steps.
    ``--param dc_lambda`` is the constant variant DC-ASGD-c's ``lambda`` (default 0.04, the
    paper's ``lambda_0`` for DC-ASGD-c); the adaptive DC-ASGD-a is not built.
    ``--param dc_learn_rate`` stands for ``eta`` only where the job's is unknown (the codec test
    scripts).
    """

    params = {
        "dc_lambda": (DEFAULT_DC_LAMBDA, "delay compensation lambda (DC-ASGD-c)"),
        "dc_learn_rate": (0.0, "eta where the job's learning rate is unknown (test scripts)"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.lam = GlobalSettings.get_params("dc_lambda", DEFAULT_DC_LAMBDA)
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or self.lam < 0:
            raise ConfigError(f"DCASGDServer: --param dc_lambda must be >= 0, got {self.lam!r}")
        self.lam = float(self.lam)
        job_rate = GlobalSettings.get_default().learn_rate
        self.learn_rate = float(job_rate or GlobalSettings.get_params("dc_learn_rate", 0.0))
        if not self.learn_rate > 0:
            raise ConfigError(
                "DCASGDServer: needs the job's learning rate to recover gradients from steps; "
                "where it is unknown (the codec test scripts) pass --param dc_learn_rate"
            )
        self.backup: dict[int, np.ndarray] = {}
        self.start: np.ndarray | None = None

    def initial_weights(self, value: np.ndarray) -> None:
        super().initial_weights(value)
        self.start = value

    def apply(self, sender: int, step: np.ndarray) -> np.ndarray:
        grad = step / self.learn_rate
        backup = self.backup.get(sender, self.start)
        self.backup[sender] = dc_asgd_update(self.weights, backup, grad, self.learn_rate, self.lam)
        return self.backup[sender]
