"""``job_submit.py`` / ``psgd-submit``: train a model with a plug-in codec, anywhere."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from psgd.cli.aliases import PARALLEL_SGD_OPTIMIZERS, apply_parallel_sgd_optimizer
from psgd.cli.argv import ARGV, KeepsArgv, detach_argv, sigterm_as_interrupt
from psgd.cli.link_options import link_options
from psgd.cli.params import LayerSizes, ParamType
from psgd.cli.round_options import round_options
from psgd.cli.tools import retrieve
from psgd.cluster.runner import Target, run_job
from psgd.errors import ConfigError, JobFailed, PsgdError
from psgd.job import EXCHANGE_MODES, SYNC_NAMES, JobSpec

__all__ = ["submit", "submit_main"]

_OPTIMIZERS = ["sgd", "momentum", "adam", "adagrad", "rmsprop"]
_PARTITIONS = ["iid", "noniid", "shards", "dirichlet", "unequal", "natural"]


@click.command(
    cls=KeepsArgv,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--codec",
    default="plain.Plain",
    show_default=True,
    help="Worker codec: module.Class (looked up in ./codecs/, the built-in codecs, "
    "then sys.path) or path/to/file.py:Class. Per layer: 'plain.Plain,4=dummy.DummyCodec'.",
)
@click.option(
    "--ps-codec",
    "--server_codec",
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
    type=click.Choice(_OPTIMIZERS + list(PARALLEL_SGD_OPTIMIZERS)),
    default="adam",
    show_default=True,
    help="Local update rule that turns gradients into steps. Parallel-SGD's training modes "
    "are accepted too: parallel_sgd, gradient_averaging, parameter_averaging, "
    "double_buffering (they set --exchange/--sync, with sgd as the local rule).",
)
@click.option(
    "--exchange",
    type=click.Choice(EXCHANGE_MODES),
    default="auto",
    show_default=True,
    help="What flows through codecs: 'delta' (steps; merged result is subtracted), "
    "'params' (weights; merged result replaces them), 'accumulate' (steps; the weights become "
    "the initial weights plus the merged result), 'auto' (codec's own choice).",
)
@click.option(
    "--sync",
    "--parallel_sgd",
    "--psgd",
    "sync",
    type=click.Choice(list(SYNC_NAMES)),
    default="ssgd",
    show_default=True,
    help="ssgd: wait for every merged result after each batch; asgd: never wait; "
    "double_buffer: apply each batch's result one batch late (communication overlaps compute).",
)
@click.option(
    "--assignment",
    "--block_assignment",
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
    help="'mnist' (from data/mnist), a .npz with x_train, y_train, x_test, y_test, a .csv with "
    "a label column, cifar10:PATH (official archive or folder), leaf:PATH (LEAF data folder).",
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
    help="MLP layer sizes (input to output; or mlp:784,200,10), a built-in model (cnn-mnist, "
    "cnn-cifar, logreg), or your learner's builder: path/to/file.py:build or module.build "
    "(see docs/models.md).",
)
@click.option(
    "--loss",
    type=click.Choice(["ce", "softmax_cross_entropy", "bce", "binary_cross_entropy", "mse"]),
    default=None,
    help="Training loss [default: the model's own; softmax cross-entropy, logreg: binary].",
)
@click.option(
    "--init",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Start from this model file (a psgd model.npz); names and shapes must match.",
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
@click.option(
    "--partition-arg",
    "partition_args",
    type=ParamType(),
    multiple=True,
    help="Option of the partition scheme, e.g. alpha=0.5 (dirichlet), "
    "shards_per_part=2 (shards), sigma=1.0 (unequal); repeatable.",
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    metavar="NODE:KIND[:ARG]",
    help="Simulate an attack on a node: label_flip[:a->b], sign_flip[:scale], "
    "gaussian[:sigma], scale[:factor]; repeatable.",
)
@click.option("--simulate", is_flag=True, help="Run every node in this process (no daemons).")
@click.option(
    "--local",
    type=click.IntRange(min=1),
    default=None,
    help="Start N worker daemons on loopback (and one for the PS), run, stop them. "
    "Implies --node_count N; a round-based federated job may give a larger --node_count, "
    "whose clients the N daemons host.",
)
@click.option(
    "--workers",
    "workers_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="worker.json listing the daemons (default ./worker.json).",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only errors.")
@click.option(
    "--detach",
    is_flag=True,
    help="Leave the job running in the background; fetch the results later with "
    "'job_submit.py retrieve RUN_DIR'.",
)
@click.option(
    "--keys",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="CURVE key folder (psgd keys generate) for daemons started "
    "with --keys; --local daemons get it too.",
)
@click.option(
    "--key-name",
    default="submitter",
    show_default=True,
    help="Which key pair in --keys is this submitter's.",
)
@click.option(
    "--components",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Learners per node: >1 trains FedEM's mixture of that many MLPs (mixture weights stay "
    "local; every component's variables go through the codecs).",
)
@click.option(
    "--checkpoint-every",
    "checkpoint_every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Save every node's model, optimizer and progress into "
    "the run folder every K epochs (0: never).",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Continue an interrupted run folder from its last checkpoint "
    "(job options come from its job.json; give --local/--workers/--simulate).",
)
@round_options
@link_options
@click.option("--job-id", "job_id", default=None, hidden=True)
@click.pass_context
def submit(ctx: click.Context, **options: Any) -> None:
    """Train a model with a plug-in communication codec.

    \b
    Examples:
      python job_submit.py --local 2                  # 2 daemons on loopback, MNIST, Plain
      python job_submit.py --simulate                 # the same job in-process
      python job_submit.py --workers worker.json --codec fedavg.FedAvgClient \\
          --ps-codec fedavg.FedAvgServer --node_count 4 --param local_steps=50
      python job_submit.py --simulate --codec federated.FedAvgClient \\
          --ps-codec federated.FedAvgServer --node_count 100 --rounds 50   # FL rounds
      python job_submit.py retrieve runs/<job-id>     # results of a --detach job
    """
    simulate_flag = options.pop("simulate")
    quiet = options.pop("quiet")
    out = options.pop("out")
    local = options.pop("local")
    workers_file = options.pop("workers_file")
    detach_flag = options.pop("detach")
    resume_dir = options.pop("resume")
    target = Target(
        simulate_flag, local, workers_file, options.pop("keys"), options.pop("key_name")
    )
    if options["job_id"] is None:
        options.pop("job_id")
    options["params"] = dict(options["params"])
    options["partition_args"] = dict(options["partition_args"])
    options["attacks"] = list(options["attacks"])
    if local and ctx.get_parameter_source("node_count") != click.core.ParameterSource.COMMANDLINE:
        options["node_count"] = local  # a round job may host more clients than daemons
    try:
        apply_parallel_sgd_optimizer(options)
        if simulate_flag and (local or workers_file):
            raise ConfigError("--simulate runs in-process: drop --local / --workers")
        if resume_dir is not None:
            spec, out = _resumed_spec(resume_dir, out, options.get("job_id")), resume_dir
        else:
            spec = JobSpec(**options)
            out = out or Path("runs") / spec.job_id
        if detach_flag:
            _detach(ctx, out, spec.job_id)
            return
        with sigterm_as_interrupt() as received:
            try:
                run_job(spec, out, quiet, target, resume=resume_dir is not None)
            except KeyboardInterrupt:
                signum = received[0] if received else signal.SIGINT
                click.echo(f"interrupted ({signal.Signals(signum).name}): job aborted", err=True)
                sys.exit(128 + signum)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except JobFailed as exc:
        click.echo(f"job failed: {exc}", err=True)
        sys.exit(1)
    except PsgdError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _resumed_spec(run_dir: Path, out: Path | None, job_id: str | None) -> JobSpec:
    """The job of an interrupted run folder, under a new job id."""
    from psgd.job import new_job_id

    if out is not None and out.resolve() != run_dir.resolve():
        raise ConfigError("--resume continues in its own run folder: drop --out")
    try:
        saved = json.loads((run_dir / "job.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume {run_dir}: no readable job.json ({exc})") from None
    saved["job_id"] = job_id or new_job_id()
    return JobSpec.from_dict(saved)


def _detach(ctx: click.Context, out: Path, job_id: str) -> None:
    from psgd.cluster.detach import SUBMITTER_LOG, detach

    pid = detach(detach_argv(ctx.command, ctx.meta.get(ARGV, [])), out, job_id)
    click.echo(f"job {job_id} detached (background submitter pid {pid})")
    click.echo(f"  progress: {out / SUBMITTER_LOG}")
    click.echo(f"  results:  python job_submit.py retrieve {out}")


def submit_main() -> None:
    """Console-script entry of ``psgd-submit``."""
    if sys.argv[1:2] == ["retrieve"]:
        retrieve(args=sys.argv[2:], prog_name="job_submit.py retrieve")
    submit(prog_name="job_submit.py")
