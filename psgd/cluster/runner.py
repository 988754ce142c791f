"""Run a job end to end: prepare, train (in-process or on daemons), write the run folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from psgd.codec_params import unknown_at_start, unread_keys, unread_warnings
from psgd.errors import ConfigError, JobFailed
from psgd.job import JobSpec
from psgd.settings import GlobalSettings

__all__ = ["Target", "print_summary", "run_job"]


def _warn(lines: list[str], quiet: bool) -> None:
    for line in lines if not quiet else []:
        click.echo(f"warning: {line}", err=True)


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def print_summary(summary: dict[str, Any], out: Path) -> None:
    if "rounds" in summary:
        _print_round_summary(summary, out)
        return
    click.echo("")
    click.echo(f"job {summary['job_id']}: {summary['status']}")
    for node in summary["nodes"]:
        click.echo(
            f"  node {node['node']}: test accuracy {node['accuracy']:.4f}  "
            f"loss {node['loss']:.4f}  {node['samples_per_s']:.0f} samples/s  "
            f"{node['bytes_sent']} bytes sent"
        )
    if "ps" in summary["bytes_sent"]:
        click.echo(f"  parameter server: {summary['bytes_sent']['ps']} bytes sent")
    click.echo(
        f"  mean: test accuracy {summary['accuracy']:.4f}  loss {summary['loss']:.4f}  "
        f"{summary['samples_per_s']:.0f} samples/s  wall {summary['wall_s']:.1f}s"
    )
    click.echo(f"  records: {out}")


def _print_round_summary(summary: dict[str, Any], out: Path) -> None:
    click.echo("")
    click.echo(f"job {summary['job_id']}: {summary['status']}")
    what = "mean client accuracy" if summary["eval"] == "clients" else "test accuracy"
    if summary["evaluated_round"] is not None:
        click.echo(
            f"  round {summary['evaluated_round']}: {what} {summary['accuracy']:.4f}  "
            f"loss {summary['loss']:.4f}"
        )
    if "client_accuracy_p10" in summary:
        click.echo(
            f"  clients: 10th percentile {summary['client_accuracy_p10']:.4f}  "
            f"worst {summary['client_accuracy_worst']:.4f}"
        )
    if summary.get("target_accuracy") is not None:
        reached = summary.get("target_round")
        click.echo(
            f"  target {summary['target_accuracy']}: "
            + (f"reached in round {reached}" if reached else "not reached")
        )
    pace = f" ({summary['s_per_round']}s a round)" if summary["rounds"] else ""
    click.echo(
        f"  {summary['rounds']} rounds in {summary['wall_s']:.1f}s{pace}, "
        f"{summary['clients_trained']} clients trained, "
        f"up {_mb(summary['bytes_up'])} down {_mb(summary['bytes_down'])}"
    )
    click.echo(f"  records: {out}")


def _write_run(
    folder: Any, spec: JobSpec, result: Any, mode: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write summary, records, model, logs and plot of a finished (or failed) job."""
    from psgd.codec import Parameter_Server
    from psgd.results.report import build_summary, write_records

    if result.round_rows or result.figures:
        return _write_round_run(folder, spec, result, mode, extra)

    summary = build_summary(
        spec, result.reports, result.wall_s, result.ps_bytes_sent, result.error, mode,
        result.diverged,
    )  # fmt: skip
    summary.update(extra)
    write_records(folder, result.reports)
    for node, text in result.logs.items():
        if text:
            name = "ps.log" if node == Parameter_Server else f"worker-node{node}.log"
            folder.write_text(name, text + "\n")
    if result.weights and not result.error:
        _save_models(folder, spec, result.weights[min(result.weights)])
    _plot(folder, result, summary)
    folder.write_json("summary.json", summary)
    return summary


def _write_round_run(
    folder: Any, spec: JobSpec, result: Any, mode: str, extra: dict[str, Any]
) -> dict[str, Any]:
    from psgd.results.report import build_round_summary, write_round_records

    summary = build_round_summary(spec, result, mode)
    summary.update(extra)
    write_round_records(folder, result)
    if result.weights and not result.error:
        _save_models(folder, spec, next(iter(result.weights.values())))
    _plot(folder, result, summary)
    folder.write_json("summary.json", summary)
    return summary


