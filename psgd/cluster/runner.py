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
from psgd.net.wire_objects import job_classes
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
    if "server_accuracy" in summary:
        click.echo(
            f"  server model: test accuracy {summary['server_accuracy']:.4f}  "
            f"loss {summary['server_loss']:.4f}  (model.npz)"
        )
    click.echo(
        f"  mean: test accuracy {summary['accuracy']:.4f}  loss {summary['loss']:.4f}  "
        f"{summary['samples_per_s']:.0f} samples/s  wall {summary['wall_s']:.1f}s"
    )
    _print_virtual(summary)
    click.echo(f"  records: {out}")


def _print_virtual(summary: dict[str, Any]) -> None:
    """The virtual clock's wall time, when links or devices were emulated."""
    if summary.get("virtual_wall_s") is not None:
        click.echo(
            f"  virtual clock (emulated links and devices): wall {summary['virtual_wall_s']:.2f}s"
        )


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
    _print_virtual(summary)
    click.echo(f"  records: {out}")


def _write_run(
    folder: Any, job: Any, result: Any, mode: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write summary, records, model, logs and plot of a finished (or failed) job."""
    from psgd.codec import Parameter_Server
    from psgd.results.report import build_summary, write_records

    spec = job.spec
    if result.round_rows or result.figures:
        return _write_round_run(folder, job, result, mode, extra)

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
    server = result.weights.get(Parameter_Server)
    if server is not None and not result.error:
        # the server's model (EASGD's centre, ASGD's weights) is the job's model
        summary["server_loss"], summary["server_accuracy"] = _save_models(folder, job, server)
        for node, weights in result.weights.items():
            if node != Parameter_Server:
                _save_models(folder, job, weights, f"model-node{node}", evaluate=False)
        from psgd.train.server_model import server_row

        last = server_row(spec.epochs, summary["server_loss"], summary["server_accuracy"],
                          result.wall_s)  # fmt: skip
        result.server_rows = [*result.server_rows, last]
    elif result.weights and not result.error:
        _save_models(folder, job, result.weights[min(result.weights)], evaluate=False)
    if result.server_rows:  # the server's model per epoch, the last one the end-of-job one
        folder.write_csv("server_eval.csv", result.server_rows)
    _plot(folder, result, summary)
    folder.write_json("summary.json", summary)
    return summary


def _write_round_run(
    folder: Any, job: Any, result: Any, mode: str, extra: dict[str, Any]
) -> dict[str, Any]:
    from psgd.codec import Parameter_Server
    from psgd.results.report import build_round_summary, write_round_records

    summary = build_round_summary(job.spec, result, mode)
    summary.update(extra)
    write_round_records(folder, result)
    for node, text in result.logs.items():
        if text:
            name = "ps.log" if node == Parameter_Server else f"pool{node}.log"
            folder.write_text(name, text + "\n")
    if result.weights and not result.error:
        _save_models(folder, job, next(iter(result.weights.values())), evaluate=False)
    _plot(folder, result, summary)
    folder.write_json("summary.json", summary)
    return summary


def _save_models(
    folder: Any, job: Any, weights: list[Any], name: str = "model", evaluate: bool = True
) -> tuple[float, float]:
    """``<name>.npz``, or ``<name>-component<m>.npz`` for each mixture component; with
    ``evaluate``, the model's test loss and accuracy (else zeros)."""
    from psgd.errors import ModelError
    from psgd.nn import MixtureMLP, save_model

    model = job.build_model()
    model.set_weights(weights)
    if isinstance(model, MixtureMLP):
        for m, component in enumerate(model.components):
            save_model(component, folder.file(f"{name}-component{m}.npz"))
    else:
        try:
            save_model(model, folder.file(f"{name}.npz"))
        except ModelError:  # layers psgd cannot rebuild: keep the weights
            save_model(model, folder.file(f"{name}.npz"), weights_only=True)
    if not evaluate:
        return 0.0, 0.0
    loss, accuracy = model.evaluate(job.dataset.x_test, job.dataset.y_test)
    return round(float(loss), 6), round(float(accuracy), 6)


def _plot(folder: Any, result: Any, summary: dict[str, Any]) -> None:
    from psgd.results.plot import plot_run
    from psgd.results.runs import NodeRecords, RunRecords

    nodes = [NodeRecords(r.node_id, r.batch_rows, r.epoch_rows) for r in result.reports]
    run = RunRecords(folder.path, summary, nodes, list(result.round_rows), result.server_rows)
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
    #: Where ``--local`` daemons of a round job write their logs (the run folder's).
    log_dir: Path = Path("daemons")

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
        from psgd.cluster.round_runner import run_round_job
        from psgd.train.rounds import is_round_job
        from psgd.train.vclock import check_emulation

        check_emulation(spec, target.simulate)
        with job_classes(classes):  # their objects may travel as content, in this job only
            if is_round_job(job):
                target = dataclasses.replace(target, log_dir=folder.file("daemons"))
                result, mode = run_round_job(job, target, quiet, states is not None)
            else:
                if target.local and target.local != spec.node_count:
                    raise ConfigError(
                        f"--local {target.local} starts one daemon per node of a per-batch job, "
                        f"but --node_count is {spec.node_count}: give one of them (round-based "
                        "federated jobs spread --node_count clients over the --local daemons)"
                    )
                result, mode = _run_epochs(job, folder, target, quiet, states)
        read = GlobalSettings.params_read() | set(result.params_read)
        unread = unread_warnings(spec.params, classes, read)
        unread_names = unread_keys(spec.params, classes, read)
        extra = {"params_unread": unread_names, **result.emulated_entry()}
        summary = _write_run(folder, job, result, mode, extra)
    finally:
        GlobalSettings.clear_default()  # nothing of this job is visible to the next one
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
