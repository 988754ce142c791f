"""Gradient compression around any codec: the ``Compressing`` mix-in and ready-made codecs.

``class TopKPlain(Compressing, Plain)`` is ``Plain`` whose blocks travel top-k compressed.
On ``update_blocks`` the mix-in adds the block's error-feedback residual (if enabled),
compresses the block and hands the inner codec the *decoded* block, so every node, the sender
included, works with identical values. When the inner codec returns packages, each array the
mix-in compressed (found by identity, or by equal values when the inner codec copied it) is
replaced by its compressed payload; any other array (say, a mean of several blocks) is sent as
it is, and the node's log says so once. ``receive_blocks`` decodes payloads back to float32
arrays before the inner codec sees them, and remembers them, so a codec that forwards what it
received forwards the payload. The maths lives in ``psgd.algorithms.compress``.

Parameters (``--param key=value``):

``ratio``
    Fraction of entries top-k / random-k send (default 0.01).
``levels``
    QSGD's number of levels s (default 16: 6 bits per value).
``bucket``
    Values per norm (QSGD, default 512) or per scale (TernGrad, default 0: the whole array).
``rescale``
    Random-k: multiply the values by n/k to make them unbiased (default false).
``error_feedback``
    Keep each block's residual and add it to the next step (default: true for top-k, random-k
    and the scaled sign, which are biased; false for the unbiased QSGD and TernGrad, and for
    ``SignSGD``, as in its paper).
``sign_scale``
    ``SignSGD``'s step size: ``mean`` (default) the mean over nodes of their ``mean|step|``, so
    the step scales with the optimizer's; or ``lr`` the job's learning rate.

Compression targets ``--exchange delta`` codecs (the content is a step). Around a parameter
server, workers send compressed steps and ``DecodingPSServer`` decodes them; its reply (the
mean) is sent dense. The rng of each compression is seeded by (block id, round), so nodes
holding the same block (redundancy > 1) compress it identically; layers of equal shape draw
the same random numbers, which is harmless.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
from plain import Plain
from ps import GradientPSClient, GradientPSServer

from psgd import BlockWeight, ConfigError, GlobalSettings, netEncapsulation
from psgd.algorithms.compress import (
    BlockCompression,
    decode,
    is_payload,
    majority_vote,
    make_compressor,
)

#: Rounds of compressed (and of decoded received) arrays remembered for substitution.
REMEMBER_ROUNDS = 2


def _flag(key: str, default: bool) -> bool:
    value = GlobalSettings.get_params(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"--param {key}: expected true or false, got {value!r}")


class Compressing:
    """Mix-in: put it before any codec class to compress every block that codec sends.

    Class attributes choose the algorithm: ``compressor`` (a name in
    ``psgd.algorithms.compress.COMPRESSORS``, or None to only decode) and ``error_feedback``
    (the default of the ``error_feedback`` parameter).
    """

    compressor: str | None = "topk"
    error_feedback = True
    params = {
        "ratio": (0.01, "top-k / random-k: fraction of coordinates sent"),
        "levels": (16, "QSGD: quantisation levels s"),
        "bucket": ("512 QSGD, 0 TernGrad", "coordinates per norm (0: the whole array)"),
        "rescale": (False, "random-k: scale kept coordinates by 1 / ratio"),
        "error_feedback": ("per codec", "add what compression dropped to the next step"),
    }

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self._compression: BlockCompression | None = None
        self._reference: BlockCompression | None = None
        if self.compressor is not None:
            self._compression = self._new_compression()
        settings = GlobalSettings.get_default()
        self._capacity = REMEMBER_ROUNDS * (settings.block_count + settings.node_count)
        self._known: OrderedDict[int, tuple[np.ndarray, dict[str, Any]]] = OrderedDict()
        self._warned = False

    def _new_compression(self) -> BlockCompression:
        try:
            compressor = make_compressor(
                str(self.compressor),
                ratio=GlobalSettings.get_params("ratio", None),
                levels=GlobalSettings.get_params("levels", None),
                bucket=GlobalSettings.get_params("bucket", None),
                rescale=_flag("rescale", False),
            )
        except ValueError as exc:
            raise ConfigError(f"{type(self).__name__}: --param {exc}") from None
        return BlockCompression(compressor, _flag("error_feedback", self.error_feedback))

    def dispose(self) -> None:
        self._known.clear()
        super().dispose()

    def update_blocks(self, block_weight: BlockWeight) -> Any:
        if self._compression is None:
            return self._substitute(super().update_blocks(block_weight))
        payload, decoded = self._compression(block_weight.block_id, block_weight.content)
        self._remember(decoded, payload)
        returned = super().update_blocks(BlockWeight(decoded, block_weight.block_id))
        return self._substitute(returned)

    def receive_blocks(self, content: Any) -> Any:
        return self._substitute(super().receive_blocks(self._decoded(content)))

    def do_something_to_save_yourself(self) -> Any:
        return self._substitute(super().do_something_to_save_yourself())

    def expected(self, blocks: dict[int, Any]) -> Any:
        """The inner codec's reference result on the blocks as compressed by their holders.

        Replays every block's compression (same rng seeds, its own residual memories), so it
        must be called once per round, as the codec test scripts do.
        """
        inner = getattr(super(), "expected", None)
        if inner is None:
            return None
        if self.compressor is None:
            return inner(blocks)
        if self._reference is None:
            self._reference = self._new_compression()
        return inner({b: self._reference(b, blocks[b])[1] for b in sorted(blocks)})

    # -- payloads in, payloads out

    def _remember(self, array: np.ndarray, payload: dict[str, Any]) -> None:
        self._known[id(array)] = (array, payload)  # holding the array keeps its id unique
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    def _decoded(self, content: Any) -> Any:
        if is_payload(content):
            array = decode(content)
            self._remember(array, content)  # a codec that forwards it sends the payload again
            return array
        kind = type(content)
        if kind is list or kind is tuple:
            return kind(self._decoded(item) for item in content)
        if kind is dict:
            return {key: self._decoded(value) for key, value in content.items()}
        return content

    def _substitute(self, returned: Any) -> Any:
        """``returned`` (None, a package or an iterable of them) with payloads for arrays."""
        if returned is None:
            return None
        if isinstance(returned, netEncapsulation):
            return netEncapsulation(returned.target(), self._compact(returned.content))
        if isinstance(returned, (str, bytes, dict)) or not isinstance(returned, Iterable):
            return returned  # not packages: the framework names the culprit
        return [self._substitute(item) for item in returned]

    def _compact(self, content: Any) -> Any:
        kind = type(content)
        if kind is np.ndarray:
            return self._payload_for(content)
        if kind is list or kind is tuple:
            return kind(self._compact(item) for item in content)
        if kind is dict:
            return {key: self._compact(value) for key, value in content.items()}
        return content

    def _payload_for(self, array: np.ndarray) -> Any:
        known = self._known.get(id(array))
        if known is not None and known[0] is array:
            return known[1]
        for candidate, payload in reversed(self._known.values()):  # copies, e.g. a mean of one
            if candidate.shape == array.shape and np.array_equal(candidate, array):
                return payload
        if self.compressor is not None and not self._warned:
            self._warned = True
            self.record(
                f"sends a {array.dtype} array of shape {array.shape} it did not compress "
                "(e.g. a mean of several blocks): sent as it is"
            )
        return array


# --------------------------------------------------------------------------- peer to peer


class TopKPlain(Compressing, Plain):
    """``Plain`` with top-k sparsification (``ratio``) and error feedback."""

    compressor = "topk"


class RandomKPlain(Compressing, Plain):
    """``Plain`` with random-k sparsification (a seed + k values) and error feedback."""

    compressor = "randomk"


class QSGDPlain(Compressing, Plain):
    """``Plain`` with QSGD quantization (``levels``, ``bucket``), unbiased, no error feedback."""

    compressor = "qsgd"
    error_feedback = False


class TernGradPlain(Compressing, Plain):
    """``Plain`` with TernGrad's stochastic ternary steps, unbiased, no error feedback."""

    compressor = "terngrad"
    error_feedback = False


