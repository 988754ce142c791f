"""``psgd.run``: the Python API beside the command line, for scripts and notebooks.

::

    import psgd
    result = psgd.run(codec="plain.Plain", node_count=4, epochs=1)          # in-process
    result = psgd.run(codec=MyCodec, node_count=2, local=True)              # --local daemons
    result = psgd.run(codec="fedavg.FedAvgClient", ps_codec="fedavg.FedAvgServer",
                      workers="worker.json", params={"local_steps": 50})    # a worker list
    result["summary"]["accuracy"], result["history"]

It runs exactly the job the command line would (same ``JobSpec``, run folder and checks) and
returns plain Python data: the summary, the test figures per epoch or round, each node's rows.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path
from typing import Any

from psgd.cluster.runner import Target, run_job
from psgd.codec import Codec
from psgd.errors import ConfigError, JobFailed
from psgd.job import JobSpec
from psgd.loader import register_codec_class
from psgd.results.runs import load_run

__all__ = ["run"]

CodecArg = str | type[Codec]


def run(
    codec: CodecArg | list[CodecArg] | dict[int, CodecArg] = "plain.Plain",
    node_count: int = 2,
    *,
    ps_codec: CodecArg | None = None,
    local: bool = False,
    workers: str | Path | None = None,
    keys: str | Path | None = None,
    key_name: str = "submitter",
    out: str | Path | None = None,
    quiet: bool = True,
    check: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Run a training job and return its results as plain data.

    Parameters
    ----------
    codec, ps_codec:
        Codec names (``"plain.Plain"``, ``"path/file.py:Class"``) or codec classes; ``codec``
        may also be one per layer (a list) or ``{layer: codec}`` with ``-1`` as the default.
        In-process, a class is used as it is (a notebook's class works); on daemons its
        module's file is shipped, so the class must be defined in a file.
    node_count:
        Worker nodes.
    local:
        Start ``node_count`` worker daemons on loopback (and one for the server), as
        ``--local``; with ``workers``, run on the daemons a ``worker.json`` lists; else
        in-process (``--simulate``).
    keys, key_name:
        CURVE key folder and the submitter's key name (``--keys``, ``--key-name``).
    out:
        The run folder (default ``runs/<job id>``).
    quiet:
        No progress output (the default, for notebooks).
    check:
        Raise ``JobFailed`` when the job does not complete (else return its results anyway).
    settings:
        Any other ``JobSpec`` field, named as on the command line: ``epochs``, ``batch_size``,
        ``learn_rate``, ``optimizer``, ``exchange``, ``sync``, ``params`` (a dict),
        ``train_samples``, ``rounds``, ...

    Returns
    -------
    dict
        ``summary`` (``summary.json``: status, accuracy, loss, bytes, wall time, spec),
        ``history`` (one dict per epoch or round: ``step``, ``accuracy``, ``loss``,
        ``bytes_per_worker``, ``time_s``), ``nodes`` (per worker: its ``epochs`` and
        ``batches`` rows), ``rounds`` (round jobs' rows) and ``run_dir``.
    """
    if local and workers is not None:
        raise ConfigError("psgd.run: give local=True or workers=..., not both")
    in_process = not local and workers is None
    unknown = set(settings) - {f.name for f in dataclasses.fields(JobSpec)}
    if unknown:
        raise ConfigError(f"psgd.run: unknown settings {sorted(unknown)}")
    spec = JobSpec(
        codec=_codec_names(codec, in_process),
        ps_codec=None if ps_codec is None else _codec_name(ps_codec, in_process),
        node_count=node_count,
        **settings,
    )
    folder = Path(out) if out is not None else Path("runs") / spec.job_id
    target = Target(
        simulate=in_process,
        local=node_count if local else None,
        workers_file=Path(workers) if workers is not None else None,
        keys=Path(keys) if keys is not None else None,
        key_name=key_name,
    )
    try:
        run_job(spec, folder, quiet, target)
    except JobFailed:
        if check:
            raise
    return results_of(folder)


def results_of(folder: Path) -> dict[str, Any]:
    """A run folder's results as plain data (see ``run``)."""
    records = load_run(folder)
    return {
        "summary": records.summary,
        "history": [_plain(dataclasses.asdict(point)) for point in records.progress()],
        "nodes": {
            node.node: {"epochs": _plain(node.evals), "batches": _plain(node.batches)}
            for node in records.nodes
        },
        "rounds": _plain(records.rounds),
        "run_dir": str(folder),
    }


#: Columns that count things: ints, though the CSV reader gives floats.
_COUNTS = frozenset(
    {"step", "epoch", "batch", "round", "clients", "samples", "bytes_sent", "bytes_round",
     "bytes_up", "bytes_down"}
)  # fmt: skip


def _plain(value: Any, key: str = "") -> Any:
    """Counts as ints (the CSV reader gives floats); NaN as None (JSON-friendly)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, k) for k, v in value.items()}
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if key in _COUNTS and value.is_integer():
            return int(value)
    return value


def _codec_names(codec: Any, in_process: bool) -> Any:
    if isinstance(codec, dict):
        return {int(layer): _codec_name(c, in_process) for layer, c in codec.items()}
    if isinstance(codec, list | tuple):
        return ",".join(_codec_name(c, in_process) for c in codec)
    return _codec_name(codec, in_process)


def _codec_name(codec: Any, in_process: bool) -> str:
    if isinstance(codec, str):
        return codec
    if not (isinstance(codec, type) and issubclass(codec, Codec)):
        raise ConfigError(f"psgd.run: a codec is a name or a Codec subclass, got {codec!r:.60}")
    if in_process:
        return register_codec_class(codec)
    try:
        return f"{Path(inspect.getfile(codec)).resolve()}:{codec.__qualname__}"
    except (TypeError, OSError):
        raise ConfigError(
            f"psgd.run: {codec.__qualname__} is defined in no file (a notebook?); daemons need "
            "its source: put it in a .py file, or run in-process"
        ) from None
