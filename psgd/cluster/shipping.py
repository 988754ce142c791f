"""What a worker's JOB carries: its blocks and the test set (images as grey levels), model files.

The grey levels of the training set and the packed test features are made once per job, so
every worker's JOB shares the same arrays (the frames reference them; nothing is copied per
worker but the worker's own rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from psgd.data.grey_levels import PACKED_KEY, grey_levels, pack_features
from psgd.train.prepare import PreparedJob

__all__ = ["DataShipment", "model_files"]


class DataShipment:
    """One job's data as shipped: ``worker_data(node)`` for each worker in turn."""

    def __init__(self, job: PreparedJob) -> None:
        self.job = job
        self._packed: tuple[np.ndarray | None, Any] | None = None

    def worker_data(self, node: int) -> tuple[dict[int, tuple[Any, np.ndarray]], tuple[Any, Any]]:
        """``(blocks, test)`` for ``node``: ``{block: (x, y)}`` and ``(x_test, y_test)``."""
        data = self.job.dataset
        if self._packed is None:
            self._packed = (grey_levels(data.x_train), pack_features(data.x_test))
        levels, x_test = self._packed
        blocks: dict[int, tuple[Any, np.ndarray]] = dict(self.job.node_blocks(node, levels))
        if levels is not None:
            blocks = {b: ({PACKED_KEY: x}, y) for b, (x, y) in blocks.items()}
        return blocks, (x_test, data.y_test)


def model_files(job: PreparedJob) -> list[Path]:
    """A user model's builder file, shipped with the codecs (built-in models need none)."""
    from psgd.nn.learner import user_model_file
    from psgd.nn.zoo import MODELS

    spec = job.spec.model
    if not isinstance(spec, str) or spec in MODELS or job.spec.mlp_sizes() is not None:
        return []
    path = user_model_file(spec, job.cwd)
    return [path] if path is not None and path.is_file() else []
