"""psgd.algorithms.compress: compressors round-trip, are (un)biased as documented, and small."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from psgd.algorithms.compress import (
    COMPRESSORS,
    PAYLOAD_KEY,
    QSGD,
    BlockCompression,
    ErrorFeedback,
    RandomK,
    Sign,
    TernGrad,
    TopK,
    decode,
    index_dtype,
    is_payload,
    k_of,
    majority_vote,
    make_compressor,
    pack_codes,
    random_indices,
    top_k_indices,
    unpack_codes,
)
from psgd.net import wire

#: Trainable values of the default MLP 784-128-128-10.
MODEL_SIZE = 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _wire_bytes(content) -> int:
    return wire.frames_size(wire.encode({}, content))


def _all_compressors():
    return [QSGD(levels=16), TernGrad(), Sign(), TopK(ratio=0.1), RandomK(ratio=0.1)]


# --------------------------------------------------------------------------- bit packing


@pytest.mark.parametrize("width", range(1, 33))
def test_packed_codes_round_trip_in_packbits_bit_order(width):
    rng = _rng(width)
    for count in (0, 1, 7, 8, 9, 101):
        codes = rng.integers(0, 1 << width, size=count, dtype=np.uint64).astype(np.uint32)
        packed = pack_codes(codes, width)
        assert packed.dtype == np.uint8 and packed.size == math.ceil(count * width / 8)
        shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
        bits = (codes[:, None].astype(np.uint64) >> shifts) & np.uint64(1)
        np.testing.assert_array_equal(packed, np.packbits(bits.astype(np.uint8).ravel()))
        np.testing.assert_array_equal(unpack_codes(packed, width, count), codes)


def test_unpacking_a_truncated_buffer_is_refused():
    packed = pack_codes(np.arange(10, dtype=np.uint32), 6)
    with pytest.raises(ValueError, match="expected 8 uint8 bytes"):
        unpack_codes(packed[:-1], 6, 10)


def test_index_dtype_is_the_smallest_that_holds_every_index():
    assert index_dtype(256) == np.uint8
    assert index_dtype(257) == np.uint16
    assert index_dtype(65536) == np.uint16
    assert index_dtype(65537) == np.uint32
    assert index_dtype(MODEL_SIZE) == np.uint32


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("compressor", _all_compressors(), ids=lambda c: c.name)
@pytest.mark.parametrize("shape", [(37, 5), (10,), (1,), (3, 4, 5), (0,)])
def test_every_compressor_round_trips_shape_and_float32(compressor, shape):
    x = _rng().standard_normal(shape)  # float64 in: computed and decoded in float32
    payload = compressor.encode(x, _rng(1))
    assert is_payload(payload) and payload[PAYLOAD_KEY] == compressor.name
    _, sent = wire.decode(wire.encode({}, payload))  # survives the wire, read-only arrays
    out = decode(sent)
    assert out.shape == shape and out.dtype == np.float32 and out.flags.writeable


@pytest.mark.parametrize("compressor", _all_compressors(), ids=lambda c: c.name)
def test_encoding_is_deterministic_given_the_rng(compressor):
    x = _rng().standard_normal(500).astype(np.float32)
    first = decode(compressor.encode(x, _rng(7)))
    np.testing.assert_array_equal(first, decode(compressor.encode(x, _rng(7))))


def test_qsgd_sends_sign_and_level_in_six_bits_for_16_levels_and_one_norm_per_bucket():
    x = _rng().standard_normal(1000).astype(np.float32)
    payload = QSGD(levels=16, bucket=256).encode(x, _rng())
    assert payload["codes"].dtype == np.uint8 and payload["codes"].size == 1000 * 6 // 8
    assert payload["norms"].dtype == np.float32 and payload["norms"].size == 4
    out = decode(payload)
    rows = np.zeros(1024, np.float32)
    rows[:1000] = x
    norms = np.linalg.norm(rows.reshape(4, 256), axis=1)
    np.testing.assert_allclose(payload["norms"], norms, rtol=1e-5)
    levels = out / np.repeat(norms / 16, 256)[:1000]
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert np.abs(levels).max() <= 16
    assert np.all((out == 0) | (np.sign(out) == np.sign(x)))


@pytest.mark.parametrize("levels", [1, 2, 127, 128, 255, 256, 1000])
def test_qsgd_code_width_grows_with_levels(levels):
    x = _rng().standard_normal(64).astype(np.float32)
    payload = QSGD(levels=levels, bucket=0).encode(x, _rng())
    width = math.ceil(math.log2(levels + 1)) + 1
    assert payload["codes"].size == math.ceil(64 * width / 8)
    out = decode(payload)
    norm = np.linalg.norm(x)
    assert np.all(np.abs(out) <= norm * (1 + 1e-6))
    if levels >= 1000:  # fine levels: close to x
        assert np.abs(out - x).max() <= norm / levels * (1 + 1e-4)


def test_terngrad_values_are_zero_or_plus_minus_the_max_with_the_sign_of_the_input():
    x = _rng().standard_normal(2000).astype(np.float32)
    payload = TernGrad().encode(x, _rng())
    assert payload["codes"].size == 2000 * 2 // 8
    out = decode(payload)
    scale = np.abs(x).max()
    assert set(np.unique(np.abs(out))) <= {0.0, scale}
    assert np.all((out == 0) | (np.sign(out) == np.sign(x)))
    assert out[np.argmax(np.abs(x))] == pytest.approx(x[np.argmax(np.abs(x))])


def test_sign_decodes_to_mean_magnitude_with_the_input_sign():
    x = np.array([0.5, -2.0, 0.0, 1.5], dtype=np.float32)
    payload = Sign().encode(x, _rng())
    assert payload["bits"].size == 1
    np.testing.assert_array_equal(decode(payload), [1.0, -1.0, 1.0, 1.0])


def test_top_k_keeps_exactly_the_k_largest_magnitudes_unchanged():
    rng = _rng()
    x = (rng.permutation(1000) + 1).astype(np.float32) * rng.choice([-1, 1], 1000)
    payload = TopK(ratio=0.03).encode(x, rng)
    assert payload["indices"].dtype == np.uint16 and payload["values"].dtype == np.float32
    out = decode(payload)
    kept = np.flatnonzero(out)
    assert kept.size == 30
    np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(-np.abs(x))[:30]))
    np.testing.assert_array_equal(out[kept], x[kept])


@pytest.mark.parametrize("zero_share", [0.5, 0.9, 0.999])
def test_top_k_of_a_mostly_zero_array_is_exact_and_fast(zero_share):
    """Blank MNIST pixels make ~80% of a first layer's gradient exact zeros."""
    rng = _rng()
    n, k = 100_352, 1004
    x = rng.standard_normal(n).astype(np.float32)
    x[rng.random(n) < zero_share] = 0
    index = top_k_indices(x, k)
    assert index.size == k and np.all(np.diff(index) > 0)
    nonzero = np.count_nonzero(x)
    if nonzero >= k:  # the k largest magnitudes, no zero among them
        np.testing.assert_array_equal(np.sort(np.abs(x[index])), np.sort(np.abs(x))[n - k :])
    else:  # every nonzero entry, then the first zeros
        assert np.count_nonzero(x[index]) == nonzero
        assert set(np.flatnonzero(x == 0)[: k - nonzero]) <= set(index.tolist())
    dense = rng.standard_normal(n).astype(np.float32)
    best_of = [min(_seconds(top_k_indices, a, k) for _ in range(5)) for a in (x, dense)]
    assert best_of[0] < 3 * best_of[1] + 1e-3, best_of  # numpy's selection alone: 20-30x


