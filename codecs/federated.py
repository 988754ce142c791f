"""Federated family: FedAvg with client sampling and sample-count weighting, and FedProx.

**FedAvg** (McMahan et al. 2017). Clients train locally; every ``local_steps`` batches each
client sends ``(round, node_id, weights, n_samples)`` to the server. The server draws a fraction
``C`` of the clients for that round and sends every client ``(round, average)``: the average of
the *sampled* clients' weights, weighted by their training sample counts
(``GlobalSettings.node_samples``). Every client replaces its weights with it.

Parameters (``--param key=value``):

- ``local_steps``: batches between rounds; default one local epoch of the largest client,
  ``ceil(max(node_samples) / batch_size)``, which is the trainer's epoch with one block per
  node (so evaluation per epoch is evaluation per round); 150 when those figures are unknown.
  It is the same on every client: a round is a synchronisation point, so all clients must
  reach it after the same number of batches (a client with less data loops over it more).
- ``fraction``: C, the fraction of clients averaged per round, in (0, 1]; default 1.0.
  ``max(1, round(C * node_count))`` distinct clients per round, halves rounding up.
- ``seed``: seeds the client draw together with the round number (default: the job's
  ``--seed``), so every layer's server codec picks the same clients and a run is reproducible.

Unsampled clients: in this simulation every client trains every round and sends its weights;
the server discards those of the unsampled ones, and every client starts the next round from
the new average. A client's local work depends only on the global weights it starts from and on
its own data, so the average, and so the whole run, is FedAvg's where unsampled clients stay idle
(exactly so with plain SGD, up to the order of later mini-batches, which the discarded work
advanced; with Adam or momentum the discarded steps also advanced the client's optimizer state,
which the trainer keeps across rounds). The price is compute and upload that real FedAvg would
not spend.

**FedProx** (Li et al. 2020): the same protocol; the client adds ``mu/2 * ||w - w_global||^2``
to its local objective (``--param mu``, default 0.01). In params mode the codec sees the weights
after each local step, so it applies the proximal term as a second step of its own:
``w <- content - eta * mu * (content - w_global)``, ``eta`` = the job's learning rate,
``w_global`` = the last server average (the job's initial weights before the first round).
With SGD this equals one step on the proximal objective, except that the proximal gradient is
taken at the stepped weights rather than before the step (a difference of order
``eta^2 * mu * |grad|``); with Adam or momentum the proximal gradient bypasses the optimizer's
scaling and moments (a plain SGD step on the proximal term alone), and with Adam's usual
``eta = 0.001`` it is a weak pull. FedProx's variable local work (gamma-inexact solutions) is
not modelled: every client runs ``local_steps`` batches.

Use ``--codec federated.FedAvgClient --ps-codec federated.FedAvgServer`` (or
``federated.FedProxClient`` / ``federated.FedProxServer``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from psgd import BlockWeight, Codec, GlobalSettings, Parameter_Server, netEncapsulation
from psgd.algorithms.federated import (
    clients_per_round,
    local_epoch_steps,
    proximal_correction,
    sample_clients,
    weighted_average,
)

#: Round length when neither ``--param local_steps`` nor the data sizes are known.
FALLBACK_LOCAL_STEPS = 150


def _replace(old: Any, new: Any) -> Any:
    return new


def _local_steps(settings: GlobalSettings) -> int:
    default = local_epoch_steps(settings.node_samples, settings.batch_size)
    steps = GlobalSettings.get_params("local_steps", default or FALLBACK_LOCAL_STEPS)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--param local_steps: must be a whole number >= 1, got {steps!r}")
    return steps


class FedAvgClient(Codec):
    """A client: its own weights between rounds, the server's average at each round's end."""

    exchange = "params"
    params = {"local_steps": ("one local epoch", "local steps per round")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        settings = GlobalSettings.get_default()
        if settings.exchange not in ("", "auto", "params"):
            raise ValueError(
                f"{type(self).__name__} exchanges weights: it needs --exchange params or auto, "
                f"got --exchange {settings.exchange}"
            )
        self.local_steps = _local_steps(settings)
        samples = settings.node_samples
        self.n_samples = int(samples[node_id]) if len(samples) > node_id else 1
        self.held = len(settings.node_2_block[node_id])
        self.blocks: dict[int, np.ndarray] = {}
        self.step = 0
        self.round = 0  # the next round this client sends
        self.applied = -1  # the last round whose average this client took

    def dispose(self) -> None:
        self.blocks.clear()

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation | None:
        self.blocks[block_weight.block_id] = block_weight.content
        if len(self.blocks) < self.held:
            return None
        weights = self.local_weights(_mean([self.blocks[b] for b in sorted(self.blocks)]))
        self.blocks.clear()
        self.step += 1
        if self.step % self.local_steps:
            if not self.is_done():  # under ASGD a server average may be waiting: it wins
                self.set_result(weights, _replace)
            return None
        self.round += 1
        return netEncapsulation(
            Parameter_Server, (self.round - 1, self.node_id, weights, self.n_samples)
        )

    def receive_blocks(self, content: tuple[int, np.ndarray]) -> None:
        round_no, average = content
        # Under SSGD the reply is always the round just sent; under ASGD it may come after
        # the next send, and is still the newest global model unless a later one was taken.
        if not self.applied < round_no < self.round:
            self.record(
                f"dropped the average of round {round_no} (sent up to {self.round - 1}, "
                f"took {self.applied})"
            )
            return
        self.applied = round_no
        average = np.array(average, copy=True)
        self.global_weights(average)
        self.set_result(average, _replace)

    def local_weights(self, weights: np.ndarray) -> np.ndarray:
        """The weights after a local step, as this client keeps and sends them."""
        return weights

    def global_weights(self, weights: np.ndarray) -> None:
        """Told each new global model (the server's average); FedProx keeps it."""


class FedAvgServer(Codec):
    """The server: per round, the sample-weighted average of the sampled clients' weights."""

    params = {
        "fraction": (1.0, "fraction of clients sampled per round"),
        "seed": ("the job's seed", "seed of the client sampling"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        settings = GlobalSettings.get_default()
        self.fraction = float(GlobalSettings.get_params("fraction", 1.0))
        clients_per_round(self.fraction, settings.node_count)  # a bad fraction fails here
        self.seed = int(GlobalSettings.get_params("seed", settings.seed))
        self.pending: dict[int, dict[int, tuple[np.ndarray, int]]] = defaultdict(dict)

    def dispose(self) -> None:
        self.pending.clear()

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: tuple[int, int, np.ndarray, int]) -> netEncapsulation | None:
        round_no, sender, weights, n_samples = content
        settings = GlobalSettings.get_default()
        if sender not in settings.nodes:
            self.record(f"dropped weights of round {round_no} from unknown client {sender!r}")
            return None
        updates = self.pending[round_no]
        updates[sender] = (weights, n_samples)
        if len(updates) < settings.node_count:
            return None
        del self.pending[round_no]
        sampled = sample_clients(settings.nodes, self.fraction, round_no, self.seed)
        average = weighted_average(
            [updates[c][0] for c in sampled], [updates[c][1] for c in sampled]
        )
        return netEncapsulation(settings.nodes, (round_no, average))


class FedProxClient(FedAvgClient):
    """FedAvg's client with the proximal pull ``mu * (w - w_global)`` after each local step."""

    params = {"mu": (0.01, "weight of the proximal term")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.mu = float(GlobalSettings.get_params("mu", 0.01))
        if not self.mu >= 0:
            raise ValueError(f"--param mu: must be >= 0, got {self.mu!r}")
        self.learn_rate = GlobalSettings.get_default().learn_rate
        self.anchor: np.ndarray | None = None

    def initial_weights(self, value: np.ndarray) -> None:
        """The job's initial weights: the global model of round 0."""
        self.anchor = np.array(value, copy=True)

    def local_weights(self, weights: np.ndarray) -> np.ndarray:
        if self.anchor is None:  # no global model known yet (e.g. psgd.testing)
            return weights
        return proximal_correction(weights, self.anchor, self.learn_rate, self.mu)

    def global_weights(self, weights: np.ndarray) -> None:
        self.anchor = weights


class FedProxServer(FedAvgServer):
    """FedProx's server is FedAvg's: the weighted average of the sampled clients."""


def _mean(arrays: list[np.ndarray]) -> np.ndarray:
    if len(arrays) == 1:
        return arrays[0]
    return np.mean(np.stack(arrays), axis=0, dtype=arrays[0].dtype)
