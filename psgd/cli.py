"""Command line: ``job_submit.py`` / ``psgd-submit`` and ``worker.py`` / ``psgd-worker``."""

from __future__ import annotations

import logging
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


def run_simulated(spec: JobSpec, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Run ``spec`` in-process, write the run folder, return the summary."""
    from psgd.prepare import prepare_job
    from psgd.records import RunFolder
    from psgd.report import build_summary, write_records
    from psgd.simulate import simulate

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
        if not quiet:
            click.echo(
                f"job {spec.job_id}: {spec.node_count} nodes, codec {spec.codec}"
                + (f", ps codec {spec.ps_codec}" if spec.ps_codec else "")
                + f", {spec.sync}, {spec.epochs} epochs x {steps} batches, in-process"
            )
        result = simulate(job, _Printer(spec.epochs, quiet))
        ps_bytes = result.ps_bytes_sent if job.ps_classes else None
        summary = build_summary(spec, result.reports, result.wall_s, ps_bytes, result.error)
        write_records(folder, result.reports)
        if result.models and not result.error:
            from psgd.nn import save_model

            save_model(result.models[min(result.models)], folder.file("model.npz"))
        folder.write_json("summary.json", summary)
    finally:
        psgd_logger.removeHandler(log_handler)
        log_handler.close()
    if not quiet:
        _print_summary(summary, out)
    if summary["status"] != "completed":
        raise JobFailed(summary["error"])
    return summary


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
    options["params"] = dict(options["params"])
    try:
        spec = JobSpec(**options)
        if not simulate_flag:
            raise ConfigError(
                "networked jobs (worker daemons) are not available yet in this version; "
                "run in-process with --simulate"
            )
        run_simulated(spec, out or Path("runs") / spec.job_id, quiet)
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


def worker_main() -> None:
    """Console-script entry of ``psgd-worker`` (networked workers: issue 3)."""
    click.echo("psgd-worker: the worker daemon is not available yet in this version", err=True)
    sys.exit(2)