def _save_models(folder: Any, spec: JobSpec, weights: list[Any]) -> None:
    """``model.npz`` (node 0's), or ``model-component<m>.npz`` for each mixture component."""
    import numpy as np

    from psgd.nn import MixtureMLP, build_learner, save_model

    model = build_learner(spec.model, spec.activation, spec.components, np.random.default_rng(0))
    model.set_weights(weights)
    if isinstance(model, MixtureMLP):
        for m, component in enumerate(model.components):
            save_model(component, folder.file(f"model-component{m}.npz"))
    else:
        save_model(model, folder.file("model.npz"))


def _plot(folder: Any, result: Any, summary: dict[str, Any]) -> None:
    from psgd.results.plot import plot_run
    from psgd.results.runs import NodeRecords, RunRecords

    nodes = [NodeRecords(r.node_id, r.batch_rows, r.epoch_rows) for r in result.reports]
    run = RunRecords(folder.path, summary, nodes, list(result.round_rows))
    try:
        plot_run(folder.file("plot.png"), run)
    except Exception:  # plotting is a convenience; never lose a run over it
        logging.getLogger(__name__).exception("could not draw plot.png")


@dataclass
class Target:
    """Where a job runs: in-process, on ``local`` loopback daemons, or on a worker.json's.

    ``keys`` is a CURVE key folder (``psgd keys generate``): the submitter authenticates with
    ``key_name`` and ``--local`` daemons are started with it.
    """

    simulate: bool = False
    local: int | None = None
    workers_file: Path | None = None
    keys: Path | None = None
    key_name: str = "submitter"

    def describe(self) -> str:
        if self.simulate:
            return "in-process"
        return f"{self.local} local daemons" if self.local else "daemons"


def run_job(
    spec: JobSpec,
    out: Path,
    quiet: bool = False,
    target: Target | None = None,
    resume: bool = False,
    local: int | None = None,
) -> dict[str, Any]:
    """Run ``spec`` on ``target`` (default: ``local`` loopback daemons, else in-process).

    With ``resume``, ``out`` is an interrupted run folder: every node continues from its
    last checkpoint there, and the records of the earlier epochs are kept.
    """
    from psgd.results.records import RunFolder
    from psgd.train.prepare import prepare_job

    target = target or Target(simulate=local is None, local=local)
    if target.local:
        target = dataclasses.replace(target, local=spec.node_count)
    states = _resumable(out, spec.node_count) if resume else None
    folder = RunFolder(out)
    log_handler = logging.FileHandler(folder.file("log.txt"))
    log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    psgd_logger = logging.getLogger("psgd")
    psgd_logger.addHandler(log_handler)
    psgd_logger.setLevel(logging.INFO)
    try:
        job = prepare_job(spec)
        classes = [*job.codec_classes, *(job.ps_classes or [])]
        _warn(unknown_at_start(spec.params, classes), quiet)
        folder.write_json("job.json", spec.to_dict())
        from psgd.train.rounds import is_round_job
        from psgd.train.vclock import check_emulation

        check_emulation(spec, target.simulate, is_round_job(job))
        if is_round_job(job):
            result, mode = _run_rounds(job, target, quiet, states is not None), "simulate"
        else:
            result, mode = _run_epochs(job, folder, target, quiet, states)
        read = GlobalSettings.params_read() | set(result.params_read)
        unread = unread_warnings(spec.params, classes, read)
        unread_names = unread_keys(spec.params, classes, read)
        extra = {"params_unread": unread_names, **result.emulated_entry()}
        summary = _write_run(folder, spec, result, mode, extra)
    finally:
        psgd_logger.removeHandler(log_handler)
        log_handler.close()
    if not quiet:
        print_summary(summary, out)
    _warn(unread, quiet)
    if summary["status"] != "completed":
        raise JobFailed(summary["error"])
    return summary


