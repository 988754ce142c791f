"""``psgd status`` and ``job_submit.py retrieve``: look at daemons and at (detached) runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from psgd.errors import ConfigError

__all__ = ["retrieve", "status"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow the progress until the job ends, or print what is there now.",
)
def retrieve(run_dir: Path, wait: bool) -> None:
    """Show the results of a (detached) job's RUN_DIR, following its progress while it runs."""
    from psgd.cluster.detach import retrieve as follow
    from psgd.cluster.runner import print_summary

    try:
        summary = follow(run_dir, wait, click.echo)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if summary is None:
        click.echo(f"job still running; results will be in {run_dir}")
        sys.exit(3)
    print_summary(summary, run_dir)
    if summary["status"] != "completed":
        click.echo(f"job failed: {summary['error']}", err=True)
        sys.exit(1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("addresses", nargs=-1)
@click.option(
    "--workers",
    "workers_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="worker.json whose daemons to ask (default ./worker.json).",
)
@click.option(
    "--keys",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="CURVE key folder, for daemons started with --keys.",
)
@click.option("--key-name", default="submitter", show_default=True)
def status(
    addresses: tuple[str, ...], workers_file: Path | None, keys: Path | None, key_name: str
) -> None:
    """Ask daemons (host:port ADDRESSES, or those of a worker.json) whether they are idle."""
    from psgd.cluster.probe import ask_state
    from psgd.cluster.workers import load_workers, parse_endpoint
    from psgd.net.security import Security

    try:
        if addresses:
            named = [(a, parse_endpoint(a, a)) for a in addresses]
        else:
            listed = load_workers(workers_file or Path("worker.json"))
            named = [(f"Worker[{i}]", e) for i, e in enumerate(listed.workers)]
            named += [("PS", listed.ps)] if listed.ps else []
        security = Security.for_submitter(keys, key_name) if keys else None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    silent = 0
    for name, endpoint in named:
        state = ask_state(endpoint, timeout_s=2.0, security=security)
        silent += state == "silent"
        click.echo(f"{name:>10}  {endpoint}  {state}")
    sys.exit(1 if silent else 0)
