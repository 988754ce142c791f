"""Partitions of a labelled dataset between workers: structure, reproducibility, skew."""

from __future__ import annotations

import numpy as np
import pytest

from psgd.data import PARTITIONS, load_mnist, partition
from psgd.errors import ConfigError

# 10 classes of 100 samples, interleaved so that sorting by label actually moves samples.
BALANCED = np.tile(np.arange(10), 100)


@pytest.fixture(scope="module")
def mnist_labels() -> np.ndarray:
    return load_mnist().y_train


def labels_per_part(labels: np.ndarray, parts: list[np.ndarray]) -> list[int]:
    return [len(np.unique(labels[part])) for part in parts]


def mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean Shannon entropy (bits) of each part's label distribution."""
    entropies = []
    for part in parts:
        p = np.bincount(labels[part], minlength=10) / len(part)
        p = p[p > 0]
        entropies.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(entropies))


def split(labels, n_parts, scheme, seed=0, **options):
    return partition(labels, n_parts, scheme, rng=np.random.default_rng(seed), **options)


def test_partitions_lists_the_five_schemes():
    assert PARTITIONS == ("iid", "noniid", "shards", "dirichlet", "unequal")


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_every_scheme_gives_disjoint_int64_parts_covering_all_samples(scheme, mnist_labels):
    parts = split(mnist_labels, 10, scheme)
    assert len(parts) == 10
    assert all(part.dtype == np.int64 and part.ndim == 1 for part in parts)
    everything = np.concatenate(parts)
    assert len(everything) == len(mnist_labels)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(mnist_labels)))