def _structured_arrays() -> dict[str, np.ndarray]:
    rng = _rng()
    n = 128 * 784
    column = np.zeros((784, 128), dtype=np.float32)
    column[:, 5] = rng.standard_normal(784)  # every large value in one column of a layer
    spikes = np.zeros(n, dtype=np.float32)
    spikes[rng.choice(n, 3000, replace=False)] = rng.standard_normal(3000)
    return {
        "ascending": np.arange(n, dtype=np.float32),
        "descending": -np.arange(n, dtype=np.float32),
        "one column": column.ravel(),
        "ties": np.ones(n, dtype=np.float32),
        "sparse spikes": spikes,
        "heavy tail": rng.standard_cauchy(n).astype(np.float32),
    }


@pytest.mark.parametrize("name", list(_structured_arrays()))
@pytest.mark.parametrize("k", [1, 7, 1004, 9000])
def test_top_k_is_exact_whatever_the_layout_of_the_values(name, k):
    x = _structured_arrays()[name]
    index = top_k_indices(x, k)
    assert index.size == k and np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(np.sort(np.abs(x[index])), np.sort(np.abs(x))[x.size - k :])


def test_top_k_keeps_a_nan_as_the_largest_entry():
    x = _rng().standard_normal(50_000).astype(np.float32)
    x[123] = np.nan
    assert 123 in top_k_indices(x, 500)


def _seconds(function, *args):
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