def _run_epochs(
    job: Any, folder: Any, target: Target, quiet: bool, states: dict[int, Any] | None
) -> tuple[Any, str]:
    """An epoch-based job, in-process or on daemons, with its progress display."""
    from psgd.results.progress import open_progress

    spec = job.spec
    steps = job.trainer_config.steps_per_epoch
    if not quiet:
        resumed = f", resuming after epoch {states[0]['epoch']}" if states else ""
        click.echo(
            f"job {spec.job_id}: {spec.node_count} nodes, codec {spec.codec}"
            + (f", ps codec {spec.ps_codec}" if spec.ps_codec else "")
            + f", {spec.sync}, {spec.epochs} epochs x {steps} batches, "
            + f"{target.describe()}{resumed}"
        )
    printer = open_progress(spec.epochs, steps, spec.node_count, quiet)
    job.trainer_config.progress_every = max(1, steps // printer.updates_per_epoch)
    try:
        if target.simulate:
            from psgd.train.simulate import simulate as run_in_process

            return run_in_process(job, printer, folder.path, states), "simulate"
        return _run_on_daemons(job, printer, folder, target, states), "network"
    finally:
        printer.close()


def _run_rounds(job: Any, target: Target, quiet: bool, resume: bool) -> Any:
    """A round-based federated job, in this process (on daemons: not yet)."""
    from psgd.results.progress import open_progress
    from psgd.train.executors import default_executor_count
    from psgd.train.rounds import DEFAULT_ROUNDS, run_rounds

    spec = job.spec
    if not target.simulate:
        raise ConfigError(
            f"{spec.codec_names()[0]} is a round-based client: round-based federated jobs run "
            "in-process for now; use --simulate (executors use every core)"
        )
    if resume:
        raise ConfigError("--resume: round-based jobs have no checkpoints yet")
    if not quiet:
        executors = default_executor_count() if spec.executors is None else spec.executors
        click.echo(
            f"job {spec.job_id}: {spec.node_count} clients, codec {spec.codec}, "
            f"ps codec {spec.ps_codec}, {spec.rounds or DEFAULT_ROUNDS} rounds, "
            f"{executors or 'no'} executor processes, in-process"
        )
    printer = open_progress(1, 1, spec.node_count, quiet, rounds=spec.rounds or DEFAULT_ROUNDS)
    try:
        return run_rounds(job, printer)
    finally:
        printer.close()


def _resumable(out: Path, node_count: int) -> dict[int, dict[str, Any]]:
    """The checkpoints to resume ``out`` from; a failed summary there is set aside."""
    from psgd.train.checkpoint import latest_common_epoch

    summary = out / "summary.json"
    if summary.exists():
        if json.loads(summary.read_text()).get("status") == "completed":
            raise ConfigError(f"--resume {out}: that run already completed")
        summary.rename(out / f"summary-failed-{time.strftime('%Y%m%d-%H%M%S')}.json")
    return latest_common_epoch(out, node_count)


def _run_on_daemons(
    job: Any,
    printer: Any,
    folder: Any,
    target: Target,
    states: dict[int, dict[str, Any]] | None,
) -> Any:
    from psgd.cluster.local import LocalCluster
    from psgd.cluster.submit import Submitter
    from psgd.cluster.workers import load_workers
    from psgd.net.security import Security

    spec = job.spec
    keys, workers_file = target.keys, target.workers_file
    security = Security.for_submitter(keys, target.key_name) if keys else None
    saving = {"checkpoint_dir": folder.path, "resume": states}
    if target.local:
        logs = folder.file("daemons")
        with LocalCluster(target.local, job.ps_classes is not None, logs, keys) as cluster:
            submitter = Submitter(
                job, cluster.workers, cluster.ps_endpoint, printer, security=security, **saving
            )
            return submitter.run()
    listed = load_workers(workers_file or Path("worker.json"))
    if spec.node_count > len(listed.workers):
        raise ConfigError(
            f"--node_count {spec.node_count} but {workers_file or 'worker.json'} lists "
            f"{len(listed.workers)} workers"
        )
    if job.ps_classes is not None and listed.ps is None:
        raise ConfigError(f"--ps-codec given but {workers_file or 'worker.json'} has no PS entry")
    submitter = Submitter(
        job, listed.workers[: spec.node_count], listed.ps, printer, security=security, **saving
    )
    return submitter.run()
