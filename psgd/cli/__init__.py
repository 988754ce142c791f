"""The command line: click commands, one module per command group.

Owns: ``psgd-submit`` (``job_submit.py``), ``psgd-worker`` (``worker.py``), ``psgd`` and its
subcommands (submit, worker, retrieve, keys, status, compare). ``worker.py`` and
``job_submit.py`` only call the entry points here.

May import: every other part of psgd; nothing in psgd imports ``psgd.cli``.
"""

from __future__ import annotations

import click

from psgd.cli.compare import compare
from psgd.cli.keys import keys
from psgd.cli.submit import submit, submit_main
from psgd.cli.tools import retrieve, status
from psgd.cli.worker import worker

__all__ = ["main", "psgd_main", "submit", "submit_main", "worker_main"]


@click.group()
def main() -> None:
    """psgd commands."""


main.add_command(submit)
main.add_command(worker)
main.add_command(retrieve)
main.add_command(keys)
main.add_command(status)
main.add_command(compare)


def worker_main() -> None:
    """Console-script entry of ``psgd-worker``."""
    worker(prog_name="worker.py")


def psgd_main() -> None:
    """Console-script entry of ``psgd`` (submit, worker, retrieve, keys, status, compare)."""
    main(prog_name="psgd")
