"""The server's model: what parameter-server and EASGD server codecs hold, as a result.

A server codec that keeps the model (``AsyncPSServer``'s weights, ``EASGDServer``'s centre,
``GradientPSServer``'s copy of the weights every worker holds) says so with a method
``current_weights()`` returning its layer's array. When every layer's codec has one, the job's
server model is evaluated on the test set and saved as ``model.npz`` (the workers' models go
to ``model-node<i>.npz``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from psgd.train.sync import CodecSet

__all__ = ["server_weights"]


def server_weights(codecs: CodecSet) -> list[np.ndarray] | None:
    """Each layer's ``current_weights()``, or None when some codec keeps no model."""
    weights: list[Any] = []
    for codec in codecs.codecs:
        get = getattr(codec, "current_weights", None)
        value = get() if callable(get) else None
        if not isinstance(value, np.ndarray):
            return None
        weights.append(np.array(value, copy=True))
    return weights
