"""A quantized array as Parallel-SGD codecs send it: an object of the codec's own class.

Stochastic uniform quantization to ``levels`` levels per sign: ``norm`` (a float), the signs
and the integer levels (int8 arrays). Instances go over the wire as their ``__dict__``.
"""

import numpy as np


class QuantizedPack:
    """``array`` ~= sign * level / levels * norm, unbiased."""

    def __init__(self, array, levels, rng):
        flat = np.asarray(array, dtype=np.float64)
        self.shape = tuple(flat.shape)
        self.norm = float(np.max(np.abs(flat))) if flat.size else 0.0
        self.levels = int(levels)
        scaled = np.abs(flat) / self.norm * self.levels if self.norm > 0 else np.zeros_like(flat)
        low = np.floor(scaled)
        up = rng.random(flat.shape) < (scaled - low)
        self.level = (low + up).astype(np.int8)
        self.sign = np.sign(flat).astype(np.int8)

    def decode(self):
        """The float32 array this pack stands for."""
        values = self.sign * (self.level.astype(np.float32) / self.levels) * self.norm
        return values.reshape(self.shape).astype(np.float32)
