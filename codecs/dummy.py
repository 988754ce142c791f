"""Local-only codec: no communication, the result is the node's own block(s)."""

from __future__ import annotations

from typing import Any

from psgd import BlockWeight, Codec, GlobalSettings


class DummyCodec(Codec):
    """Each node trains alone: the result is the mean of the blocks it holds."""

    params = {}  # reads no --param

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.own: dict[int, Any] = {}

    def dispose(self) -> None:
        self.own.clear()

    def update_blocks(self, block_weight: BlockWeight) -> None:
        held = GlobalSettings.get_default().node_2_block[self.node_id]
        if len(held) == 1:
            self.set_result(block_weight.content)
            return
        self.own[block_weight.block_id] = block_weight.content
        if len(self.own) == len(held):
            values = [self.own[b] for b in sorted(self.own)]
            self.own.clear()
            self.set_result(sum(values[1:], values[0].copy()) / len(values))

    def receive_blocks(self, content: Any) -> None:
        return None

    def expected(self, blocks: dict[int, Any]) -> Any:
        """Reference result: the mean of this node's own blocks."""
        held = sorted(GlobalSettings.get_default().node_2_block[self.node_id])
        values = [blocks[b] for b in held]
        return sum(values[1:], values[0].copy()) / len(values)
