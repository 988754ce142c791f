"""Round jobs on daemons: a pool of virtual clients on one daemon, and the server's loop.

A round job on daemons runs one ``PoolHost`` per worker daemon, each hosting a range of the
job's clients (``psgd.net.routing.Placement``) on its own executors, and the parameter server
on another daemon (``serve_rounds``). Packages travel between them in ROUTE envelopes; the
round a model belongs to travels with it, and each client run's stats travel with the first
package it sends to the server, so the server counts rounds and their costs exactly as the
in-process scheduler does. Waiting for a model costs a parked client nothing, as in-process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from psgd.codec import Codec, Parameter_Server
from psgd.net.routing import Routed, RoutedChannel
from psgd.train.executors import Executors
from psgd.train.hosting import ClientHost, run_stats
from psgd.train.node import RunOutcome
from psgd.train.server_side import RoundStats, ServerSide

__all__ = ["PoolHost", "serve_rounds"]

_log = logging.getLogger(__name__)

#: How long a loop waits for a package before checking whether the job should end.
POLL_S = 0.1


class PoolHost(ClientHost):
    """A daemon's share of a round job's clients, trained on its executors.

    Parameters
    ----------
    channel:
        This pool's routed data plane (placed and connected).
    clients:
        The clients this pool hosts.
    client_classes, executors, segment_prefix:
        As for ``ClientHost``.
    """

    def __init__(
        self,
        channel: RoutedChannel,
        clients: range,
        client_classes: Sequence[type[Codec]],
        executors: Executors,
        segment_prefix: str = "psgd",
    ) -> None:
        super().__init__(client_classes, executors, segment_prefix)
        self.channel = channel
        self.clients = clients
        self.rounds: dict[int, int] = {}  # client -> the round of the last model it was sent
        self.runs = 0
        self._unsent: dict[int, dict[str, Any]] = {}  # client -> its run's stats, not yet sent

    def run(self, finished: Callable[[], bool], between: Callable[[], None] = lambda: None) -> None:
        """Serve the pool's clients until ``finished()``; raises a client's ``CodecError``.

        ``between`` is called once per turn of the loop (the daemon answers evaluations there).
        """
        try:
            while not finished():
                between()
                self.dispatch()
                self.collect(0)
                wait = 0.0 if self.runnable and self.can_dispatch else POLL_S
                arrived = self.channel.receive(wait, self.executors.fds())
                for routed in arrived:
                    self._arrived(routed)
                quiet = not arrived and self.idle
                self.channel.note_quiet(self._waiting if quiet else None)
        finally:
            self.release_all()

    def _waiting(self) -> str:
        return self.waiting_report(len(self.clients))

    def _arrived(self, routed: Routed) -> None:
        if routed.round_no is not None:
            for node in routed.to:
                self.rounds[node] = routed.round_no
        self.enqueue(routed.to, routed.frames)

    def post(self, sender: int, targets: list[int], frames: list[Any], size: int) -> None:
        run = self._unsent.pop(sender, None) if Parameter_Server in targets else None
        round_no = self.last_round.get(sender)
        self.channel.send_frames(targets, frames, round_no if run else None, run)

    def round_for(self, node: int) -> int:
        return self.rounds.get(node, 1)

    def count_run(self, outcome: RunOutcome) -> None:
        self.runs += 1
        self._unsent[outcome.state.node_id] = run_stats(outcome)

    def figures(self) -> dict[str, Any]:
        """What this pool did: clients hosted and trained, runs, bytes its clients sent."""
        return {
            "clients": len(self.clients),
            "first_client": self.clients.start,
            "clients_trained": len(self.trained),
            "runs": self.runs,
            "bytes_sent": self.channel.bytes_sent,
        }


def serve_rounds(
    server: ServerSide,
    channel: RoutedChannel,
    on_round: Callable[[RoundStats, list[np.ndarray]], None],
    finished: Callable[[], bool],
    deadline_s: float | None = None,
) -> None:
    """The parameter server of a round job on a daemon: deliver, count, send, until finished.

    ``on_round`` is called with each completed round's stats and global model (the daemon
    reports it to the submitter, which evaluates it and decides when the job ends).
    ``deadline_s`` (``--round-deadline``): this many seconds after a round's first model was
    sent, the server codecs are told the deadline passed (they aggregate what arrived).
    """
    started: dict[int, float] = {}  # round -> when its first model was sent

    def flush() -> None:
        for targets, frames, round_no in server.take_sends():
            started.setdefault(round_no, time.monotonic())
            channel.send_frames(targets, frames, round_no)
        for stats, model in server.take_finished():
            on_round(stats, model)

    def waiting() -> str:
        return (
            f"its layers {server.waiting_layers()} wait for updates to finish round "
            f"{server.rounds_done + 1}"
        )

    def until_deadline() -> float | None:
        begun = started.get(server.rounds_done + 1)
        if deadline_s is None or begun is None or not server.deadline_pending:
            return None
        return begun + deadline_s - time.monotonic()

    flush()  # the first round's model
    while not finished():
        left = until_deadline()
        arrived = channel.receive(POLL_S if left is None else max(0.0, min(POLL_S, left)))
        channel.note_quiet(waiting if not arrived and left is None else None)
        for routed in arrived:
            sender = routed.message["src"]
            if routed.run is not None and routed.round_no is not None:
                server.add_run(routed.round_no, sender, routed.run, routed.batch_losses)
            server.deliver(routed.message, routed.size)
            flush()
        left = until_deadline()
        if left is not None and left <= 0 and server.deadline():
            flush()
