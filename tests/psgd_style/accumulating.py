"""Parallel-SGD's gradient-averaging rule: the server returns accumulated weights.

Workers send their step; the server keeps ``total``, the sum of the mean steps so far taken
with a minus sign (it never sees the initial model), and replies with it; workers apply it as
``w = w_initial + total`` (``exchange = "accumulate"``).
"""

import numpy as np

from psgd import Codec, GlobalSettings, Parameter_Server, netEncapsulation


class AccumulatingClient(Codec):
    exchange = "accumulate"

    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        return netEncapsulation(Parameter_Server, block_weight.content)

    def receive_blocks(self, content):
        self.set_result(content)


class AccumulatingServer(Codec):
    def __init__(self, node_id):
        super().__init__(node_id)
        self.total = 0
        self.steps = []

    def dispose(self):
        self.steps.clear()

    def update_blocks(self, block_weight):
        return None

    def receive_blocks(self, content):
        self.steps.append(content)
        nodes = GlobalSettings.get_default().nodes
        if len(self.steps) == len(nodes):
            self.total = self.total - np.mean(self.steps, axis=0)
            self.steps.clear()
            return netEncapsulation(nodes, self.total)
        return None
