"""Attack simulation, selectable per node: ``--attack NODE:KIND[:ARG]``.

Kinds: ``label_flip`` (poisons the node's training labels; ARG ``a->b`` flips label a to b,
default every label l to C-1-l for C classes), ``sign_flip`` (sends the negated update, ARG a
scale, default 1),
``gaussian`` (sends Gaussian noise of standard deviation ARG, default 1 instead of the update),
``scale`` (sends the update times ARG, default 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psgd.errors import ConfigError

__all__ = ["ATTACKS", "Attack", "parse_attack", "parse_attacks"]

ATTACKS = ("label_flip", "sign_flip", "gaussian", "scale")
_DEFAULTS = {"sign_flip": 1.0, "gaussian": 1.0, "scale": 10.0}


@dataclass(frozen=True)
class Attack:
    """One node's attack."""

    node: int
    kind: str
    arg: str = ""

    @property
    def on_data(self) -> bool:
        """True for attacks on the training data rather than on what is sent."""
        return self.kind == "label_flip"

    @property
    def strength(self) -> float:
        return float(self.arg) if self.arg else _DEFAULTS.get(self.kind, 0.0)

    def poison_labels(self, labels: np.ndarray, n_classes: int = 10) -> np.ndarray:
        """A poisoned copy of ``labels``."""
        if not self.arg:
            return (n_classes - 1 - labels).astype(labels.dtype)
        source, target = (int(v) for v in self.arg.split("->"))
        poisoned = labels.copy()
        poisoned[labels == source] = target
        return poisoned

    def tamper(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the attacker sends instead of ``update`` (a new array of the same dtype)."""
        if self.kind == "sign_flip":
            return (-self.strength * update).astype(update.dtype, copy=False)
        if self.kind == "scale":
            return (self.strength * update).astype(update.dtype, copy=False)
        if self.kind == "gaussian":
            return rng.normal(0.0, self.strength, update.shape).astype(update.dtype)
        raise ConfigError(f"attack {self.kind!r} does not tamper with updates")


def parse_attack(text: str, node_count: int, classes: int | None = None) -> Attack:
    """``NODE:KIND[:ARG]`` to an ``Attack``; errors name the item and what was expected.

    ``classes`` (the dataset's, when known) bounds ``label_flip``'s labels."""
    parts = text.split(":", 2)
    where = f"--attack {text!r}"
    if len(parts) < 2:
        raise ConfigError(
            f"{where}: expected NODE:KIND[:ARG], e.g. 3:sign_flip or 0:label_flip:1->4"
        )
    node_text, kind, arg = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    if not node_text.isdigit() or not 0 <= int(node_text) < node_count:
        raise ConfigError(f"{where}: node must be 0..{node_count - 1}")
    if kind not in ATTACKS:
        raise ConfigError(f"{where}: unknown attack {kind!r}; expected one of {ATTACKS}")
    if arg and kind == "label_flip":
        pieces = arg.split("->")
        if len(pieces) != 2 or not all(p.strip().isdigit() for p in pieces):
            raise ConfigError(f"{where}: label_flip takes a->b, e.g. 1->4")
        if classes is not None and max(int(p) for p in pieces) >= classes:
            raise ConfigError(f"{where}: the dataset's labels are 0..{classes - 1}")
    elif arg:
        try:
            float(arg)
        except ValueError:
            raise ConfigError(f"{where}: {kind} takes a number, got {arg!r}") from None
    return Attack(int(node_text), kind, arg)


def parse_attacks(
    items: Sequence[str], node_count: int, classes: int | None = None
) -> dict[int, Attack]:
    """Every ``--attack`` item, at most one per node."""
    attacks: dict[int, Attack] = {}
    for item in items:
        attack = parse_attack(item, node_count, classes)
        if attack.node in attacks:
            raise ConfigError(f"--attack: node {attack.node} is given two attacks")
        attacks[attack.node] = attack
    return attacks
