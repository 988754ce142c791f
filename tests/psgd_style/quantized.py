"""A Parallel-SGD-style quantizing client/server pair: both directions carry QuantizedPack.

The client sends its step to the server quantized; the server averages the decoded steps of
every node and sends the mean back, quantized too.
"""

import numpy as np
from quant_pack import QuantizedPack

from psgd import BlockWeight, Codec, GlobalSettings, Parameter_Server, netEncapsulation

LEVELS = 127


class QuantizedClient(Codec):
    def __init__(self, node_id):
        super().__init__(node_id)
        self.rng = np.random.default_rng(1000 + node_id)

    def dispose(self):
        pass

    def update_blocks(self, block_weight: BlockWeight):
        return netEncapsulation(
            Parameter_Server, QuantizedPack(block_weight.content, LEVELS, self.rng)
        )

    def receive_blocks(self, content):
        assert isinstance(content, QuantizedPack), type(content)
        self.set_result(content.decode())


class QuantizedServer(Codec):
    def __init__(self, node_id):
        super().__init__(node_id)
        self.rng = np.random.default_rng(7)
        self.received = []

    def dispose(self):
        self.received.clear()

    def update_blocks(self, block_weight):
        return None

    def receive_blocks(self, content):
        self.received.append(content.decode())
        nodes = GlobalSettings.get_default().nodes
        if len(self.received) == len(nodes):
            mean = np.mean(self.received, axis=0)
            self.received.clear()
            return netEncapsulation(nodes, QuantizedPack(mean, LEVELS, self.rng))
        return None
