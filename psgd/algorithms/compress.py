"""Gradient compression: compressors that turn an array into a small payload and back.

A compressor's ``encode(array, rng)`` returns a *payload*: a dict of small numpy arrays and
numbers that :mod:`psgd.net.wire` sends as they are (bit-packed codes, indices in the smallest
sufficient unsigned dtype, float32 values), tagged with the compressor's name under
:data:`PAYLOAD_KEY` and carrying everything needed to decode it. :func:`decode` (or the
compressor's ``decode``) rebuilds a float32 array of the original shape. Encoding is vectorised
numpy and deterministic given ``rng``; decoding is deterministic, so every node decoding one
payload gets bit-identical values.

=============  =================================================  ==========================
name           what is sent (n values)                            expectation
=============  =================================================  ==========================
``qsgd``       sign + level, ``ceil(log2(s+1)) + 1`` bits each,   unbiased
               one float32 norm per bucket (Alistarh et al. 2017)
``terngrad``   2 bits each, one float32 scale ``max|g|`` per      unbiased
               bucket (Wen et al. 2017)
``sign``       1 bit each, one float32 scale ``mean|g|``          biased (use error feedback)
``topk``       k largest-magnitude entries: indices + float32     biased (use error feedback)
``randomk``    k random entries: a 64-bit seed + float32 values   biased, or unbiased with
                                                                  ``rescale`` (values * n/k)
=============  =================================================  ==========================

``k = max(1, round(ratio * n))``. :class:`ErrorFeedback` adds the residual memory
``e <- (g + e) - decode(encode(g + e))`` (Seide et al. 2014; Stich et al. 2018) that makes the
biased compressors converge. :class:`BlockCompression` is the per-block bookkeeping a codec
needs so that every holder of a data block compresses it identically.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from psgd.algorithms.bitpack import (
    index_dtype,
    k_of,
    majority_vote,
    pack_codes,
    random_indices,
    top_k_indices,
    unpack_codes,
)
from psgd.algorithms.compressors import (
    PAYLOAD_KEY,
    QSGD,
    Compressor,
    Payload,
    RandomK,
    Sign,
    TernGrad,
    TopK,
)

__all__ = [
    "COMPRESSORS",
    "PAYLOAD_KEY",
    "BlockCompression",
    "Compressor",
    "ErrorFeedback",
    "QSGD",
    "RandomK",
    "Sign",
    "TernGrad",
    "TopK",
    "decode",
    "index_dtype",
    "is_payload",
    "k_of",
    "majority_vote",
    "make_compressor",
    "pack_codes",
    "random_indices",
    "top_k_indices",
    "unpack_codes",
]


COMPRESSORS: dict[str, type[Compressor]] = {
    cls.name: cls for cls in (QSGD, TernGrad, Sign, TopK, RandomK)
}
_DECODERS: dict[str, Callable[[Payload], np.ndarray]] = {
    name: cls.decode for name, cls in COMPRESSORS.items()
}


def make_compressor(name: str, **options: Any) -> Compressor:
    """The compressor ``name`` built with the options it accepts (others are ignored).

    ``options`` may hold every codec parameter (``ratio``, ``levels``, ``bucket``,
    ``rescale``); each compressor takes only its own, and a value of ``None`` means "use the
    compressor's default".
    """
    try:
        cls = COMPRESSORS[name]
    except KeyError:
        raise ValueError(
            f"unknown compressor {name!r}; expected one of {sorted(COMPRESSORS)}"
        ) from None
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


def is_payload(obj: Any) -> bool:
    """True for a dict made by a compressor's ``encode``."""
    return type(obj) is dict and obj.get(PAYLOAD_KEY) in _DECODERS


def decode(payload: Payload) -> np.ndarray:
    """Decode any compressor's payload (it names its compressor); ``ValueError`` if malformed."""
    name = payload.get(PAYLOAD_KEY) if type(payload) is dict else None
    decoder = _DECODERS.get(name) if isinstance(name, str) else None
    if decoder is None:
        raise ValueError(f"not a compressed payload (compressor {name!r:.30})")
    return decoder(payload)


# --------------------------------------------------------------------------- memory


class ErrorFeedback:
    """Residual memory around a compressor: ``e <- (g + e) - decode(encode(g + e))``.

    What is not sent this time is added to the next array, so nothing is lost, only delayed.
    """

    def __init__(self, compressor: Compressor) -> None:
        self.compressor = compressor
        self.residual: np.ndarray | None = None

    def compress(self, array: np.ndarray, rng: np.random.Generator) -> tuple[Payload, np.ndarray]:
        """``(payload, decoded)`` for ``array`` plus the residual; the residual is updated."""
        corrected = np.array(array, dtype=np.float32, copy=True)
        if self.residual is not None:
            corrected += self.residual
        payload = self.compressor.encode(corrected, rng)
        decoded = decode(payload)
        self.residual = np.subtract(corrected, decoded, out=corrected)
        return payload, decoded


_UNUSED_RNG = np.random.default_rng(0)


class BlockCompression:
    """One codec's compression of its data blocks, the same on every holder of a block.

    The rng of block ``b``'s ``r``-th array is seeded by ``(salt, b, r)``, and the error
    feedback memory (if any) is kept per block, so nodes sharing a block (redundancy > 1)
    produce identical payloads from identical steps.
    """

    def __init__(self, compressor: Compressor, error_feedback: bool, salt: int = 0) -> None:
        self.compressor = compressor
        self.error_feedback = error_feedback
        self.salt = salt
        self.rounds: dict[int, int] = {}
        self.memories: dict[int, ErrorFeedback] = {}

    def __call__(self, block_id: int, array: np.ndarray) -> tuple[Payload, np.ndarray]:
        """``(payload, decoded)`` for block ``block_id``'s next array."""
        round_no = self.rounds.get(block_id, 0)
        self.rounds[block_id] = round_no + 1
        if self.compressor.random:
            rng = np.random.default_rng([self.salt, block_id, round_no])
        else:  # seeding costs more than a top-k selection: skip it where nothing is drawn
            rng = _UNUSED_RNG
        if self.error_feedback:
            memory = self.memories.get(block_id)
            if memory is None:
                memory = self.memories[block_id] = ErrorFeedback(self.compressor)
            return memory.compress(array, rng)
        payload = self.compressor.encode(array, rng)
        return payload, decode(payload)
