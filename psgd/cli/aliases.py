"""Parallel-SGD's command-line words, accepted as they are written in its tutorial.

Option names it uses that psgd renamed are aliases on the options themselves
(``--server_codec``, ``--block_assignment``, ``--parallel_sgd`` / ``--psgd``). Its
``--optimizer`` names a *training mode* (how merged results are applied), while psgd's
``--optimizer`` names the local update rule; its words are mapped here to psgd's
``--exchange`` / ``--sync`` with plain SGD as the local rule, as Parallel-SGD trains.
"""

from __future__ import annotations

from typing import Any

from psgd.errors import ConfigError

__all__ = ["PARALLEL_SGD_OPTIMIZERS", "apply_parallel_sgd_optimizer"]

#: Parallel-SGD optimizer name -> (psgd --exchange, psgd --sync or None to keep it).
PARALLEL_SGD_OPTIMIZERS: dict[str, tuple[str, str | None]] = {
    "parallel_sgd": ("delta", None),
    "psgd": ("delta", None),
    "gradient_averaging": ("accumulate", None),
    "parameter_averaging": ("params", None),
    "double_buffering": ("delta", "double_buffer"),
}


def apply_parallel_sgd_optimizer(options: dict[str, Any]) -> None:
    """Turn ``--optimizer <Parallel-SGD mode>`` into psgd's ``--exchange``/``--sync`` in place.

    Raises ``ConfigError`` when an explicit ``--exchange`` contradicts the mode.
    """
    word = options.get("optimizer")
    if word not in PARALLEL_SGD_OPTIMIZERS:
        return
    exchange, sync = PARALLEL_SGD_OPTIMIZERS[word]
    given = options.get("exchange", "auto")
    if given not in ("auto", exchange):
        raise ConfigError(
            f"--optimizer {word} (Parallel-SGD's name) means --exchange {exchange}, "
            f"but --exchange {given} was given"
        )
    options["exchange"] = exchange
    if sync is not None:
        options["sync"] = sync
    options["optimizer"] = "sgd"
