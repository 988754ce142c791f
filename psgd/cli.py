"""Command line: ``job_submit.py`` / ``psgd-submit`` and ``worker.py`` / ``psgd-worker``."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from psgd.errors import ConfigError, JobFailed, PsgdError
from psgd.job import EXCHANGE_MODES, JobSpec, parse_param

__all__ = ["submit", "submit_main", "worker_main"]

_OPTIMIZERS = ["sgd", "momentum", "adam", "adagrad", "rmsprop"]
_PARTITIONS = ["iid", "noniid", "shards", "dirichlet", "unequal"]


class ParamType(click.ParamType):
    """``key=value`` for ``GlobalSettings.get_params``."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_param(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class LayerSizes(click.ParamType):
    """Comma-separated layer sizes: ``784,128,128,10``."""

    name = "SIZES"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            sizes = [int(part) for part in str(value).split(",")]
        except ValueError:
            self.fail(f"expected comma-separated whole numbers like 784,128,128,10, got {value!r}")
        if len(sizes) < 2 or min(sizes) < 1:
            self.fail(f"expected at least two sizes >= 1, got {value!r}")
        return sizes


class _Printer:
    """Progress lines for the user, one thread at a time."""

    def __init__(self, epochs: int, quiet: bool) -> None:
        self.epochs = epochs
        self.quiet = quiet
        self.lock = threading.Lock()
        self.start = time.perf_counter()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.start
        with self.lock:
            head = f"[{elapsed:7.1f}s] epoch {event['epoch']}/{self.epochs}  node {event['node']}"
            if event["type"] == "epoch":
                click.echo(
                    f"{head}  test loss {event['test_loss']:.4f}  "
                    f"test accuracy {event['test_accuracy']:.4f}"
                )
            elif event["type"] == "progress":
                click.echo(
                    f"{head}  batch {event['batch']}/{event['batches']}  loss {event['loss']:.4f}"
                )


def _print_summary(summary: dict[str, Any], out: Path) -> None:
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


def _write_run(folder: Any, spec: JobSpec, result: Any, mode: str) -> dict[str, Any]:
    """Write summary, records, model, logs and plot of a finished (or failed) job."""
    from psgd.codec import Parameter_Server
    from psgd.report import build_summary, write_records

    summary = build_summary(
        spec, result.reports, result.wall_s, result.ps_bytes_sent, result.error, mode
    )
    write_records(folder, result.reports)
    for node, text in result.logs.items():
        if text:
            name = "ps.log" if node == Parameter_Server else f"worker-node{node}.log"
            folder.write_text(name, text + "\n")
    if result.weights and not result.error:
        import numpy as np

        from psgd.nn import build_mlp, save_model

        model = build_mlp(spec.model, activation=spec.activation, rng=np.random.default_rng(0))
        model.set_weights(result.weights[min(result.weights)])
        save_model(model, folder.file("model.npz"))
    _plot(folder, result)
    folder.write_json("summary.json", summary)
    return summary


def _plot(folder: Any, result: Any) -> None:
    try:
        from psgd.plot import plot_run
    except ImportError:  # plotting is a convenience; never lose a run over it
        return
    losses = {f"node {r.node_id}": [row["loss"] for row in r.batch_rows] for r in result.reports}
    accuracy = {
        f"node {r.node_id}": [row["test_accuracy"] for row in r.epoch_rows] for r in result.reports
    }
    try:
        plot_run(folder.file("plot.png"), losses, accuracy, title=folder.path.name)
    except Exception:
        logging.getLogger(__name__).exception("could not draw plot.png")


