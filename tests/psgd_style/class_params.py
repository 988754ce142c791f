"""A codec that reads the job's parameters in its class body, as Parallel-SGD codecs do.

Peer-to-peer averaging of the steps, scaled by ``--param step_scale`` read when the module is
imported; without it the class body reads 0 and every node refuses to start.
"""

import numpy as np

from psgd import Codec, GlobalSettings, netEncapsulation


class ClassParamAverage(Codec):
    STEP_SCALE = GlobalSettings.get_params("step_scale")
    NODES = GlobalSettings.get_default().node_count

    def __init__(self, node_id):
        super().__init__(node_id)
        if not self.STEP_SCALE:
            raise ValueError("--param step_scale was not set when the codec module was imported")
        self.pending = {}

    def dispose(self):
        self.pending.clear()

    def update_blocks(self, block_weight):
        self._add(block_weight.content)
        return netEncapsulation(
            GlobalSettings.get_default().get_adversary(block_weight.block_id), block_weight.content
        )

    def receive_blocks(self, content):
        self._add(content)

    def _add(self, content):
        self.pending[len(self.pending)] = content
        if len(self.pending) == self.NODES:
            self.set_result(np.mean(list(self.pending.values()), axis=0) * self.STEP_SCALE)
            self.pending.clear()

    def expected(self, blocks):
        return np.mean(list(blocks.values()), axis=0) * self.STEP_SCALE
