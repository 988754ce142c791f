"""The compressors: QSGD, TernGrad, sign, top-k and random-k, and their payload checks.

Each turns an array into a small payload (see :mod:`psgd.algorithms.compress` for the table of
what is sent) and decodes it back to float32; :mod:`psgd.algorithms.compress` picks them by
name and adds error feedback and per-block bookkeeping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from psgd.algorithms.bitpack import (
    index_dtype,
    k_of,
    pack_codes,
    random_indices,
    top_k_indices,
    unpack_codes,
)

__all__ = ["PAYLOAD_KEY", "QSGD", "Compressor", "Payload", "RandomK", "Sign", "TernGrad", "TopK"]

#: The key that marks a dict as a compressed payload; its value is the compressor's name.
PAYLOAD_KEY = "compressed"

Payload = dict[str, Any]


# --------------------------------------------------------------------------- plain functions


def _buckets(flat: np.ndarray, bucket: int) -> np.ndarray:
    """``flat`` as rows of ``bucket`` values (the whole array when 0), zero-padded at the end."""
    n = flat.size
    size = bucket if 0 < bucket < n else max(n, 1)
    rows = -(-n // size)
    if rows * size == n:
        return flat.reshape(rows, size)
    padded = np.zeros(rows * size, dtype=np.float32)
    padded[:n] = flat
    return padded.reshape(rows, size)


def _flat32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).ravel()


def _shape_of(payload: Payload) -> tuple[int, ...]:
    shape = payload.get("shape")
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(d, int) and d >= 0 for d in shape
    ):
        raise ValueError(f"{payload.get(PAYLOAD_KEY)} payload: bad shape {shape!r:.60}")
    return tuple(shape)


def _field(payload: Payload, key: str, dtype: Any, size: int | None = None) -> np.ndarray:
    value = payload.get(key)
    if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype) or value.ndim != 1:
        raise ValueError(
            f"{payload.get(PAYLOAD_KEY)} payload: {key!r} must be a 1-d {np.dtype(dtype)} array"
        )
    if size is not None and value.size != size:
        raise ValueError(
            f"{payload.get(PAYLOAD_KEY)} payload: {key!r} has {value.size} values, expected {size}"
        )
    return value


# --------------------------------------------------------------------------- compressors


class Compressor:
    """Base class: ``encode(array, rng) -> payload`` and ``decode(payload) -> float32 array``.

    ``unbiased`` says whether ``E[decode(encode(x))] == x`` over the rng; ``random`` whether
    ``encode`` draws from it at all (a deterministic compressor is handed a shared, unused one).
    """

    name = "compressor"
    unbiased = False
    random = True

    def encode(self, array: np.ndarray, rng: np.random.Generator) -> Payload:
        """The payload for ``array`` (any shape; computed in float32)."""
        raise NotImplementedError

    @staticmethod
    def decode(payload: Payload) -> np.ndarray:
        """A new float32 array of the original shape; ``ValueError`` on a malformed payload."""
        raise NotImplementedError

    def _payload(self, array: np.ndarray, **fields: Any) -> Payload:
        return {PAYLOAD_KEY: self.name, "shape": tuple(int(d) for d in np.shape(array)), **fields}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class QSGD(Compressor):
    """QSGD (Alistarh et al. 2017): ``s`` levels per bucket norm, stochastic rounding.

    Each bucket of ``bucket`` values (0: the whole array) is sent as its float32 L2 norm and,
    per value, a sign bit and a level ``l`` in ``0..s`` drawn so that ``E[l] = s|x| / norm``:
    the decoded ``norm * sign * l / s`` is unbiased. Bits per value:
    ``ceil(log2(s + 1)) + 1`` (6 for s = 16) plus ``32 / bucket`` for the norms. Buckets bound
    the variance by ``min(bucket / s**2, sqrt(bucket) / s) * |x|**2`` (Lemma 3.1 of the paper).
    """

    name = "qsgd"
    unbiased = True

    def __init__(self, levels: int = 16, bucket: int = 512) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels < 1 << 16:
            raise ValueError(f"qsgd: levels must be an int in 1..65535, got {levels!r}")
        if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 0:
            raise ValueError(f"qsgd: bucket must be an int >= 0 (0: whole array), got {bucket!r}")
        self.levels = levels
        self.bucket = bucket

    def encode(self, array: np.ndarray, rng: np.random.Generator) -> Payload:
        flat = _flat32(array)
        rows = _buckets(flat, self.bucket)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)).astype(np.float32)
        safe = np.where(norms > 0, norms, np.float32(1))
        scaled = np.abs(rows) * (np.float32(self.levels) / safe)[:, None]
        level = np.floor(scaled)
        level += rng.random(scaled.shape, dtype=np.float32) < scaled - level
        np.minimum(level, self.levels, out=level)  # |x| / norm may round to just above 1
        width = _level_bits(self.levels)
        codes = level.astype(np.uint32).ravel()[: flat.size]
        codes |= (flat < 0).astype(np.uint32) << width
        return self._payload(
            array,
            levels=self.levels,
            bucket=rows.shape[1],
            norms=norms,
            codes=pack_codes(codes, width + 1),
        )

    @staticmethod
    def decode(payload: Payload) -> np.ndarray:
        shape = _shape_of(payload)
        n = math.prod(shape)
        levels, bucket = payload.get("levels"), payload.get("bucket")
        if not isinstance(levels, int) or not 1 <= levels < 1 << 16:
            raise ValueError(f"qsgd payload: bad levels {levels!r:.30}")
        if not isinstance(bucket, int) or bucket < 1:
            raise ValueError(f"qsgd payload: bad bucket {bucket!r:.30}")
        width = _level_bits(levels)
        norms = _field(payload, "norms", np.float32, -(-n // bucket))
        codes = unpack_codes(_field(payload, "codes", np.uint8), width + 1, n)
        level = codes & (1 << width) - 1
        if n and level.max() > levels:
            raise ValueError(f"qsgd payload: a level exceeds {levels}")
        sign = (codes >> width).astype(np.int8)
        sign *= -2
        sign += 1  # 1 - 2 * sign bit
        out = level.astype(np.float32)
        out *= sign
        out *= np.repeat(norms / np.float32(levels), bucket)[:n]
        return out.reshape(shape)


def _level_bits(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels + 1)))


class TernGrad(Compressor):
    """TernGrad (Wen et al. 2017): stochastic ternary ``scale * sign(g) * b``, 2 bits per value.

    ``scale = max|g|`` per bucket (0: the whole array, the paper's per-layer scaling) and
    ``b ~ Bernoulli(|g| / scale)``, so the decoded value is unbiased. Codes: 0 zero, 1 plus,
    2 minus.
    """

    name = "terngrad"
    unbiased = True

    def __init__(self, bucket: int = 0) -> None:
        if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 0:
            raise ValueError(
                f"terngrad: bucket must be an int >= 0 (0: whole array), got {bucket!r}"
            )
        self.bucket = bucket

    def encode(self, array: np.ndarray, rng: np.random.Generator) -> Payload:
        flat = _flat32(array)
        rows = _buckets(flat, self.bucket)
        scales = np.max(np.abs(rows), axis=1)
        safe = np.where(scales > 0, scales, np.float32(1))
        keep = rng.random(rows.shape, dtype=np.float32) < np.abs(rows) / safe[:, None]
        codes = keep.ravel()[: flat.size].astype(np.uint8)
        codes <<= (flat < 0).astype(np.uint8)  # 1 -> 2 for negative values
        return self._payload(array, bucket=rows.shape[1], scales=scales, codes=pack_codes(codes, 2))

    @staticmethod
    def decode(payload: Payload) -> np.ndarray:
        shape = _shape_of(payload)
        n = math.prod(shape)
        bucket = payload.get("bucket")
        if not isinstance(bucket, int) or bucket < 1:
            raise ValueError(f"terngrad payload: bad bucket {bucket!r:.30}")
        scales = _field(payload, "scales", np.float32, -(-n // bucket))
        codes = unpack_codes(_field(payload, "codes", np.uint8), 2, n)
        if n and codes.max() > 2:
            raise ValueError("terngrad payload: code 3 is not a ternary value")
        out = np.array([0, 1, -1], dtype=np.float32)[codes]
        out *= np.repeat(scales, bucket)[:n]
        return out.reshape(shape)


class Sign(Compressor):
    """Scaled sign: 1 bit per value (set for ``g >= 0``) and one float32 ``scale = mean|g|``.

    Decodes to ``scale * (+1 | -1)``, the ``|g|_1 / n`` scaling of EF-signSGD (Karimireddy et
    al. 2019); biased, meant to be used with error feedback or a majority vote.
    """

    name = "sign"
    random = False

    def encode(self, array: np.ndarray, rng: np.random.Generator) -> Payload:
        flat = _flat32(array)
        scale = np.float32(np.mean(np.abs(flat), dtype=np.float64)) if flat.size else 0.0
        return self._payload(array, scale=float(scale), bits=np.packbits(flat >= 0))

    @staticmethod
    def decode(payload: Payload) -> np.ndarray:
        shape = _shape_of(payload)
        scale = payload.get("scale")
        if not isinstance(scale, float):
            raise ValueError(f"sign payload: scale must be a float, got {scale!r:.30}")
        bits = unpack_codes(_field(payload, "bits", np.uint8), 1, math.prod(shape))
        out = np.where(bits.astype(bool), np.float32(scale), np.float32(-scale))
        return out.reshape(shape)


class TopK(Compressor):
    """Top-k: exactly ``k = max(1, round(ratio * n))`` largest-magnitude entries are sent.

    Payload: their indices (ascending, smallest sufficient unsigned dtype) and float32 values.
    Biased: use with error feedback.
    """

    name = "topk"
    random = False

    def __init__(self, ratio: float = 0.01) -> None:
        self.ratio = _check_ratio(self.name, ratio)

    def encode(self, array: np.ndarray, rng: np.random.Generator) -> Payload:
        flat = _flat32(array)
        index = top_k_indices(flat, k_of(self.ratio, flat.size))
        return self._payload(
            array, indices=index.astype(index_dtype(flat.size)), values=flat[index]
        )

    @staticmethod
    def decode(payload: Payload) -> np.ndarray:
        shape = _shape_of(payload)
        n = math.prod(shape)
        values = _field(payload, "values", np.float32)
        index = payload.get("indices")
        if (
            not isinstance(index, np.ndarray)
            or index.dtype.kind != "u"
            or index.shape != values.shape
        ):
            raise ValueError("topk payload: 'indices' must be unsigned ints, one per value")
        if index.size and int(index.max()) >= n:
            raise ValueError(f"topk payload: an index is out of range for {n} values")
        out = np.zeros(n, dtype=np.float32)
        out[index] = values
        return out.reshape(shape)


class RandomK(Compressor):
    """Random-k: ``k = max(1, round(ratio * n))`` entries chosen by a 64-bit seed.

    Only the seed and the k float32 values are sent; the receiver redraws the indices with
    :func:`random_indices`. With ``rescale`` the values are multiplied by ``n / k`` so the
    decoded array is unbiased (at a variance of ``n / k`` times the signal); without it (the
    default, as in Stich et al. 2018's memory-SGD) it is biased and meant for error feedback.
    """

    name = "randomk"

    def __init__(self, ratio: float = 0.01, rescale: bool = False) -> None:
        self.ratio = _check_ratio(self.name, ratio)
        self.rescale = bool(rescale)
        self.unbiased = self.rescale

    def encode(self, array: np.ndarray, rng: np.random.Generator) -> Payload:
        flat = _flat32(array)
        k = k_of(self.ratio, flat.size)
        seed = int(rng.integers(1 << 63))
        values = flat[random_indices(seed, flat.size, k)]
        if self.rescale:
            values *= np.float32(flat.size / k)
        return self._payload(array, seed=seed, values=values)

    @staticmethod
    def decode(payload: Payload) -> np.ndarray:
        shape = _shape_of(payload)
        n = math.prod(shape)
        seed = payload.get("seed")
        if not isinstance(seed, int) or not 0 <= seed < 1 << 64:
            raise ValueError(f"randomk payload: bad seed {seed!r:.30}")
        values = _field(payload, "values", np.float32)
        if values.size > n or (n and not values.size):
            raise ValueError(f"randomk payload: {values.size} values for an array of {n}")
        out = np.zeros(n, dtype=np.float32)
        out[random_indices(seed, n, values.size)] = values
        return out.reshape(shape)


def _check_ratio(name: str, ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(f"{name}: ratio must be a number in (0, 1], got {ratio!r}")
    return float(ratio)
