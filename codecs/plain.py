"""Plain P2P averaging: send each block to the nodes that lack it, average all blocks.

Every package carries the round it belongs to, so a duplicate copy of a block (redundancy
> 1) or an early block from a faster node never leaks into the wrong round. Blocks are
averaged in block-id order, so the result does not depend on arrival order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from psgd import BlockWeight, Codec, GlobalSettings, netEncapsulation


def mean_in_block_order(blocks: dict[int, Any]) -> Any:
    """The mean of ``blocks`` summed in ascending block-id order."""
    ordered = [blocks[b] for b in sorted(blocks)]
    total = np.array(ordered[0], copy=True)
    for value in ordered[1:]:
        total += value
    total /= len(ordered)
    return total


class Plain(Codec):
    """Synchronous all-to-all averaging of every block (Parallel-SGD's ``Plain``)."""

    params = {}  # reads no --param

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.round = 0
        self.updates: dict[int, int] = defaultdict(int)
        self.pending: dict[int, dict[int, Any]] = defaultdict(dict)

    def dispose(self) -> None:
        self.pending.clear()

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation:
        settings = GlobalSettings.get_default()
        block_id = block_weight.block_id
        round_no = self.updates[block_id]
        self.updates[block_id] += 1
        self._store(round_no, block_id, block_weight.content)
        package = (round_no, block_id, block_weight.content)
        return netEncapsulation(settings.get_adversary(block_id), package)

    def receive_blocks(self, content: tuple[int, int, Any]) -> None:
        round_no, block_id, value = content
        self._store(round_no, block_id, value)

    def _store(self, round_no: int, block_id: int, value: Any) -> None:
        if round_no < self.round:
            return  # another holder's copy of a block already merged
        self.pending[round_no].setdefault(block_id, value)
        block_count = GlobalSettings.get_default().block_count
        while len(self.pending.get(self.round, ())) == block_count:
            self.set_result(mean_in_block_order(self.pending.pop(self.round)))
            self.round += 1

    def expected(self, blocks: dict[int, Any]) -> Any:
        """Reference result of one round for the codec test scripts: the mean of all blocks."""
        return mean_in_block_order(blocks)
