"""Federated averaging (McMahan et al. 2017) in Parallel-SGD's form.

Clients train locally and every ``local_steps`` batches (``--param local_steps=N``, default
150 as in Parallel-SGD) send their weights to the server, which averages the weights of all
clients and sends the average back. Parameters, not gradients, flow through this codec.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from psgd import BlockWeight, Codec, GlobalSettings, Parameter_Server, netEncapsulation

DEFAULT_LOCAL_STEPS = 150


class FedAvgClient(Codec):
    """A client: its own weights between rounds, the server's average at each round."""

    exchange = "params"
    params = {"local_steps": (DEFAULT_LOCAL_STEPS, "local steps between two averages")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.local_steps = int(GlobalSettings.get_params("local_steps", DEFAULT_LOCAL_STEPS))
        self.turn = 0

    def dispose(self) -> None:
        self.turn = 0

    def update_blocks(self, block_weight: BlockWeight) -> netEncapsulation | None:
        self.turn += 1
        if self.turn >= self.local_steps:
            self.turn = 0
            return netEncapsulation(Parameter_Server, (self.node_id, block_weight.content))
        self.set_result(block_weight.content)
        return None

    def receive_blocks(self, content: Any) -> None:
        self.set_result(np.array(content, copy=True))


class FedAvgServer(Codec):
    """The server: waits for every client's weights, replies with their mean."""

    params = {}  # reads no --param

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.weights: dict[int, Any] = {}

    def dispose(self) -> None:
        self.weights.clear()

    def update_blocks(self, block_weight: BlockWeight) -> None:
        return None

    def receive_blocks(self, content: tuple[int, Any]) -> netEncapsulation | None:
        sender, weights = content
        self.weights[sender] = weights
        settings = GlobalSettings.get_default()
        if len(self.weights) < settings.node_count:
            return None
        ordered = [self.weights[n] for n in sorted(self.weights)]
        self.weights.clear()
        average = np.mean(np.stack(ordered), axis=0, dtype=ordered[0].dtype)
        return netEncapsulation(settings.nodes, average)