class SignPlain(Compressing, Plain):
    """``Plain`` averaging scaled signs (``mean|g| * sign``) with error feedback (EF-signSGD)."""

    compressor = "sign"


class MajorityVote(Plain):
    """``Plain``'s rounds, merged by majority vote of the blocks' signs (``sign_scale``)."""

    params = {"sign_scale": ("mean", "size of the voted step: mean (|step| mean) or lr")}

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.sign_scale = GlobalSettings.get_params("sign_scale", "mean")
        if self.sign_scale not in ("mean", "lr"):
            raise ConfigError(f"--param sign_scale: expected mean or lr, got {self.sign_scale!r}")
        if self.sign_scale == "lr" and not GlobalSettings.get_default().learn_rate > 0:
            raise ConfigError("--param sign_scale=lr: the job's learn rate is unknown")

    def _store(self, round_no: int, block_id: int, value: Any) -> None:
        if round_no < self.round:
            return  # another holder's copy of a block already merged
        self.pending[round_no].setdefault(block_id, value)
        block_count = GlobalSettings.get_default().block_count
        while len(self.pending.get(self.round, ())) == block_count:
            self.set_result(self.merge(self.pending.pop(self.round)))
            self.round += 1

    def merge(self, blocks: dict[int, Any]) -> np.ndarray:
        """The vote of ``blocks`` in block order: ``scale * sign(sum of signs)``."""
        vote = majority_vote([blocks[b] for b in sorted(blocks)])
        if self.sign_scale == "lr":
            vote = np.sign(vote) * np.float32(GlobalSettings.get_default().learn_rate)
        return vote

    def expected(self, blocks: dict[int, Any]) -> Any:
        """Reference result of one round for the codec test scripts: the vote."""
        return self.merge(blocks)


