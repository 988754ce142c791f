"""The parameter server of a round job: its codecs, what they send, the rounds they complete.

Used by the in-process scheduler and by a ``round-ps`` daemon alike, so a round means the same
thing in both: each time every server codec holds a result, that result is the new global
model and one round is complete. What the server codecs send is held until the delivery that
caused it is counted, then tagged with the round it belongs to (the model sent while round
``r`` completes is round ``r + 1``'s). Once the job's last round is complete nothing more is
sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psgd.codec import Codec, Parameter_Server
from psgd.errors import CodecError
from psgd.net import protocol, wire
from psgd.net.channel import Package
from psgd.train.sync import CodecSet

__all__ = ["RoundStats", "ServerSide"]


@dataclass
class RoundStats:
    """What one round cost: the clients that trained for it and the bytes it moved."""

    round_no: int
    clients: set[int] = field(default_factory=set)
    steps: int = 0
    samples: int = 0
    loss_sum: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    train_s: float = 0.0
    batch_rows: list[dict[str, Any]] = field(default_factory=list)
    #: When the round was complete on the server's virtual clock (emulated links, devices).
    virtual_s: float | None = None

    @property
    def train_loss(self) -> float:
        return self.loss_sum / self.steps if self.steps else float("nan")

    def to_wire(self) -> dict[str, Any]:
        """Plain values for a ROUND message."""
        return {
            "round": self.round_no, "clients": sorted(self.clients), "steps": self.steps,
            "samples": self.samples, "loss_sum": self.loss_sum, "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down, "train_s": self.train_s,
            "batch_rows": self.batch_rows,
        }  # fmt: skip

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RoundStats:
        """The stats a ROUND message carried (``ValueError``/``TypeError`` if malformed)."""
        return cls(
            int(data["round"]), {int(n) for n in data["clients"]}, int(data["steps"]),
            int(data["samples"]), float(data["loss_sum"]), int(data["bytes_up"]),
            int(data["bytes_down"]), float(data["train_s"]),
            [dict(row) for row in data.get("batch_rows", [])],
        )  # fmt: skip


class _Outbox:
    """The server codecs' channel: encodes at once (real bytes), holds until counted."""

    def __init__(self, job_id: str) -> None:
        self.node_id = Parameter_Server
        self.job_id = job_id
        self.bytes_sent = 0
        self.held: list[tuple[list[int], list[bytes]]] = []

    def send(self, targets: list[int], items: Sequence[tuple[int, Any]]) -> int:
        frames = [bytes(f) for f in protocol.make_packages(self.job_id, Parameter_Server, items)]
        size = wire.frames_size(frames) * len(targets)
        self.bytes_sent += size
        self.held.append((list(targets), frames))
        return size

    def recv(self, timeout_s: float) -> None:
        raise CodecError("the parameter server of a round job is delivered to, never waits")


class ServerSide:
    """The parameter server's codecs and round count.

    Parameters
    ----------
    job_id:
        The job's id (in every package).
    classes:
        One server codec class per layer.
    initial_weights:
        The job's initial model, given to the codecs' ``initial_weights``.
    max_rounds:
        The job ends with this round.
    """

    def __init__(
        self,
        job_id: str,
        classes: Sequence[type[Codec]],
        initial_weights: list[np.ndarray],
        max_rounds: int,
    ) -> None:
        self.max_rounds = max_rounds
        self.outbox = _Outbox(job_id)
        self.codecs = CodecSet(Parameter_Server, classes, self.outbox)
        with self.codecs.batched():  # one message per client for all layers, not one per layer
            for layer, codec in enumerate(self.codecs.codecs):
                if callable(getattr(codec, "initial_weights", None)):
                    initial = np.array(initial_weights[layer], copy=True)
                    self.codecs.call(layer, "initial_weights", initial)
        self.rounds_done = 0
        self.stopped = False
        self.stats: dict[int, RoundStats] = {}
        self.finished: list[tuple[RoundStats, list[np.ndarray]]] = []
        self._marks = (0, self.outbox.bytes_sent)
        self._deadline_round = 0  # the round whose deadline the codecs were told of

    @property
    def bytes_sent(self) -> int:
        return self.outbox.bytes_sent

    def deliver(self, message: protocol.Message, nbytes: int) -> None:
        """Hand a PACKAGE message to the server codecs; count the round it may complete."""
        with self.codecs.batched():
            for item in protocol.split_packages(message, nbytes):
                self.codecs.deliver(Package(*item))
        self._count_round()

    def take_sends(self) -> list[tuple[list[int], list[bytes], int]]:
        """What the codecs sent since the last call, with the round each belongs to.

        Nothing once the last round is complete: no client trains for a round never counted.
        """
        held, self.outbox.held = self.outbox.held, []
        if self.stopped:
            return []
        return [(targets, frames, self.rounds_done + 1) for targets, frames in held]

    def take_finished(self) -> list[tuple[RoundStats, list[np.ndarray]]]:
        """The rounds completed since the last call, with their global models."""
        finished, self.finished = self.finished, []
        return finished

    def add_run(
        self, round_no: int, node: int, run: dict[str, float], losses: Sequence[float] = ()
    ) -> None:
        """Account a client's run for round ``round_no`` (``psgd.net.routing.RUN_FIELDS``).

        A run for a round already complete (it missed the deadline) is not counted.
        """
        if round_no <= self.rounds_done:
            return
        stats = self.stats.setdefault(round_no, RoundStats(round_no))
        stats.clients.add(node)
        stats.steps += int(run["steps"])
        stats.samples += int(run["samples"])
        stats.loss_sum += float(run["loss_sum"])
        stats.bytes_up += int(run["bytes_sent"])
        stats.train_s += float(run["train_s"])
        stats.batch_rows += [
            {"round": round_no, "node": node, "step": step, "loss": loss}
            for step, loss in enumerate(losses)
        ]

    def deadline(self) -> bool:
        """The current round's deadline passed: each codec with ``round_deadline`` is told.

        Once per round; False when no codec defines ``round_deadline`` (nothing can change) or
        it was already told for this round.
        """
        round_no = self.rounds_done + 1
        codecs = self.codecs.codecs
        layers = [i for i, c in enumerate(codecs) if callable(getattr(c, "round_deadline", None))]
        if self.stopped or self._deadline_round == round_no:
            return False
        self._deadline_round = round_no
        if not layers:
            return False
        with self.codecs.batched():
            for layer in layers:
                self.codecs.call(layer, "round_deadline")
        self._count_round()
        return True

    @property
    def deadline_pending(self) -> bool:
        """The current round's deadline has not been applied yet."""
        return not self.stopped and self._deadline_round != self.rounds_done + 1

    def waiting_layers(self) -> list[int]:
        """The server layers without a result (waiting for updates)."""
        return [i for i, codec in enumerate(self.codecs.codecs) if not codec.is_done()]

    def _count_round(self) -> None:
        if self.stopped or not all(codec.is_done() for codec in self.codecs.codecs):
            return
        model = [codec.get_result() for codec in self.codecs.codecs]
        self.rounds_done += 1
        if self.rounds_done >= self.max_rounds:
            self.stopped = True
        stats = self.stats.pop(self.rounds_done, RoundStats(self.rounds_done))
        # The server sends round r+1's model while it finishes round r: round r's download is
        # what it sent while finishing round r-1 (or, for round 1, at the start).
        before, last = self._marks
        stats.bytes_down = last - before
        self._marks = (last, self.outbox.bytes_sent)
        self.finished.append((stats, model))
