"""Split a labelled dataset between workers: IID, label-sorted, shards, Dirichlet, unequal sizes.

Every scheme returns disjoint index arrays that together cover every sample, each array
sorted ascending (the order inside a part carries no meaning: trainers shuffle per epoch).
Randomness comes only from the `rng` passed in, so a seed reproduces a split exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from psgd.errors import ConfigError

PARTITIONS: tuple[str, ...] = ("iid", "noniid", "shards", "dirichlet", "unequal")

Split = Callable[..., list[np.ndarray]]


def partition(
    labels: np.ndarray,
    n_parts: int,
    scheme: str = "iid",
    rng: np.random.Generator | None = None,
    **options: Any,
) -> list[np.ndarray]:
    """Split sample indices ``0 .. len(labels)-1`` into `n_parts` disjoint parts.

    Parameters
    ----------
    labels : np.ndarray
        Shape ``(n,)``, integer class labels.
    n_parts : int
        Number of parts, between 1 and ``n``.
    scheme : str
        One of `PARTITIONS`:

        - ``"iid"``: a random permutation cut into equal parts; the ``n % n_parts`` spare
          samples go one each to the first parts (sizes differ by at most one).
        - ``"noniid"``: samples sorted by label and cut into contiguous equal parts, as in
          Parallel-SGD; each part sees one or two labels when parts are no bigger than classes.
        - ``"shards"`` (``shards_per_part=2``): samples sorted by label, cut into
          ``n_parts * shards_per_part`` equal shards, each part gets `shards_per_part`
          random shards (McMahan et al., 2017). A shard holds one label unless it
          straddles a class boundary.
        - ``"dirichlet"`` (``alpha=0.5, min_size=10, max_tries=1000``): each class is split
          between the parts in proportions drawn from Dirichlet(alpha); smaller alpha gives
          more skew. Proportions are redrawn until every part has `min_size` samples.
        - ``"unequal"`` (``sigma=1.0``): IID labels, part sizes proportional to
          lognormal(0, sigma) draws, every part at least one sample.
    rng : np.random.Generator
        Source of all randomness (required, also by ``"noniid"``, for uniformity).
    **options
        Scheme options listed above.

    Returns
    -------
    list of np.ndarray
        `n_parts` int64 index arrays into `labels`.

    Raises
    ------
    ConfigError
        For an unknown scheme or option, a bad option value, `n_parts` outside
        ``[1, n]``, a missing `rng`, or Dirichlet proportions that never meet `min_size`.
    """
    if scheme == "natural":
        raise ConfigError(
            "partition scheme 'natural' splits by writer or user: use natural_partition(groups, "
            "n_parts) with a dataset that has groups (LEAF data)"
        )
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"unknown partition scheme {scheme!r}: expected one of {', '.join(PARTITIONS)}"
        )
    split, defaults = _SCHEMES[scheme]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "no options"
        raise ConfigError(f"partition scheme {scheme!r}: unknown option {unknown[0]!r} ({valid})")
    labels = _check_labels(scheme, labels)
    n = len(labels)
    if isinstance(n_parts, bool) or not isinstance(n_parts, (int, np.integer)):
        raise ConfigError(
            f"partition scheme {scheme!r}: n_parts must be an integer, got {n_parts!r}"
        )
    if not 1 <= n_parts <= n:
        raise ConfigError(
            f"partition scheme {scheme!r}: n_parts must be between 1 and {n} (the number of "
            f"samples), got {n_parts}"
        )
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"partition scheme {scheme!r}: rng must be an np.random.Generator "
            f"(e.g. np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    parts = split(labels, int(n_parts), rng, **{**defaults, **options})
    return [np.sort(part).astype(np.int64, copy=False) for part in parts]


def _check_labels(scheme: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ConfigError(
            f"partition scheme {scheme!r}: labels must be a 1-D integer array, "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    return labels


def _iid(labels: np.ndarray, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(len(labels)), n_parts)


def _noniid(labels: np.ndarray, n_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(np.argsort(labels, kind="stable"), n_parts)


def _shards(
    labels: np.ndarray, n_parts: int, rng: np.random.Generator, shards_per_part: int
) -> list[np.ndarray]:
    per_part = _int_option("shards", "shards_per_part", shards_per_part, minimum=1)
    n_shards = n_parts * per_part
    if n_shards > len(labels):
        raise ConfigError(
            f"partition scheme 'shards': {n_parts} parts x {per_part} shards_per_part = "
            f"{n_shards} shards, more than the {len(labels)} samples"
        )
    shards = np.array_split(np.argsort(labels, kind="stable"), n_shards)
    order = rng.permutation(n_shards).reshape(n_parts, per_part)
    return [np.concatenate([shards[s] for s in row]) for row in order]


def _dirichlet(
    labels: np.ndarray,
    n_parts: int,
    rng: np.random.Generator,
    alpha: float,
    min_size: int,
    max_tries: int,
) -> list[np.ndarray]:
    alpha = _float_option("dirichlet", "alpha", alpha, positive=True)
    min_size = _int_option("dirichlet", "min_size", min_size, minimum=0)
    max_tries = _int_option("dirichlet", "max_tries", max_tries, minimum=1)
    if min_size * n_parts > len(labels):
        raise ConfigError(
            f"partition scheme 'dirichlet': {n_parts} parts of min_size {min_size} need "
            f"{min_size * n_parts} samples, there are {len(labels)}"
        )
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    class_sizes = np.array([len(m) for m in members])
    for _ in range(max_tries):
        proportions = rng.dirichlet(np.full(n_parts, alpha), size=len(members))
        counts = _counts_from_proportions(proportions, class_sizes)
        if counts.sum(axis=0).min() >= min_size:
            break
    else:
        raise ConfigError(
            f"partition scheme 'dirichlet': no draw in {max_tries} tries gave every part "
            f"min_size={min_size} samples with alpha={alpha}; raise alpha or lower min_size"
        )
    pieces = [
        np.split(rng.permutation(idx), np.cumsum(count)[:-1])
        for idx, count in zip(members, counts, strict=True)
    ]
    return [np.concatenate([p[j] for p in pieces]) for j in range(n_parts)]


def _counts_from_proportions(proportions: np.ndarray, class_sizes: np.ndarray) -> np.ndarray:
    """(classes, parts) sample counts: cut each class at the floors of its cumulative shares."""
    bounds = np.floor(np.cumsum(proportions, axis=1) * class_sizes[:, None]).astype(np.int64)
    bounds = np.minimum(bounds, class_sizes[:, None])
    bounds[:, -1] = class_sizes
    return np.diff(bounds, axis=1, prepend=0)


def _unequal(
    labels: np.ndarray, n_parts: int, rng: np.random.Generator, sigma: float
) -> list[np.ndarray]:
    sigma = _float_option("unequal", "sigma", sigma, positive=False)
    n = len(labels)
    # exp(z - max z) is a lognormal draw rescaled, which cannot overflow for large sigma.
    z = rng.normal(0.0, sigma, n_parts)
    weights = np.exp(z - z.max())
    quotas = weights / weights.sum() * (n - n_parts)
    sizes = np.floor(quotas).astype(np.int64)
    spare = (n - n_parts) - int(sizes.sum())
    sizes[np.argsort(sizes - quotas, kind="stable")[:spare]] += 1  # largest remainders
    return np.split(rng.permutation(n), np.cumsum(sizes + 1)[:-1])


def _int_option(scheme: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(
            f"partition scheme {scheme!r}: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def _float_option(scheme: str, name: str, value: Any, positive: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not np.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(
            f"partition scheme {scheme!r}: {name} must be a finite number {bound}, got {value!r}"
        )
    return float(value)


_SCHEMES: dict[str, tuple[Split, dict[str, Any]]] = {
    "iid": (_iid, {}),
    "noniid": (_noniid, {}),
    "shards": (_shards, {"shards_per_part": 2}),
    "dirichlet": (_dirichlet, {"alpha": 0.5, "min_size": 10, "max_tries": 1000}),
    "unequal": (_unequal, {"sigma": 1.0}),
}


def natural_partition(groups: np.ndarray | None, n_parts: int, name: str = "") -> list[np.ndarray]:
    """One part per writer or user (``groups`` holds each row's), in order of first appearance.

    With fewer parts than users, users are dealt to the parts in turn (part ``i`` gets users
    ``i, i + n_parts, ...``), so each part still holds whole users.

    Raises
    ------
    ConfigError
        The dataset has no groups, or fewer users than parts.
    """
    if groups is None:
        raise ConfigError(
            f"--partition natural: dataset {name!r} does not say who wrote each sample "
            "(LEAF data does: --dataset leaf:PATH)"
        )
    users, first = np.unique(groups, return_index=True)
    ordered = users[np.argsort(first, kind="stable")]
    if not 1 <= n_parts <= len(ordered):
        raise ConfigError(
            f"--partition natural: dataset {name!r} has {len(ordered)} writers/users, cannot "
            f"make {n_parts} parts (use --node_count {len(ordered)} for one client each)"
        )
    part_of_user = np.empty(int(users.max()) + 1, np.int64)
    part_of_user[ordered] = np.arange(len(ordered)) % n_parts
    parts = part_of_user[groups]
    return [np.flatnonzero(parts == i) for i in range(n_parts)]
