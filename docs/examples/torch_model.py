"""A PyTorch module as a psgd learner: ``--model docs/examples/torch_model.py:build``.

psgd never imports torch; this file does, so torch must be installed wherever the job runs
(the submitter for ``--simulate``, every worker daemon otherwise). The adapter is generic:
``TorchLearner(module, loss)`` wraps any ``torch.nn.Module`` whose parameters are float32 on
the CPU. Each parameter becomes a ``psgd.nn.Variable`` whose ``value`` *is* the parameter's
memory (``param.detach().numpy()`` shares it), so psgd's optimizers and codecs, which update
``value`` in place, update the module; ``loss_and_grads`` copies ``param.grad`` into ``grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from psgd.nn import Variable


class TorchLearner:
    """Any CPU float32 ``nn.Module`` behind psgd's learner interface."""

    def __init__(self, module: nn.Module, loss: Callable[..., torch.Tensor]) -> None:
        self.module = module
        self.loss = loss
        self.variables = [
            Variable(name, param.detach().numpy()) for name, param in module.named_parameters()
        ]
        self._params = list(module.parameters())

    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32)  # a copy: psgd's data arrays are read-only

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float:
        self.module.train()
        self.module.zero_grad(set_to_none=False)
        loss = self.loss(self.module(self._inputs(x)), torch.tensor(y, dtype=torch.int64))
        loss.backward()
        for var, param in zip(self.variables, self._params, strict=True):
            assert param.grad is not None
            np.copyto(var.grad, param.grad.numpy())
        return loss.item()

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        self.module.eval()
        with torch.no_grad():
            logits = self.module(self._inputs(x))
            labels = torch.tensor(y, dtype=torch.int64)
            loss = self.loss(logits, labels).item()
            accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
        return loss, accuracy

    def get_weights(self) -> list[np.ndarray]:
        return [var.value.copy() for var in self.variables]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        for var, weight in zip(self.variables, weights, strict=True):
            np.copyto(var.value, weight)


def build(
    features: int, classes: int, rng: np.random.Generator, loss: str | None = None,
    activation: str = "relu",
) -> TorchLearner:  # fmt: skip
    """McMahan et al.'s 2NN (two hidden layers of 200), as a torch module."""
    torch.manual_seed(int(rng.integers(2**31)))  # the job's seed decides the start
    torch.set_num_threads(1)  # one core per node, as psgd's numpy models use
    module = nn.Sequential(
        nn.Linear(features, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
        nn.Linear(200, classes),
    )  # fmt: skip
    return TorchLearner(module, nn.functional.cross_entropy)
