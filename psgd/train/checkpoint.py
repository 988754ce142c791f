"""Checkpoints of a node's training: model, optimizer state and progress, saved atomically.

A checkpoint is a dict (also what travels from a daemon to its submitter)::

    {"epoch": 3, "weights": [arrays], "optimizers": [[[arrays] per block] per layer],
     "report": {samples, train_s, batches, loss, accuracy, batch_rows, epoch_rows}}

On disk it is one ``.npz`` per node (no pickle): the arrays, plus the rest as JSON. Files are
written to a temp file and renamed, so a crash mid-write never leaves a corrupt checkpoint.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from psgd.errors import ConfigError
from psgd.results.records import atomic_write_bytes

__all__ = [
    "checkpoint_path",
    "latest_common_epoch",
    "load_checkpoint",
    "save_checkpoint",
    "save_node_checkpoint",
]

_NAME = re.compile(r"checkpoint-e(\d+)-node(\d+)\.npz$")
#: Checkpoints kept per node: the newest and the one before (a crash between two nodes'
#: writes leaves one epoch that every node has).
KEEP = 2


def checkpoint_path(folder: Path, node: int, epoch: int) -> Path:
    """Where node ``node``'s checkpoint after ``epoch`` lives in a run folder."""
    return folder / f"checkpoint-e{epoch}-node{node}.npz"


def _saved(folder: Path) -> dict[int, set[int]]:
    """``{epoch: {nodes}}`` of the checkpoints in ``folder``."""
    found: dict[int, set[int]] = {}
    for path in folder.glob("checkpoint-e*-node*.npz"):
        match = _NAME.search(path.name)
        if match:
            found.setdefault(int(match[1]), set()).add(int(match[2]))
    return found


def save_node_checkpoint(folder: Path, node: int, state: dict[str, Any]) -> Path:
    """Save node ``node``'s ``state`` and drop its checkpoints older than the last ``KEEP``."""
    path = checkpoint_path(folder, node, int(state["epoch"]))
    save_checkpoint(path, state)
    epochs = sorted(e for e, nodes in _saved(folder).items() if node in nodes)
    for old in epochs[:-KEEP]:
        checkpoint_path(folder, node, old).unlink(missing_ok=True)
    return path


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically to ``path``."""
    arrays: dict[str, np.ndarray] = {}
    for i, weight in enumerate(state["weights"]):
        arrays[f"w{i}"] = np.asarray(weight)
    shape = []
    for layer, blocks in enumerate(state["optimizers"]):
        shape.append([len(block) for block in blocks])
        for b, block in enumerate(blocks):
            for k, item in enumerate(block):
                arrays[f"o{layer}_{b}_{k}"] = np.asarray(item)
    extra = list(state.get("state") or [])  # a learner's own state (get_state), if any
    for i, item in enumerate(extra):
        arrays[f"s{i}"] = np.asarray(item)
    meta = {"epoch": int(state["epoch"]), "layers": len(state["weights"]), "optimizers": shape,
            "report": state["report"], "state": len(extra)}  # fmt: skip
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; a bad file is a ``ConfigError``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            weights = [data[f"w{i}"].copy() for i in range(meta["layers"])]
            optimizers = [
                [[data[f"o{layer}_{b}_{k}"].copy() for k in range(count)]
                 for b, count in enumerate(blocks)]
                for layer, blocks in enumerate(meta["optimizers"])
            ]  # fmt: skip
            extra = [data[f"s{i}"].copy() for i in range(int(meta.get("state", 0)))]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable psgd checkpoint ({exc})") from None
    return {"epoch": meta["epoch"], "weights": weights, "optimizers": optimizers,
            "report": meta["report"], "state": extra}  # fmt: skip


def latest_common_epoch(folder: Path, node_count: int) -> dict[int, dict[str, Any]]:
    """Every node's checkpoint of the latest epoch that all ``node_count`` nodes saved."""
    complete = [e for e, nodes in _saved(folder).items() if nodes >= set(range(node_count))]
    if not complete:
        raise ConfigError(
            f"--resume {folder}: no epoch has a checkpoint of every node (was the job run "
            "with --checkpoint-every?)"
        )
    epoch = max(complete)
    return {
        node: load_checkpoint(checkpoint_path(folder, node, epoch)) for node in range(node_count)
    }
