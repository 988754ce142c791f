"""Running a round-based federated job: in-process, or on daemons hosting client pools.

``run_round_job`` is ``run_job``'s branch for jobs whose client codec waits for a model
(``psgd.train.rounds.is_round_job``): it announces the job, shows its progress and runs it
in this process (``psgd.train.rounds``) or on ``--local``/``worker.json`` daemons
(``psgd.cluster.round_submit``), returning the ``RunResult`` and its mode.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from psgd.errors import ConfigError

__all__ = ["run_round_job"]


def run_round_job(job: Any, target: Any, quiet: bool, resume: bool) -> tuple[Any, str]:
    """A round-based federated job, in this process or on daemons hosting client pools."""
    from psgd.results.progress import open_progress
    from psgd.train.executors import default_executor_count
    from psgd.train.rounds import DEFAULT_ROUNDS, run_rounds

    spec = job.spec
    if resume:
        raise ConfigError("--resume: round-based jobs have no checkpoints yet")
    if spec.checkpoint_every:
        raise ConfigError(
            "--checkpoint-every: round-based federated jobs have no checkpoints yet (only "
            "per-batch epoch jobs do); drop the option to run this job without them"
        )
    rounds = spec.rounds or DEFAULT_ROUNDS
    if target.simulate:
        executors = default_executor_count() if spec.executors is None else spec.executors
        where = f"{executors or 'no'} executor processes, in-process"
    else:
        pools, _ = _round_daemons(job, target)
        where = f"{len(pools)} worker daemons hosting them" + (
            f" ({target.local} local)" if target.local else ""
        )
    if not quiet:
        click.echo(
            f"job {spec.job_id}: {spec.node_count} clients, codec {spec.codec}, "
            f"ps codec {spec.ps_codec}, {rounds} rounds, {where}"
        )
    printer = open_progress(1, 1, spec.node_count, quiet, rounds=rounds)
    try:
        if target.simulate:
            return run_rounds(job, printer), "simulate"
        return _run_rounds_on_daemons(job, target, printer), "network"
    finally:
        printer.close()


def _round_daemons(job: Any, target: Any) -> tuple[list[Any], Any]:
    """The worker daemons that host a round job's clients (at most one per client), its PS."""
    from psgd.cluster.workers import load_workers

    if target.local:
        return [None] * min(target.local, job.spec.node_count), None
    workers_file = target.workers_file or Path("worker.json")
    listed = load_workers(workers_file)
    if listed.ps is None:
        raise ConfigError(f"a round job needs a PS daemon: {workers_file} has no PS entry")
    return listed.workers[: job.spec.node_count], listed.ps


def _run_rounds_on_daemons(job: Any, target: Any, printer: Any) -> Any:
    from psgd.cluster.local import LocalCluster
    from psgd.cluster.round_submit import RoundSubmitter
    from psgd.net.security import Security
    from psgd.train.executors import default_executor_count
    from psgd.train.rounds import DEFAULT_ROUNDS, RoundRecorder, round_result

    spec = job.spec
    security = Security.for_submitter(target.keys, target.key_name) if target.keys else None
    record = RoundRecorder(job, spec.rounds or DEFAULT_ROUNDS, printer)
    pools, ps = _round_daemons(job, target)
    executors = spec.executors
    try:
        if target.local:  # the local daemons share this host's cores
            if executors is None:
                executors = max(1, default_executor_count() // len(pools))
            with LocalCluster(len(pools), True, target.log_dir, target.keys) as cluster:
                submitter = RoundSubmitter(
                    job, cluster.workers, cluster.ps_endpoint, record, executors,
                    record.start_clock, security=security,
                )  # fmt: skip
                result = _follow(submitter, record)
                end = time.perf_counter()  # before the local daemons stop
        else:
            submitter = RoundSubmitter(
                job, pools, ps, record, executors, record.start_clock, security=security
            )
            result = _follow(submitter, record)
            end = time.perf_counter()
        if result.error is None:
            record.complete(wait=True)
    finally:
        record.close()
    trained = sum(int(p.get("clients_trained", 0)) for p in result.figures["pools"])
    done = round_result(
        record, result.error, result.diverged, result.ps_bytes_sent or 0, trained,
        executors or 0, result.logs, end,
    )  # fmt: skip
    done.params_read = result.params_read
    done.figures["pools"] = len(pools)
    return done


def _follow(submitter: Any, record: Any) -> Any:
    """Run a round job's submitter; with ``--eval clients`` its pools evaluate their clients."""
    if record.spec.eval == "clients":
        record.remote = submitter.evaluate_on_pools
        submitter.on_evaluated = lambda: record.complete(wait=False)
    return submitter.run()