@pytest.mark.parametrize("scheme", PARTITIONS)
def test_every_scheme_is_reproducible_from_the_seed(scheme):
    first, second = split(BALANCED, 7, scheme, seed=3), split(BALANCED, 7, scheme, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("scheme", ["iid", "shards", "dirichlet", "unequal"])
def test_random_schemes_differ_between_seeds(scheme):
    first, second = split(BALANCED, 7, scheme, seed=3), split(BALANCED, 7, scheme, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_partition_accepts_rng_positionally():
    parts = partition(BALANCED, 4, "iid", np.random.default_rng(0))
    assert len(parts) == 4


def test_iid_parts_differ_in_size_by_at_most_one_and_see_every_label(mnist_labels):
    parts = split(mnist_labels, 7, "iid")
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert labels_per_part(mnist_labels, parts) == [10] * 7
    assert mean_label_entropy(mnist_labels, parts) > 3.3  # log2(10) = 3.32


def test_noniid_gives_each_part_one_label_when_parts_match_classes():
    parts = split(BALANCED, 10, "noniid")
    assert labels_per_part(BALANCED, parts) == [1] * 10


def test_noniid_parts_of_mnist_see_few_labels(mnist_labels):
    counts = labels_per_part(mnist_labels, split(mnist_labels, 10, "noniid"))
    assert max(counts) <= 3 and np.mean(counts) <= 2.0


def test_shards_with_two_per_part_give_at_most_two_labels_per_part():
    parts = split(BALANCED, 20, "shards", shards_per_part=2)
    assert all(len(part) == 50 for part in parts)
    assert max(labels_per_part(BALANCED, parts)) <= 2


def test_shards_of_mnist_mostly_hold_two_labels(mnist_labels):
    parts = split(mnist_labels, 100, "shards", shards_per_part=2)
    counts = labels_per_part(mnist_labels, parts)
    # A shard straddling a class boundary carries two labels, so a few parts have 3.
    assert max(counts) <= 4 and np.mean(counts) < 2.2


def test_dirichlet_small_alpha_is_more_skewed_than_large_alpha(mnist_labels):
    skewed = mean_label_entropy(mnist_labels, split(mnist_labels, 10, "dirichlet", alpha=0.1))
    uniform = mean_label_entropy(mnist_labels, split(mnist_labels, 10, "dirichlet", alpha=100))
    assert skewed < 2.0 < 3.2 < uniform


def test_dirichlet_parts_reach_min_size(mnist_labels):
    parts = split(mnist_labels, 50, "dirichlet", alpha=0.3, min_size=100)
    assert min(len(part) for part in parts) >= 100


def test_dirichlet_gives_up_after_max_tries_with_a_config_error():
    with pytest.raises(ConfigError, match="no draw in 5 tries"):
        split(BALANCED, 100, "dirichlet", alpha=0.01, min_size=10, max_tries=5)


def test_dirichlet_impossible_min_size_is_refused_before_drawing():
    with pytest.raises(ConfigError, match="need 2000 samples, there are 1000"):
        split(BALANCED, 10, "dirichlet", min_size=200)


def test_unequal_sizes_vary_and_every_part_has_a_sample(mnist_labels):
    parts = split(mnist_labels, 20, "unequal", sigma=1.5)
    sizes = np.array([len(part) for part in parts])
    assert sizes.min() >= 1 and sizes.max() > 3 * sizes.min()
    largest = parts[int(np.argmax(sizes))]
    assert len(np.unique(mnist_labels[largest])) == 10  # sizes are unequal, labels still IID


def test_unequal_with_sigma_zero_is_equal_sizes():
    sizes = [len(part) for part in split(BALANCED, 7, "unequal", sigma=0.0)]
    assert max(sizes) - min(sizes) <= 1


def test_unequal_with_one_sample_per_part_still_covers_everything():
    parts = split(np.arange(5) % 2, 5, "unequal", sigma=5.0)
    assert [len(part) for part in parts] == [1] * 5


def test_unequal_survives_a_huge_sigma():
    sizes = [len(part) for part in split(BALANCED, 10, "unequal", sigma=500.0)]
    assert min(sizes) >= 1 and sum(sizes) == len(BALANCED)


# --- bad arguments ----------------------------------------------------------------------------


def test_unknown_scheme_names_it_and_the_valid_ones():
    with pytest.raises(ConfigError, match="'pathological'.*iid, noniid, shards, dirichlet"):
        split(BALANCED, 4, "pathological")


@pytest.mark.parametrize("n_parts", [0, -1, 1001, 2.0, True])
def test_bad_part_count_is_a_config_error(n_parts):
    with pytest.raises(ConfigError, match="'iid': n_parts"):
        split(BALANCED, n_parts, "iid")


@pytest.mark.parametrize(
    ("scheme", "options", "message"),
    [
        ("iid", {"alpha": 0.5}, "unknown option 'alpha'"),
        ("shards", {"shard_per_part": 2}, "unknown option 'shard_per_part' .shards_per_part"),
        ("shards", {"shards_per_part": 0}, "shards_per_part must be an integer >= 1"),
        ("shards", {"shards_per_part": 200}, "more than the 1000 samples"),
        ("dirichlet", {"alpha": 0.0}, "alpha must be a finite number > 0"),
        ("dirichlet", {"alpha": float("nan")}, "alpha must be a finite number"),
        ("dirichlet", {"min_size": -1}, "min_size must be an integer >= 0"),
        ("unequal", {"sigma": -1.0}, "sigma must be a finite number >= 0"),
        ("unequal", {"sigma": "1"}, "sigma must be a finite number"),
    ],
)
def test_bad_option_is_a_config_error_naming_scheme_and_option(scheme, options, message):
    with pytest.raises(ConfigError, match=f"'{scheme}'.*{message}"):
        split(BALANCED, 10, scheme, **options)


def test_missing_rng_is_a_config_error():
    with pytest.raises(ConfigError, match="rng must be an np.random.Generator"):
        partition(BALANCED, 4, "iid")


def test_float_or_two_dimensional_labels_are_refused():
    with pytest.raises(ConfigError, match="1-D integer array"):
        split(BALANCED.astype(float), 4, "iid")
    with pytest.raises(ConfigError, match="1-D integer array"):
        split(BALANCED.reshape(100, 10), 4, "iid")