@pytest.mark.parametrize(
    ("ratio", "n", "k"), [(0.01, 100, 1), (1e-9, 50, 1), (0.5, 7, 4), (1, 9, 9)]
)
def test_k_is_ratio_times_n_rounded_at_least_one(ratio, n, k):
    assert k_of(ratio, n) == k
    out = decode(TopK(ratio=ratio).encode(np.arange(1, n + 1, dtype=np.float32), _rng()))
    assert np.count_nonzero(out) == k


def test_random_k_sends_a_seed_not_indices_and_keeps_k_original_values():
    x = _rng().standard_normal(5000).astype(np.float32)
    payload = RandomK(ratio=0.02).encode(x, _rng(3))
    assert set(payload) == {PAYLOAD_KEY, "shape", "seed", "values"}
    out = decode(payload)
    kept = np.flatnonzero(out)
    assert kept.size == 100
    np.testing.assert_array_equal(out[kept], x[kept])
    rescaled = decode(RandomK(ratio=0.02, rescale=True).encode(x, _rng(3)))
    np.testing.assert_allclose(rescaled[kept], x[kept] * 50, rtol=1e-6)


@pytest.mark.parametrize(("n", "k"), [(10, 1), (100, 50), (100, 51), (100, 99), (100_352, 1004)])
def test_random_indices_are_distinct_sorted_and_a_function_of_the_seed(n, k):
    indices = random_indices(2**63 + 11, n, k)
    assert indices.size == k and np.all(np.diff(indices) > 0)
    assert indices[0] >= 0 and indices[-1] < n
    np.testing.assert_array_equal(indices, random_indices(2**63 + 11, n, k))
    assert not np.array_equal(indices, random_indices(2**63 + 12, n, k))


def test_random_indices_cover_positions_uniformly():
    counts = np.zeros(40)
    for seed in range(2000):
        counts[random_indices(seed, 40, 4)] += 1
    # each position is drawn 200 times on average (binomial sd ~13.4): within 5 sd
    assert np.abs(counts - 200).max() < 5 * 13.5


# --------------------------------------------------------------------------- expectations


def _mean_of_draws(compressor, x, draws):
    total = np.zeros(x.shape, np.float64)
    for seed in range(draws):
        total += decode(compressor.encode(x, _rng(seed)))
    return total / draws


def test_qsgd_is_unbiased_over_many_draws():
    x = _rng(5).standard_normal(64).astype(np.float32)
    draws, levels = 3000, 4
    mean = _mean_of_draws(QSGD(levels=levels, bucket=0), x, draws)
    # each value is (norm / s) * (floor + Bernoulli): sd <= norm / s / 2 per draw
    bound = 5 * np.linalg.norm(x) / levels / 2 / np.sqrt(draws)
    assert np.abs(mean - x).max() < bound


def test_terngrad_is_unbiased_over_many_draws():
    x = _rng(6).standard_normal(64).astype(np.float32)
    draws = 3000
    mean = _mean_of_draws(TernGrad(), x, draws)
    bound = 5 * np.abs(x).max() / 2 / np.sqrt(draws)  # sd <= max|x| / 2 per draw
    assert np.abs(mean - x).max() < bound


def test_rescaled_random_k_is_unbiased_and_plain_random_k_is_not():
    x = _rng(7).standard_normal(32).astype(np.float32)
    draws = 3000
    mean = _mean_of_draws(RandomK(ratio=0.25, rescale=True), x, draws)
    bound = 5 * np.abs(x) * np.sqrt(4 - 1) / np.sqrt(draws)  # sd |x| * sqrt(n/k - 1)
    assert np.all(np.abs(mean - x) < bound + 1e-6)
    shrunk = _mean_of_draws(RandomK(ratio=0.25), x, draws)
    np.testing.assert_allclose(shrunk, x / 4, atol=float(bound.max()) / 4)


# --------------------------------------------------------------------------- wire size


def _ratio(compressor) -> float:
    x = _rng().standard_normal(MODEL_SIZE).astype(np.float32) * 1e-3
    return _wire_bytes(x) / _wire_bytes(compressor.encode(x, _rng()))


def test_top_k_one_percent_is_over_30_times_smaller_on_the_wire():
    assert _ratio(TopK(ratio=0.01)) >= 30


def test_qsgd_16_levels_is_over_4_times_smaller_on_the_wire():
    assert _ratio(QSGD(levels=16)) >= 4


def test_sign_is_over_25_times_smaller_on_the_wire():
    assert _ratio(Sign()) >= 25