def run_job(
    spec: JobSpec,
    out: Path,
    quiet: bool = False,
    local: int | None = None,
    workers_file: Path | None = None,
    simulate: bool = False,
) -> dict[str, Any]:
    """Run ``spec`` in-process, on ``--local`` daemons or on the daemons of a worker.json."""
    from psgd.prepare import prepare_job
    from psgd.records import RunFolder

    folder = RunFolder(out)
    log_handler = logging.FileHandler(folder.file("log.txt"))
    log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    psgd_logger = logging.getLogger("psgd")
    psgd_logger.addHandler(log_handler)
    psgd_logger.setLevel(logging.INFO)
    try:
        job = prepare_job(spec)
        folder.write_json("job.json", spec.to_dict())
        steps = job.trainer_config.steps_per_epoch
        job.trainer_config.progress_every = max(1, steps // 4)
        where = "in-process" if simulate else (f"{local} local daemons" if local else "daemons")
        if not quiet:
            click.echo(
                f"job {spec.job_id}: {spec.node_count} nodes, codec {spec.codec}"
                + (f", ps codec {spec.ps_codec}" if spec.ps_codec else "")
                + f", {spec.sync}, {spec.epochs} epochs x {steps} batches, {where}"
            )
        printer = _Printer(spec.epochs, quiet)
        if simulate:
            from psgd.simulate import simulate as run_in_process

            result = run_in_process(job, printer)
        else:
            result = _run_on_daemons(job, printer, folder, local, workers_file)
        summary = _write_run(folder, spec, result, "simulate" if simulate else "network")
    finally:
        psgd_logger.removeHandler(log_handler)
        log_handler.close()
    if not quiet:
        _print_summary(summary, out)
    if summary["status"] != "completed":
        raise JobFailed(summary["error"])
    return summary


def _run_on_daemons(
    job: Any, printer: Any, folder: Any, local: int | None, workers_file: Path | None
) -> Any:
    from psgd.local import LocalCluster
    from psgd.submit import Submitter
    from psgd.workers import load_workers

    spec = job.spec
    if local:
        with LocalCluster(local, job.ps_classes is not None, folder.file("daemons")) as cluster:
            submitter = Submitter(job, cluster.workers, cluster.ps_endpoint, printer)
            return submitter.run()
    listed = load_workers(workers_file or Path("worker.json"))
    if spec.node_count > len(listed.workers):
        raise ConfigError(
            f"--node_count {spec.node_count} but {workers_file or 'worker.json'} lists "
            f"{len(listed.workers)} workers"
        )
    if job.ps_classes is not None and listed.ps is None:
        raise ConfigError(f"--ps-codec given but {workers_file or 'worker.json'} has no PS entry")
    submitter = Submitter(job, listed.workers[: spec.node_count], listed.ps, printer)
    return submitter.run()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--codec",
    default="plain.Plain",
    show_default=True,
    help="Worker codec: module.Class (looked up in ./codecs/, the built-in codecs, "
    "then sys.path) or path/to/file.py:Class. Per layer: 'plain.Plain,4=dummy.DummyCodec'.",
)
@click.option(
    "--ps-codec",
    "ps_codec",
    default=None,
    help="Parameter-server codec (same naming); adds a server node.",
)
@click.option(
    "--node_count",
    "--node-count",
    "node_count",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Number of worker nodes.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Passes over each node's data.",
)
@click.option(
    "--batch_size",
    "--batch-size",
    "batch_size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Samples per node per step (split over the blocks it holds).",
)
@click.option(
    "--learn_rate",
    "--learn-rate",
    "learn_rate",
    type=click.FloatRange(min=0, min_open=True),
    default=0.001,
    show_default=True,
    help="Learning rate of the local optimizer.",
)
@click.option(
    "--optimizer",
    type=click.Choice(_OPTIMIZERS),
    default="adam",
    show_default=True,
    help="Local update rule that turns gradients into steps.",
)
@click.option(
    "--exchange",
    type=click.Choice(EXCHANGE_MODES),
    default="auto",
    show_default=True,
    help="What flows through codecs: 'delta' (steps; merged result is subtracted), "
    "'params' (weights; merged result replaces them), 'auto' (codec's own choice).",
)
@click.option(
    "--sync",
    type=click.Choice(["ssgd", "asgd"]),
    default="ssgd",
    show_default=True,
    help="ssgd: wait for every merged result after each batch; asgd: never wait.",
)
@click.option(
    "--assignment",
    type=click.Choice(["iid", "duplicate"]),
    default="iid",
    show_default=True,
    help="Block assignment of data blocks to nodes.",
)
@click.option(
    "--redundancy",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many nodes hold each data block.",
)
@click.option(
    "--dataset",
    default="mnist",
    show_default=True,
    help="'mnist' (from data/mnist) or a .npz with x_train, y_train, x_test, y_test.",
)
@click.option(
    "--partition",
    type=click.Choice(_PARTITIONS),
    default="iid",
    show_default=True,
    help="How training data is split into blocks.",
)
@click.option(
    "--model",
    type=LayerSizes(),
    default="784,128,128,10",
    show_default=True,
    help="MLP layer sizes, input to output.",
)
@click.option(
    "--activation",
    type=click.Choice(["relu", "tanh", "sigmoid"]),
    default="relu",
    show_default=True,
    help="Hidden-layer activation.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initial model, partitions and batch order.",
)
@click.option(
    "--param",
    "params",
    type=ParamType(),
    multiple=True,
    help="Extra job parameter for codecs (GlobalSettings.get_params); repeatable.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="SSGD: seconds to wait for a merged result before the codec's retry, then failure.",
)
@click.option(
    "--train-samples",
    "train_samples",
    type=click.IntRange(min=1),
    default=None,
    help="Use only the first N training samples (quick runs).",
)
@click.option(
    "--test-samples",
    "test_samples",
    type=click.IntRange(min=1),
    default=None,
    help="Use only the first N test samples.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder (default runs/<job-id>/); a finished run is never overwritten.",
)
@click.option("--simulate", is_flag=True, help="Run every node in this process (no daemons).")
@click.option(
    "--local",
    type=click.IntRange(min=1),
    default=None,
    help="Start N worker daemons on loopback (and one for the PS), run, stop them. "
    "Implies --node_count N.",
)
@click.option(
    "--workers",
    "workers_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="worker.json listing the daemons (default ./worker.json).",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only errors.")
