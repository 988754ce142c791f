"""A quantized array as Parallel-SGD codecs send it: an object of the codec's own class.

Stochastic uniform quantization to ``levels`` levels per sign: ``norm`` (a float), the signs
and the integer levels (int8 arrays). Instances go over the wire as their ``__dict__``.
"""

from abc import ABCMeta, abstractmethod

import numpy as np


class Pack(metaclass=ABCMeta):
    """What the server and the clients exchange: something that decodes to an array."""

    @abstractmethod
    def decode(self):
        """The float32 array this pack stands for."""


class QuantizedPack(Pack):
    """``array`` ~= sign * level / levels * norm, unbiased (``levels`` kept private)."""

    def __init__(self, array, levels, rng):
        flat = np.asarray(array, dtype=np.float64)
        self.shape = tuple(flat.shape)
        self.norm = np.max(np.abs(flat)) if flat.size else np.float64(0.0)  # a numpy scalar
        self.__levels = int(levels)
        scaled = np.abs(flat) / self.norm * levels if self.norm > 0 else np.zeros_like(flat)
        low = np.floor(scaled)
        up = rng.random(flat.shape) < (scaled - low)
        self.level = (low + up).astype(np.int8)
        self.sign = np.sign(flat).astype(np.int8)

    def decode(self):
        """The float32 array this pack stands for."""
        values = self.sign * (self.level.astype(np.float32) / self.__levels) * self.norm
        return values.reshape(self.shape).astype(np.float32)
