"""``worker.py`` / ``psgd-worker``: start a worker daemon."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path

import click

from psgd.errors import ConfigError, PsgdError
from psgd.net import wire

__all__ = ["worker"]

_MB = 1_000_000


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_to(log_file: Path) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(log_file)]
    for handler in handlers:
        handler.setFormatter(formatter)
        logging.getLogger("psgd").addHandler(handler)
    logging.getLogger("psgd").setLevel(logging.INFO)


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
    help="Interface to listen on (0.0.0.0 for every interface; needs --keys or --insecure).",
)
@click.option(
    "--keys",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="CURVE key folder (psgd keys generate): accept only holders "
    "of its authorised keys, encrypt everything.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Listen beyond loopback without --keys: anyone who reaches the port can "
    "run code on this host.",
)
@click.option(
    "--log-dir",
    "log_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("logs"),
    show_default=True,
    help="Folder of the daemon's log file.",
)
@click.option(
    "--max-message-mb",
    type=click.FloatRange(min=0.001),
    default=1024.0,
    show_default=True,
    help="Largest message accepted (MB), jobs excepted.",
)
@click.option(
    "--max-job-mb",
    type=click.FloatRange(min=0.001),
    default=1024.0,
    show_default=True,
    help="Largest job accepted (MB): data partition + model + code.",
)
@click.option(
    "--max-frames",
    type=click.IntRange(min=2),
    default=4096,
    show_default=True,
    help="Most frames (arrays + 1) in one message.",
)
@click.option(
    "--parent-pid",
    type=click.IntRange(min=1),
    default=None,
    hidden=True,
    help="Stop when this process (the --local submitter that started the daemon) is gone.",
)
def worker(
    port: int,
    bind: str,
    keys: Path | None,
    insecure: bool,
    log_dir: Path,
    max_message_mb: float,
    max_job_mb: float,
    max_frames: int,
    parent_pid: int | None,
) -> None:
    """Start a psgd worker daemon: serves jobs one after another until Ctrl-C / SIGTERM."""
    from psgd.cluster.daemon import Daemon
    from psgd.cluster.local import die_with_parent
    from psgd.net.security import Security

    if parent_pid is not None and not die_with_parent(parent_pid):
        click.echo(f"psgd-worker: the process that started it (pid {parent_pid}) is gone", err=True)
        sys.exit(1)

    if keys is None and not _is_loopback(bind) and not insecure:
        click.echo(
            f"psgd-worker: refusing to listen on {bind} without --keys: anyone who can reach "
            "the port could run code on this host. Set up keys (see README, 'Security') or "
            "pass --insecure to insist.",
            err=True,
        )
        sys.exit(2)
    log_dir.mkdir(parents=True, exist_ok=True)
    limits = wire.Limits(max_frames=max_frames, max_message_bytes=int(max_message_mb * _MB))
    try:
        security = Security.for_worker(keys) if keys else None
        daemon = Daemon(bind=bind, port=port, limits=limits, max_job_bytes=int(max_job_mb * _MB),
                        security=security, parent_pid=parent_pid)  # fmt: skip
    except (PsgdError, ConfigError) as exc:
        click.echo(f"psgd-worker: {exc}", err=True)
        sys.exit(1)
    log_file = log_dir / f"worker-{daemon.port}.log"
    _log_to(log_file)
    log = logging.getLogger("psgd.cluster.daemon")
    if keys is None and not _is_loopback(bind):
        log.warning(
            "INSECURE: listening on %s without keys; anyone who reaches port %d can run code "
            "on this host as user %s", bind, daemon.port, os.environ.get("USER", "?"),
        )  # fmt: skip
    elif keys is not None:
        log.info("CURVE on: only keys in %s may connect", security.authorized if security else "")
    click.echo(f"psgd worker listening on {daemon.address} (pid {os.getpid()}, log {log_file})")
    sys.stdout.flush()
    daemon.install_signal_handlers()
    from psgd.nn.blas import blas_threads

    with blas_threads(1):  # also when started as psgd-worker, after numpy loaded
        daemon.serve_forever()
    if daemon.abandoned:  # a job's thread would not stop: leave without waiting for it
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