def submit(**options: Any) -> None:
    """Train a model with a plug-in communication codec.

    \b
    Examples:
      python job_submit.py --simulate                       # MNIST, Plain, 2 nodes, in-process
      python job_submit.py --simulate --codec fedavg.FedAvgClient \\
          --ps-codec fedavg.FedAvgServer --node_count 4 --param local_steps=50
    """
    simulate_flag = options.pop("simulate")
    quiet = options.pop("quiet")
    out = options.pop("out")
    local = options.pop("local")
    workers_file = options.pop("workers_file")
    options["params"] = dict(options["params"])
    if local:
        options["node_count"] = local
    try:
        if simulate_flag and (local or workers_file):
            raise ConfigError("--simulate runs in-process: drop --local / --workers")
        spec = JobSpec(**options)
        run_job(spec, out or Path("runs") / spec.job_id, quiet, local, workers_file, simulate_flag)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except JobFailed as exc:
        click.echo(f"job failed: {exc}", err=True)
        sys.exit(1)
    except PsgdError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def submit_main() -> None:
    """Console-script entry of ``psgd-submit``."""
    submit(prog_name="job_submit.py")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=15387,
    show_default=True,
    help="Control port; 0 picks a free port and prints the address.",
)
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0 for every interface).",
)
@click.option(
    "--log-dir",
    "log_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("logs"),
    show_default=True,
    help="Folder of the daemon's log file.",
)
def worker(port: int, bind: str, log_dir: Path) -> None:
    """Start a psgd worker daemon: serves jobs one after another until Ctrl-C / SIGTERM."""
    from psgd.daemon import Daemon

    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        daemon = Daemon(bind=bind, port=port)
    except PsgdError as exc:
        click.echo(f"psgd-worker: {exc}", err=True)
        sys.exit(1)
    log_file = log_dir / f"worker-{daemon.port}.log"
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(log_file)]
    for handler in handlers:
        handler.setFormatter(formatter)
        logging.getLogger("psgd").addHandler(handler)
    logging.getLogger("psgd").setLevel(logging.INFO)
    click.echo(f"psgd worker listening on {daemon.address} (pid {os.getpid()}, log {log_file})")
    sys.stdout.flush()
    daemon.install_signal_handlers()
    daemon.serve_forever()


@click.group()
def main() -> None:
    """psgd commands."""


main.add_command(submit)
main.add_command(worker)


def worker_main() -> None:
    """Console-script entry of ``psgd-worker``."""
    worker(prog_name="worker.py")


if __name__ == "__main__":
    main()
