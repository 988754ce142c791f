"""Federated family in rounds: FedAvg with real client sampling, and FedProx.

**FedAvg** (McMahan et al. 2017). A round: the server draws ``C * K`` of the ``K`` clients
and sends each of them ``(round, model)``; a picked client starts from that model, trains
``u_k = E * n_k / B`` local steps (one local epoch by default) and sends back
``(round, node_id, weights, n_samples)``; once every picked client has answered, the server
publishes the sample-weighted average as the new global model (``set_result``: psgd counts a
round there and evaluates it) and starts the next round. A client that is not picked is sent
nothing, trains nothing, sends nothing: with psgd's round scheduler it costs only its stored
codec state.

The client codec declares ``waits_for_model = True``: its node trains only while every layer
codec holds a result (the model it was sent, then its own weights after each local step) and
waits, without a timeout, after the step that sends its update.

Parameters (``--param key=value``; ``--local-epochs E`` and ``--rounds R`` are options):

- ``fraction``: C, the fraction of clients picked per round, in (0, 1]; default 0.1.
  ``max(1, round(C * K))`` distinct clients per round, halves rounding up.
- ``local_steps``: local steps per round when ``--local-epochs`` is not given; default one
  local epoch of the client, ``ceil(n_k / B)``.
- ``seed``: seeds the draw together with the round number (default: the job's ``--seed``).

**FedProx** (Li et al. 2020): the same protocol; the client adds ``mu/2 * ||w - w_global||^2``
to its local objective (``--param mu``, default 0.01) as a second step of its own after each
local step: ``w <- w - eta * mu * (w - w_global)`` (``eta``: the job's learning rate).

Use ``--codec federated.FedAvgClient --ps-codec federated.FedAvgServer`` (or
``federated.FedProxClient`` / ``federated.FedProxServer``); ``--components M`` trains FedEM's
mixture learner with the same codecs (evaluate it with ``--eval clients``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from psgd import BlockWeight, Codec, GlobalSettings, Parameter_Server, netEncapsulation
from psgd.algorithms.federated import (
    RunningAverage,
    client_local_steps,
    clients_per_round,
    proximal_correction,
    sample_clients,
)

#: Fraction of clients per round when ``--param fraction`` is not given (McMahan's C=0.1).
DEFAULT_FRACTION = 0.1


def _replace(old: Any, new: Any) -> Any:
    return new


def _local_steps(settings: GlobalSettings, n_samples: int) -> int:
    if settings.local_epochs > 0:
        return client_local_steps(n_samples, max(settings.batch_size, 1), settings.local_epochs)
    default = client_local_steps(n_samples, max(settings.batch_size, 1), 1.0)
    steps = GlobalSettings.get_params("local_steps", default)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--param local_steps: must be a whole number >= 1, got {steps!r}")
    return steps


class FedAvgClient(Codec):
    """A client: trains ``local_steps`` from each model it is sent, then sends its weights."""

    exchange = "params"
    waits_for_model = True
    params = {"local_steps": ("one local epoch", "local steps per round (--local-epochs wins)")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        settings = GlobalSettings.get_default()
        if settings.exchange not in ("", "auto", "params"):
            raise ValueError(
                f"{type(self).__name__} exchanges weights: it needs --exchange params or auto, "
                f"got --exchange {settings.exchange}"
            )
        samples = settings.node_samples
        self.n_samples = int(samples[node_id]) if len(samples) > node_id else 1
        self.local_steps = _local_steps(settings, self.n_samples)
        self.round = -1  # the round whose model this client trains from
        self.step = 0

    def dispose(self) -> None:
        return None

    def receive_blocks(self, content: tuple[int, np.ndarray]) -> None:
        round_no, model = content
        if round_no <= self.round:
            self.record(f"dropped the model of round {round_no} (has round {self.round})")
            return
        self.round, self.step = round_no, 0
        model = np.array(model, copy=True)
        self.global_weights(model)
        self.set_result(model, _replace)

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation | None:
        weights = self.local_weights(block_weight.content)
        self.step += 1
        if self.step < self.local_steps:
            self.set_result(weights, _replace)  # keep training from my own weights
            return None
        self.end_round()
        return netEncapsulation(
            Parameter_Server, (self.round, self.node_id, weights, self.n_samples)
        )

    def end_round(self) -> None:
        """Called as the update leaves: drop what is not needed while waiting for a model."""

    def local_weights(self, weights: np.ndarray) -> np.ndarray:
        """The weights after a local step, as this client keeps and sends them."""
        return weights

    def global_weights(self, weights: np.ndarray) -> None:
        """Told each global model this client is sent; FedProx keeps it."""


class FedAvgServer(Codec):
    """The server: picks each round's clients, averages their weights by sample count."""

    params = {
        "fraction": (DEFAULT_FRACTION, "fraction of clients sampled per round"),
        "seed": ("the job's seed", "seed of the client sampling"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        settings = GlobalSettings.get_default()
        self.fraction = float(GlobalSettings.get_params("fraction", DEFAULT_FRACTION))
        clients_per_round(self.fraction, settings.node_count)  # a bad fraction fails here
        self.seed = int(GlobalSettings.get_params("seed", settings.seed))
        self.round = 0
        self.picked: list[int] = []
        self.model: np.ndarray | None = None  # the round's model, as sent
        self.updates: dict[int, tuple[np.ndarray, int]] = {}  # arrived, not yet added
        self.added = 0  # picked[:added] are in the running average
        self.average = RunningAverage()

    def dispose(self) -> None:
        self.updates.clear()

    def initial_weights(self, value: np.ndarray) -> netEncapsulation:
        """The job's initial model: round 0 starts with it."""
        return self._start_round(value)

    def _start_round(self, model: np.ndarray) -> netEncapsulation:
        nodes = GlobalSettings.get_default().nodes
        self.picked = sample_clients(nodes, self.fraction, self.round, self.seed)
        self.added, self.average = 0, RunningAverage()
        self.model = model
        return netEncapsulation(self.picked, (self.round, model))

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: tuple[int, int, np.ndarray, int]) -> netEncapsulation | None:
        round_no, sender, weights, n_samples = content
        done = self.picked[: self.added]
        if (
            round_no != self.round
            or sender not in self.picked
            or sender in self.updates
            or (sender in done)
        ):
            self.record(f"dropped an update of round {round_no} from client {sender!r}")
            return None
        self.updates[sender] = (weights, n_samples)
        # add updates as they come, in the order clients were picked (the same sum whatever
        # the arrival order), so the round's end has little left to do
        while self.added < len(self.picked) and self.picked[self.added] in self.updates:
            self.average.add(*self.updates.pop(self.picked[self.added]))
            self.added += 1
        if self.added < len(self.picked):
            return None
        return self._end_round(self.average.result())

    def round_deadline(self) -> netEncapsulation:
        """The round's deadline passed (``--round-deadline``): average the updates that came.

        Updates are added in picked order, as always; with none, the global model stays. Late
        updates of this round are dropped when they come.
        """
        arrived = self.added
        for client in self.picked[self.added :]:
            if client in self.updates:
                self.average.add(*self.updates.pop(client))
                arrived += 1
        self.record(
            f"round {self.round}: deadline passed with {arrived} of {len(self.picked)} updates"
        )
        self.updates.clear()
        self.added = len(self.picked)  # the round is closed: later updates are dropped
        if arrived == 0:
            assert self.model is not None
            return self._end_round(self.model)
        return self._end_round(self.average.result())

    def _end_round(self, model: np.ndarray) -> netEncapsulation:
        self.set_result(model, _replace)  # the round's global model
        self.round += 1
        return self._start_round(model)


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

    def local_weights(self, weights: np.ndarray) -> np.ndarray:
        if self.anchor is None:
            return weights
        return proximal_correction(weights, self.anchor, self.learn_rate, self.mu)

    def global_weights(self, weights: np.ndarray) -> None:
        self.anchor = weights

    def end_round(self) -> None:
        self.anchor = None  # set again from the next model: a waiting client keeps none


class FedProxServer(FedAvgServer):
    """FedProx's server is FedAvg's: the weighted average of the picked clients."""
