"""Parameter-server family: synchronous gradient averaging through a server.

Workers send each batch's step (``--exchange delta``: the optimizer's step, to be subtracted)
to the server; when every worker's step of a round is in, the server aggregates them (the mean;
subclasses override ``aggregate``, see ``robust.py``) and sends the result to every worker,
which applies it. Every worker therefore holds the same weights.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from psgd import BlockWeight, Codec, GlobalSettings, Parameter_Server, netEncapsulation


class GradientPSClient(Codec):
    """Sends its step of each round to the server; the server's aggregate is the result."""

    exchange = "delta"

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
    """Collects one step per worker and round, replies with ``aggregate`` of them."""

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.pending: dict[int, dict[int, Any]] = defaultdict(dict)

    def dispose(self) -> None:
        self.pending.clear()

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: tuple[int, int, Any]) -> netEncapsulation | None:
        round_no, sender, step = content
        updates = self.pending[round_no]
        updates[sender] = step
        settings = GlobalSettings.get_default()
        if len(updates) < settings.node_count:
            return None
        del self.pending[round_no]
        ordered = [updates[n] for n in sorted(updates)]
        return netEncapsulation(settings.nodes, (round_no, self.aggregate(ordered)))

    def aggregate(self, updates: list[np.ndarray]) -> np.ndarray:
        """Combine one round's updates, in node order (the mean here)."""
        return _mean(updates)


def _mean(values: list[np.ndarray]) -> np.ndarray:
    total = np.array(values[0], copy=True)
    for value in values[1:]:
        total += value
    total /= len(values)
    return total
