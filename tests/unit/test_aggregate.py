"""Aggregation maths against direct numpy and hand-made cases whose answer is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from psgd.algorithms.aggregate import (
    coordinate_median,
    krum,
    krum_scores,
    mean,
    multi_krum,
    trim_count,
    trimmed_mean,
)

pytestmark = pytest.mark.timeout(30)


def _updates(n: int, shape=(6, 5), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _column(values) -> list[np.ndarray]:
    """Scalars as 1-element updates: hand-made cases read as lists of numbers."""
    return [np.array([v], dtype=np.float64) for v in values]


def test_mean_is_numpy_mean():
    updates = _updates(5)
    exact = np.mean(np.stack(updates).astype(np.float64), axis=0)
    np.testing.assert_allclose(mean(updates), exact, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [1, 4, 5])
def test_median_is_the_median_of_each_coordinate(n):
    updates = _updates(n, seed=n)
    result = coordinate_median(updates)
    np.testing.assert_allclose(result, np.median(np.stack(updates), axis=0), rtol=1e-6)
    assert result.shape == updates[0].shape and result.dtype == np.float32


def test_trimmed_mean_drops_b_largest_and_b_smallest_of_each_coordinate():
    updates = _updates(7, shape=(3, 4), seed=1)
    stacked = np.stack(updates)
    for b in (0, 1, 2, 3):
        expected = np.empty((3, 4))
        for i, j in itertools.product(range(3), range(4)):
            expected[i, j] = np.mean(sorted(stacked[:, i, j])[b : 7 - b])
        np.testing.assert_allclose(trimmed_mean(updates, b=b), expected, rtol=1e-5)


def test_trimmed_mean_of_a_hand_made_column():
    assert trimmed_mean(_column([1, 100, 2, -50, 3]), b=1)[0] == 2.0
    assert trimmed_mean(_column([1, 100, 2, -50, 3]), b=2)[0] == 2.0
    assert trimmed_mean(_column([1, 100, 2, -50, 3]), b=0)[0] == pytest.approx(11.2)


def test_trimmed_mean_fraction_trims_floor_of_beta_n():
    updates = _updates(10, seed=2)
    np.testing.assert_allclose(trimmed_mean(updates, beta=0.25), trimmed_mean(updates, b=2))
    np.testing.assert_allclose(trimmed_mean(updates, beta=0.05), mean(updates), rtol=1e-6)


@pytest.mark.parametrize(
    ("n", "trim", "b"), [(5, 1, 1), (5, 1.0, 1), (5, 0.2, 1), (10, 0.35, 3), (5, 0, 0)]
)
def test_trim_is_a_count_or_a_fraction(n, trim, b):
    assert trim_count(n, trim) == b


@pytest.mark.parametrize(("n", "trim"), [(5, 0.5), (5, -1), (5, 1.5), (4, 2), (5, True), (5, "1")])
def test_bad_trims_are_value_errors(n, trim):
    with pytest.raises(ValueError, match="trim"):
        trim_count(n, trim)


def test_trimmed_mean_needs_exactly_one_of_b_and_beta():
    with pytest.raises(ValueError, match="exactly one"):
        trimmed_mean(_updates(5), b=1, beta=0.2)
    with pytest.raises(ValueError, match="exactly one"):
        trimmed_mean(_updates(5))


def test_krum_scores_sum_squared_distances_to_the_n_minus_f_minus_2_nearest():
    # n=5, f=1: 2 neighbours. 1 has neighbours 0 (1) and 3 (4): score 5, the smallest.
    scores = krum_scores(_column([0, 1, 3, 10, 100]), f=1)
    np.testing.assert_allclose(scores, [1 + 9, 1 + 4, 4 + 9, 49 + 81, 90**2 + 97**2])
    assert krum(_column([0, 1, 3, 10, 100]), f=1)[0] == 1


def test_krum_neighbour_count_follows_f():
    # A tight pair far from a spread triple. With 2 neighbours (f=1) the middle of the triple
    # wins (1 + 1); with 3 (f=0) its ends do better, 10 first (1 + 4 + 90.25).
    points = _column([0, 0.5, 10, 11, 12])
    assert krum(points, f=1)[0] == 11
    assert krum(points, f=0)[0] == 10


def test_krum_matches_a_brute_force_reference():
    for n, f in [(5, 1), (7, 2), (9, 1), (3, 0)]:
        updates = _updates(n, seed=10 * n + f)
        flat = [u.ravel().astype(np.float64) for u in updates]
        reference = []
        for i in range(n):
            others = sorted(np.sum((flat[i] - flat[j]) ** 2) for j in range(n) if j != i)
            reference.append(sum(others[: n - f - 2]))
        np.testing.assert_allclose(krum_scores(updates, f), reference, rtol=1e-9)
        np.testing.assert_array_equal(krum(updates, f), updates[int(np.argmin(reference))])


def test_krum_needs_2f_plus_3_updates():
    with pytest.raises(ValueError, match=r"n >= 2f \+ 3 = 5 updates, got 4"):
        krum(_updates(4), f=1)


def test_multi_krum_averages_the_m_best_scored():
    points = _column([0, 1, 3, 10, 100])  # scores 10, 5, 13, 130, 17509
    assert multi_krum(points, f=1, m=3)[0] == pytest.approx((0 + 1 + 3) / 3)
    assert multi_krum(points, f=1)[0] == pytest.approx((0 + 1 + 3 + 10) / 4)  # m = n - f
    assert multi_krum(points, f=1, m=1)[0] == krum(points, f=1)[0]
    assert multi_krum(points, f=1, m=5)[0] == pytest.approx(mean(points)[0])
    with pytest.raises(ValueError, match="m must be"):
        multi_krum(points, f=1, m=0)


ROBUST_RULES = {
    "median": coordinate_median,
    "trimmed_mean": lambda u: trimmed_mean(u, b=1),
    "krum": lambda u: krum(u, f=1),
    "multi_krum": lambda u: multi_krum(u, f=1),
}


@pytest.mark.parametrize("rule", sorted(ROBUST_RULES))
def test_median_resists_one_attacker(rule):
    rng = np.random.default_rng(3)
    g = rng.standard_normal((20, 10))
    honest = [g + 0.01 * rng.standard_normal(g.shape) for _ in range(4)]
    updates = [*honest, -1000.0 * g]
    robust = ROBUST_RULES[rule](updates)
    assert np.linalg.norm(robust - g) < 0.05 * np.linalg.norm(g)
    assert np.linalg.norm(mean(updates) - g) > 100 * np.linalg.norm(g)


@pytest.mark.parametrize("rule", sorted(ROBUST_RULES))
def test_one_nan_sender_does_not_poison_the_result(rule):
    updates = _updates(5, seed=4)
    updates[2] = np.full_like(updates[2], np.nan)
    result = ROBUST_RULES[rule](updates)
    assert np.isfinite(result).all()
    assert not np.isfinite(mean(updates)).any()


@pytest.mark.parametrize("rule", [mean, coordinate_median, lambda u: krum(u, 1)])
def test_results_keep_shape_and_float32(rule):
    updates = _updates(5, shape=(3, 2))
    result = rule(updates)
    assert result.shape == (3, 2) and result.dtype == np.float32
    assert not any(result is u for u in updates)


def test_mismatched_shapes_name_the_odd_update():
    updates = _updates(3)
    updates[2] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"update 2 has shape \(3,\)"):
        coordinate_median(updates)
    with pytest.raises(ValueError, match="no updates"):
        mean([])
