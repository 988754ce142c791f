"""Byzantine-robust parameter servers: ``GradientPSServer`` with a robust ``aggregate``.

Use with ``ps.GradientPSClient`` workers, e.g.
``--codec ps.GradientPSClient --ps-codec robust.KrumServer --param f=1``. Each round the server
waits for every worker's step, as ``GradientPSServer`` does, and replies with:

- ``MedianServer``: the coordinate-wise median.
- ``TrimmedMeanServer``: the coordinate-wise mean without the ``b`` largest and ``b`` smallest
  values; ``--param trim=b`` (a count) or ``trim=0.2`` (a fraction of the workers), default
  ``f``.
- ``KrumServer``: the step of the worker whose ``n - f - 2`` nearest neighbours are closest.
- ``MultiKrumServer``: the mean of the ``m`` steps with the best Krum scores,
  ``--param m=M`` (default ``n - f``).

``--param f=F`` is the number of Byzantine workers assumed (default 1); Krum needs
``n >= 2f + 3`` workers. Every trainable variable has its own codec instance, so Krum's
distances, and its choice of worker, are per layer: a layer's weights and its bias may come
from different workers. Each choice is still one that Krum's bound covers for that layer;
distances over the whole model would need every layer's step in one codec, which the one
codec per variable contract does not offer. The maths is in ``psgd.algorithms.aggregate``.
"""

from __future__ import annotations

import numpy as np
from ps import GradientPSServer

from psgd import ConfigError, GlobalSettings
from psgd.algorithms.aggregate import coordinate_median, krum, multi_krum, trim_count, trimmed_mean

DEFAULT_F = 1


def _byzantine_count(server: str, need_krum: bool) -> int:
    """``--param f`` checked against the cluster size; errors name the server and the fix."""
    f = GlobalSettings.get_params("f", DEFAULT_F)
    n = GlobalSettings.get_default().node_count
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ConfigError(f"{server}: --param f must be a whole number >= 0, got {f!r}")
    if need_krum and n < 2 * f + 3:
        raise ConfigError(
            f"{server}: tolerating f={f} Byzantine workers needs node_count >= 2f + 3 = "
            f"{2 * f + 3}, got {n}; lower --param f or add workers"
        )
    return f


class MedianServer(GradientPSServer):
    """Replies with the coordinate-wise median of the round's steps."""

    params = {}  # reads no --param

    def aggregate(self, updates: list[np.ndarray]) -> np.ndarray:
        return coordinate_median(updates)


class TrimmedMeanServer(GradientPSServer):
    """Replies with the coordinate-wise trimmed mean (``--param trim``, default ``f``)."""

    params = {
        "trim": ("f", "steps trimmed at each end per coordinate"),
        "f": (DEFAULT_F, "Byzantine workers tolerated"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        trim = GlobalSettings.get_params("trim", None)
        if trim is None:
            trim = _byzantine_count("TrimmedMeanServer", need_krum=False)
        try:
            self.b = trim_count(GlobalSettings.get_default().node_count, trim)
        except ValueError as exc:
            raise ConfigError(f"TrimmedMeanServer: --param {exc}") from None

    def aggregate(self, updates: list[np.ndarray]) -> np.ndarray:
        return trimmed_mean(updates, b=self.b)


class KrumServer(GradientPSServer):
    """Replies with the Krum choice among the round's steps (``--param f``, default 1)."""

    params = {"f": (DEFAULT_F, "Byzantine workers tolerated (node_count >= 2f + 3)")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.f = _byzantine_count(type(self).__name__, need_krum=True)

    def aggregate(self, updates: list[np.ndarray]) -> np.ndarray:
        return krum(updates, self.f)


class MultiKrumServer(KrumServer):
    """Replies with the mean of the ``m`` best Krum-scored steps (``--param m``, default n - f)."""

    params = {"m": ("n - f", "best-scored steps averaged")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        n = GlobalSettings.get_default().node_count
        m = GlobalSettings.get_params("m", n - self.f)
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
            raise ConfigError(
                f"MultiKrumServer: --param m must be a whole number in 1..{n}, got {m!r}"
            )
        self.m = m

    def aggregate(self, updates: list[np.ndarray]) -> np.ndarray:
        return multi_krum(updates, self.f, self.m)