def test_terngrad_is_over_12_times_and_random_k_over_60_times_smaller_on_the_wire():
    assert _ratio(TernGrad()) >= 12
    assert _ratio(RandomK(ratio=0.01)) >= 60


# --------------------------------------------------------------------------- malformed payloads


def _payload(name: str) -> dict:
    return make_compressor(name, ratio=0.5).encode(np.arange(-8, 8, dtype=np.float32), _rng())


@pytest.mark.parametrize(
    ("name", "key", "value", "match"),
    [
        ("qsgd", "codes", np.zeros(3, np.uint8), "expected 12 uint8 bytes"),
        ("qsgd", "norms", np.zeros(2, np.float32), "'norms' has 2 values"),
        ("qsgd", "levels", 0, "bad levels"),
        ("terngrad", "codes", np.full(4, 255, np.uint8), "code 3"),
        ("sign", "scale", "big", "scale must be a float"),
        ("topk", "indices", np.array([99] * 8, np.uint8), "out of range"),
        ("topk", "values", np.zeros(8, np.float64), "float32"),
        ("randomk", "values", np.zeros(17, np.float32), "17 values"),
        ("randomk", "shape", (-1,), "bad shape"),
    ],
)
def test_decode_refuses_malformed_payloads_with_a_reason(name, key, value, match):
    payload = {**_payload(name), key: value}
    with pytest.raises(ValueError, match=match):
        decode(payload)


def test_decode_refuses_what_is_not_a_payload():
    with pytest.raises(ValueError, match="not a compressed payload"):
        decode({PAYLOAD_KEY: "zip"})
    assert not is_payload({"values": 1}) and not is_payload([PAYLOAD_KEY])


def test_make_compressor_takes_its_own_options_and_checks_them():
    compressor = make_compressor("topk", ratio=0.2, levels=4, bucket=None)
    assert isinstance(compressor, TopK) and compressor.ratio == 0.2
    assert make_compressor("qsgd", ratio=0.2, levels=None).levels == 16
    with pytest.raises(ValueError, match="ratio must be a number in"):
        make_compressor("randomk", ratio=2)
    with pytest.raises(ValueError, match="levels must be an int"):
        make_compressor("qsgd", levels=0.5)
    with pytest.raises(ValueError, match="unknown compressor 'gzip'"):
        make_compressor("gzip")
    assert set(COMPRESSORS) == {"qsgd", "terngrad", "sign", "topk", "randomk"}


# --------------------------------------------------------------------------- memory


def test_error_feedback_residual_is_what_was_not_sent():
    memory = ErrorFeedback(TopK(ratio=0.1))
    rng = _rng()
    steps = [rng.standard_normal(50).astype(np.float32) for _ in range(5)]
    residual = np.zeros(50, np.float32)
    sent = np.zeros(50, np.float32)
    for step in steps:
        _, decoded = memory.compress(step, rng)
        np.testing.assert_allclose(memory.residual, step + residual - decoded, atol=1e-6)
        residual = memory.residual.copy()
        sent += decoded
    # nothing is lost, only delayed: all that was sent plus what remains is all the steps
    np.testing.assert_allclose(sent + memory.residual, np.sum(steps, axis=0), atol=1e-5)


def test_error_feedback_does_not_modify_the_input():
    memory = ErrorFeedback(Sign())
    step = np.ones(8, np.float32)
    step.flags.writeable = False  # as received arrays are
    memory.compress(step, _rng())
    memory.compress(step, _rng())
    np.testing.assert_array_equal(step, 1)


def test_block_compression_is_identical_for_every_holder_of_a_block():
    holders = [BlockCompression(QSGD(levels=2), error_feedback=True) for _ in range(2)]
    rng = _rng()
    for _ in range(3):
        step = rng.standard_normal(100).astype(np.float32)
        first, second = (holder(4, step)[1] for holder in holders)
        np.testing.assert_array_equal(first, second)
    other_block = holders[0](5, step)[1]
    assert not np.array_equal(other_block, holders[1](4, step)[1])


def test_majority_vote_takes_the_sign_of_the_sum_of_signs_and_the_mean_scale():
    votes = [
        np.array([1.0, 1.0, -1.0, 1.0], np.float32),
        np.array([3.0, -3.0, -3.0, -3.0], np.float32),
        np.array([2.0, 2.0, 2.0, -2.0], np.float32),
    ]
    np.testing.assert_array_equal(majority_vote(votes), [2.0, 2.0, -2.0, -2.0])
    tie = majority_vote(votes[:2])
    np.testing.assert_array_equal(tie, [2.0, 0.0, -2.0, 0.0])
