"""Aggregation rules: how a server combines the updates of one round, as plain functions.

Every rule takes ``updates``, a non-empty sequence of arrays of one shape (one per worker), and
returns one array of that shape and of the first update's dtype. The robust rules tolerate up to
a known number of arbitrary (Byzantine) updates:

- ``mean``: the plain average; a single update can move it anywhere.
- ``coordinate_median``: the median of each coordinate.
- ``trimmed_mean``: per coordinate, drop the ``b`` largest and ``b`` smallest values, average
  the rest (Yin et al. 2018).
- ``krum``: the update whose ``n - f - 2`` nearest neighbours are closest, in summed squared
  distance (Blanchard et al. 2017).
- ``multi_krum``: the average of the ``m`` updates with the best Krum scores.

NaN sorts as the largest value in the coordinate-wise rules (so one NaN-sending worker is
trimmed away like a huge one) and gives an infinite Krum score (never selected).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "coordinate_median",
    "krum",
    "krum_scores",
    "mean",
    "multi_krum",
    "trim_count",
    "trimmed_mean",
]


def _stack(updates: Sequence[np.ndarray], rule: str) -> np.ndarray:
    """``updates`` as one ``(n, *shape)`` array, or a ``ValueError`` naming the odd one out."""
    if len(updates) == 0:
        raise ValueError(f"{rule}: no updates to aggregate")
    shape = np.shape(updates[0])
    for index, update in enumerate(updates):
        if np.shape(update) != shape:
            raise ValueError(
                f"{rule}: update {index} has shape {np.shape(update)}, update 0 has {shape}"
            )
    return np.stack([np.asarray(u) for u in updates])


def _dtype(updates: Sequence[np.ndarray]) -> np.dtype:
    dtype = np.asarray(updates[0]).dtype
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def mean(updates: Sequence[np.ndarray]) -> np.ndarray:
    """The coordinate-wise average of ``updates``."""
    stacked = _stack(updates, "mean")
    return stacked.mean(axis=0, dtype=np.float64).astype(_dtype(updates))


def coordinate_median(updates: Sequence[np.ndarray]) -> np.ndarray:
    """The median of each coordinate (the mean of the two middle values when n is even)."""
    ordered = np.sort(_stack(updates, "coordinate_median"), axis=0)
    n = len(ordered)
    middle = ordered[(n - 1) // 2 : n // 2 + 1]
    return middle.mean(axis=0, dtype=np.float64).astype(_dtype(updates))


def trim_count(n: int, trim: float) -> int:
    """How many values to drop at each end: ``trim`` itself when whole, else ``floor(trim * n)``.

    Raises ``ValueError`` unless ``trim`` is a whole number ``b >= 0`` or a fraction
    ``0 < beta < 0.5``, and unless ``2 * b < n`` (something must remain).
    """
    if isinstance(trim, bool) or not isinstance(trim, (int, float)):
        raise ValueError(f"trim: expected a count b or a fraction beta, got {trim!r}")
    if float(trim).is_integer() and trim >= 0:
        b = int(trim)
    elif 0 < trim < 0.5:
        b = math.floor(trim * n)
    else:
        raise ValueError(
            f"trim: expected a whole count b >= 0 or a fraction 0 < beta < 0.5, got {trim!r}"
        )
    if 2 * b >= n:
        raise ValueError(f"trim: dropping {b} from each end of {n} updates leaves none")
    return b


def trimmed_mean(
    updates: Sequence[np.ndarray], b: int | None = None, beta: float | None = None
) -> np.ndarray:
    """Per coordinate, the mean after dropping the ``b`` largest and ``b`` smallest values.

    Give either ``b`` (a count) or ``beta`` (a fraction of ``n``, ``b = floor(beta * n)``).
    """
    if (b is None) == (beta is None):
        raise ValueError("trimmed_mean: give exactly one of b (a count) or beta (a fraction)")
    n = len(updates)
    if b is not None:
        count = trim_count(n, b)
    elif beta is not None and 0 <= beta < 0.5:
        count = math.floor(beta * n)
    else:
        raise ValueError(f"trimmed_mean: beta must be in [0, 0.5), got {beta!r}")
    ordered = np.sort(_stack(updates, "trimmed_mean"), axis=0)
    kept = ordered[count : n - count]
    return kept.mean(axis=0, dtype=np.float64).astype(_dtype(updates))


def _check_krum(n: int, f: int, rule: str) -> None:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"{rule}: f must be a whole number >= 0, got {f!r}")
    if n < 2 * f + 3:
        raise ValueError(
            f"{rule}: tolerating f={f} Byzantine updates needs n >= 2f + 3 = {2 * f + 3} "
            f"updates, got {n}"
        )


def krum_scores(updates: Sequence[np.ndarray], f: int) -> np.ndarray:
    """Each update's Krum score: summed squared distance to its ``n - f - 2`` nearest others.

    Computed in float64; an update with a non-finite distance scores ``inf``.
    """
    n = len(updates)
    _check_krum(n, f, "krum")
    flat = _stack(updates, "krum").reshape(n, -1).astype(np.float64)
    distances = np.empty((n, n))
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(n):
            distances[i] = np.sum((flat - flat[i]) ** 2, axis=1)
    distances[~np.isfinite(distances)] = np.inf
    np.fill_diagonal(distances, np.inf)  # a vector is not its own neighbour
    nearest = np.sort(distances, axis=1)[:, : n - f - 2]
    return nearest.sum(axis=1)


def krum(updates: Sequence[np.ndarray], f: int) -> np.ndarray:
    """The update with the smallest Krum score (the lowest index on ties); needs n >= 2f + 3."""
    best = int(np.argmin(krum_scores(updates, f)))
    return np.array(updates[best], copy=True)


def multi_krum(updates: Sequence[np.ndarray], f: int, m: int | None = None) -> np.ndarray:
    """The average of the ``m`` updates with the smallest Krum scores (default ``m = n - f``).

    ``m = 1`` is Krum; ``m = n`` is the mean. Needs n >= 2f + 3.
    """
    n = len(updates)
    m = n - f if m is None else m
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"multi_krum: m must be a whole number in 1..{n}, got {m!r}")
    chosen = np.argsort(krum_scores(updates, f), kind="stable")[:m]
    return mean([updates[i] for i in sorted(chosen)])