class SignSGD(Compressing, MajorityVote):
    """signSGD with majority vote (Bernstein et al. 2018): 1 bit per value to every node.

    Each node sends the packed sign of its step (and its ``mean|step|``); the result is the
    majority vote of the signs times the mean of those scales (or the learning rate with
    ``sign_scale=lr``). ``error_feedback`` is off by default, as in the paper.
    """

    compressor = "sign"
    error_feedback = False


# --------------------------------------------------------------------------- parameter server


class DecodingPSServer(Compressing, GradientPSServer):
    """``GradientPSServer`` for compressing clients: decodes their steps, replies the mean."""

    compressor = None


class TopKPSClient(Compressing, GradientPSClient):
    """``GradientPSClient`` sending top-k steps with error feedback (``DecodingPSServer``)."""

    compressor = "topk"


class RandomKPSClient(Compressing, GradientPSClient):
    """``GradientPSClient`` sending random-k steps with error feedback."""

    compressor = "randomk"


class QSGDPSClient(Compressing, GradientPSClient):
    """``GradientPSClient`` sending QSGD-quantized steps."""

    compressor = "qsgd"
    error_feedback = False


class TernGradPSClient(Compressing, GradientPSClient):
    """``GradientPSClient`` sending TernGrad steps."""

    compressor = "terngrad"
    error_feedback = False


class SignPSClient(Compressing, GradientPSClient):
    """``GradientPSClient`` sending scaled signs with error feedback (mean at the server)."""

    compressor = "sign"


class SignSGDServer(DecodingPSServer):
    """The server of signSGD with majority vote: replies ``mean scale * sign(sum of signs)``.

    (``sign_scale=lr`` is ``SignSGD``'s only; the reply is sent dense.)
    """

    def aggregate(self, updates: list[np.ndarray]) -> np.ndarray:
        return majority_vote(updates)


class SignSGDPSClient(SignPSClient):
    """signSGD's worker for ``SignSGDServer``: packed signs, no error feedback by default."""

    error_feedback = False
