"""Numpy models: layers (dense, convolution, pooling, dropout), activations, losses, the
learner interface users implement to bring their own model, built-in models by name,
per-array optimizers and ``.npz`` model files.

>>> model = build_mlp([784, 128, 10], rng=np.random.default_rng(0))  # doctest: +SKIP
>>> loss = model.loss_and_grads(x, y)                                 # fills var.grad
>>> opts = [make_optimizer("adam", learning_rate=1e-3) for _ in model.variables]
>>> for var, opt in zip(model.variables, opts):
...     var.value -= opt.delta(var.grad)

Owns: the model maths, optimizers, model files, and BLAS thread limits (``psgd.nn.blas``).
May import: the contract (``psgd.errors``) and numpy only.
"""

import numpy as np

from psgd.nn.activations import ReLU, Sigmoid, Softmax, Tanh
from psgd.nn.conv import Conv2D, MaxPool2D
from psgd.nn.layers import Dense, Layer, Variable
from psgd.nn.learner import Learner
from psgd.nn.losses import LOSSES, MSE, BinaryCrossEntropy, Loss, SoftmaxCrossEntropy, make_loss
from psgd.nn.mixture import MixtureMLP
from psgd.nn.model import Sequential, build_mlp
from psgd.nn.model_io import init_weights, load_model, load_weights, save_model
from psgd.nn.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from psgd.nn.shaping import Dropout, Flatten, Reshape
from psgd.nn.zoo import MODELS, build_model


def build_learner(
    sizes: list[int], activation: str, components: int, rng: np.random.Generator
) -> Learner:
    """One MLP, or (``components`` > 1) a mixture of that many, initialised from ``rng``."""
    if components <= 1:
        return build_mlp(sizes, activation=activation, rng=rng)
    return MixtureMLP([build_mlp(sizes, activation=activation, rng=rng) for _ in range(components)])


__all__ = [
    "LOSSES",
    "MODELS",
    "BinaryCrossEntropy",
    "Conv2D",
    "Dropout",
    "Flatten",
    "MaxPool2D",
    "Reshape",
    "build_model",
    "init_weights",
    "load_weights",
    "make_loss",
    "MSE",
    "OPTIMIZERS",
    "Learner",
    "MixtureMLP",
    "build_learner",
    "Dense",
    "Layer",
    "Loss",
    "Optimizer",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "SoftmaxCrossEntropy",
    "Tanh",
    "Variable",
    "build_mlp",
    "load_model",
    "make_optimizer",
    "save_model",
]
