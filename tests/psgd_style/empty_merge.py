"""A merge operation that relies on Parallel-SGD's empty-buffer call.

Each node collects every node's step, then publishes with ``set_result(steps, mean_into)``:
the buffer starts as ``np.asarray(0.0)`` and ``mean_into`` adds the mean of the list to it.
Were the list stored as it is, the result would be a list of arrays, not their mean.
"""

import numpy as np

from psgd import Codec, GlobalSettings, netEncapsulation


def mean_into(old, steps):
    return old + np.mean(steps, axis=0)


class EmptyMergeAverage(Codec):
    def __init__(self, node_id):
        super().__init__(node_id)
        self.steps = []

    def dispose(self):
        self.steps.clear()

    def update_blocks(self, block_weight):
        self._add(block_weight.content)
        settings = GlobalSettings.get_default()
        return netEncapsulation(settings.get_adversary(block_weight.block_id), block_weight.content)

    def receive_blocks(self, content):
        self._add(content)

    def _add(self, content):
        self.steps.append(content)
        if len(self.steps) == GlobalSettings.get_default().block_count:
            steps, self.steps = self.steps, []
            self.set_result(steps, mean_into)

    def expected(self, blocks):
        return np.mean(list(blocks.values()), axis=0)
