"""Bit packing and index helpers of the compressors (``psgd.algorithms.compress``): plain functions.

Codes of ``width`` bits are packed densely into uint8; indices use the smallest unsigned dtype
that holds them; random indices are redrawn from a seed so only the seed travels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "index_dtype",
    "k_of",
    "majority_vote",
    "pack_codes",
    "random_indices",
    "top_k_indices",
    "unpack_codes",
]


#: Unsigned index dtypes, smallest first, with the largest index each holds.
_INDEX_DTYPES = [(np.dtype(t), int(np.iinfo(t).max)) for t in (np.uint8, np.uint16, np.uint32)]


def index_dtype(n: int) -> np.dtype:
    """The smallest unsigned dtype that holds every index of an array of ``n`` values."""
    for dtype, largest in _INDEX_DTYPES:  # np.iinfo per call cost a top-k step ~2% of its CPU
        if n - 1 <= largest:
            return dtype
    return np.dtype(np.uint64)


def k_of(ratio: float, n: int) -> int:
    """Entries kept by top-k / random-k: ``max(1, round(ratio * n))``, at most ``n``."""
    return min(n, max(1, round(ratio * n)))


def pack_codes(codes: np.ndarray, width: int) -> np.ndarray:
    """Pack unsigned integer ``codes`` (each < 2**width) into ``ceil(len * width / 8)`` bytes.

    Codes are written most significant bit first, one after the other, with no padding
    between them (``np.packbits`` order).
    """
    _check_width(width)
    count = codes.size
    if width == 1:
        return np.packbits(codes.astype(np.uint8, copy=False))
    if width == 8:
        return codes.astype(np.uint8)
    if width < 8:  # 8 codes make `width` bytes: build them as the top bits of one uint64
        flat = np.zeros(-(-count // 8) * 8, dtype=np.uint64)
        flat[:count] = codes
        groups = flat.reshape(-1, 8)
        word = np.zeros(len(groups), dtype="<u8")
        for j in range(8):
            word |= groups[:, j] << np.uint64(64 - width * (j + 1))
        little = word.view(np.uint8).reshape(-1, 8)  # most significant byte last
        return little[:, 7 : 7 - width : -1].ravel()[: -(-count * width // 8)]
    nbytes = 2 if width <= 16 else 4
    big_endian = codes.astype(f">u{nbytes}").view(np.uint8).reshape(-1, nbytes)
    bits = np.unpackbits(big_endian, axis=1)[:, 8 * nbytes - width :]
    return np.packbits(bits)


def unpack_codes(packed: np.ndarray, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes of ``width`` bits, as unsigned ints."""
    _check_width(width)
    size = -(-count * width // 8)
    if packed.dtype != np.uint8 or packed.ndim != 1 or len(packed) != size:
        raise ValueError(
            f"packed codes: expected {size} uint8 bytes for {count} codes of "
            f"{width} bits, got {packed.dtype} {packed.shape}"
        )
    if width == 1:
        return np.unpackbits(packed, count=count)
    if width == 8:
        return packed
    if width < 8:
        groups = -(-count // 8)
        padded = np.zeros((groups, 8), dtype=np.uint8)
        padded[:, :width] = np.pad(packed, (0, groups * width - size)).reshape(groups, width)
        word = padded.view(">u8").ravel().astype(np.uint64)
        mask = np.uint64((1 << width) - 1)
        codes = np.empty((groups, 8), dtype=np.uint8)
        for j in range(8):
            codes[:, j] = (word >> np.uint64(64 - width * (j + 1))) & mask
        return codes.ravel()[:count]
    nbytes = 2 if width <= 16 else 4
    bits = np.unpackbits(packed, count=count * width).reshape(count, width)
    padded = np.zeros((count, 8 * nbytes), dtype=np.uint8)
    padded[:, 8 * nbytes - width :] = bits
    return np.packbits(padded, axis=1).view(f">u{nbytes}").ravel()


def _check_width(width: int) -> None:
    if not 1 <= width <= 32:
        raise ValueError(f"code width must be in 1..32 bits, got {width}")


def top_k_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` largest-magnitude entries of the flat array ``values``."""
    n = values.size
    if k >= n:
        return np.arange(n)
    magnitude = np.abs(values)
    if n >= SAMPLED_SELECTION_MIN * k:
        found = _top_k_above_sampled_threshold(magnitude, k)
        if found is not None:
            return found
    is_zero = magnitude == 0
    nonzero = np.flatnonzero(~is_zero)  # a mask's nonzero is ~5x faster than a float array's
    if nonzero.size <= k:  # every nonzero entry, then the first zeros
        zeros = np.flatnonzero(is_zero)[: k - nonzero.size]
        return np.sort(np.concatenate([nonzero, zeros]))
    if nonzero.size < n:
        # Select among the nonzero entries only: numpy's selection slows down 20-70x when many
        # entries tie (a first layer's gradient on MNIST is ~80% exact zeros: blank pixels).
        chosen = np.argpartition(magnitude[nonzero], nonzero.size - k)[nonzero.size - k :]
        return np.sort(nonzero[chosen])
    return np.sort(np.argpartition(magnitude, n - k)[n - k :])


#: The sampled selection is tried when ``n >= SAMPLED_SELECTION_MIN * k``.
SAMPLED_SELECTION_MIN = 16


def _top_k_above_sampled_threshold(magnitude: np.ndarray, k: int) -> np.ndarray | None:
    """The exact top ``k`` found among the entries above a threshold drawn from a sample.

    A strided sample of ~``30 n / k`` entries gives a threshold ``t`` that about ``3k`` entries
    reach; the top ``k`` of those are the top ``k`` of all, since every other entry is below
    ``t``. ``None`` when fewer than ``k`` reach ``t`` (unlikely), ``t`` is 0 or NaN is present:
    the caller then selects over the whole array.
    """
    n = magnitude.size
    stride = max(1, k // 30) | 1  # odd: no power-of-two row length aligns with it
    sample = magnitude[::stride]
    rank = min(sample.size - 1, max(1, (3 * k * sample.size) // n))
    threshold = np.partition(sample, sample.size - rank)[sample.size - rank]
    if not threshold > 0:  # zero, or NaN in the sample
        return None
    candidates = np.flatnonzero(magnitude >= threshold)
    if candidates.size < k or np.isnan(magnitude.max()):
        return None
    chosen = np.argpartition(magnitude[candidates], candidates.size - k)[candidates.size - k :]
    return np.sort(candidates[chosen])


def random_indices(seed: int, n: int, k: int) -> np.ndarray:
    """``k`` distinct indices in ``0..n-1`` (ascending), a pure function of ``(seed, n, k)``.

    Built on the raw PCG64 bit stream, which numpy keeps stable across versions (unlike
    ``Generator.choice``), so a receiver with another numpy still draws the same indices: the
    first ``k`` distinct values of ``raw % n`` (modulo bias below ``n / 2**64``), or, when
    ``k > n / 2``, the ``k`` positions holding the smallest of ``n`` raw draws.
    """
    if k >= n:
        return np.arange(n)
    bits = np.random.PCG64(seed)
    if 2 * k > n:
        return np.sort(np.argpartition(bits.random_raw(n), k - 1)[:k])
    stream = np.empty(0, dtype=np.uint64)
    while True:
        more = k + k * k // n + 16  # about the expected repeats, plus a margin
        stream = np.concatenate([stream, bits.random_raw(more) % np.uint64(n)])
        values, first = np.unique(stream, return_index=True)
        if len(values) >= k:
            return np.sort(values[np.argsort(first)[:k]]).astype(np.intp)


def majority_vote(values: Sequence[np.ndarray]) -> np.ndarray:
    """signSGD's majority vote: ``sign(sum_i sign(v_i))`` scaled by the mean of ``mean|v_i|``.

    For sign-compressed blocks (``scale_i * ±1``) the scale is the mean of the senders' scales.
    Ties (an even split) give 0.
    """
    votes = np.zeros(np.shape(values[0]), dtype=np.float32)
    scale = 0.0
    for value in values:
        votes += np.sign(value)
        scale += float(np.mean(np.abs(value)))
    return (np.sign(votes) * np.float32(scale / len(values))).astype(np.float32)
