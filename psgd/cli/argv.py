"""The submitter's own command line: kept as typed (for ``--detach``), and signals.

``--detach`` starts a background submitter with the options the user typed, minus
``--detach``, ``--out`` and ``--job-id``: never a command line rebuilt from parsed values and
guessed defaults (click's defaults differ between versions). SIGTERM stops a submitter the way
Ctrl-C does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

__all__ = ["ARGV", "KeepsArgv", "detach_argv", "sigterm_as_interrupt"]

#: Where ``KeepsArgv`` keeps the arguments, in ``click.Context.meta``.
ARGV = "psgd.argv"


class KeepsArgv(click.Command):
    """A command that keeps the arguments it was given, as typed (``--detach`` reuses them)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV] = list(args)
        return super().parse_args(ctx, args)


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM (``kill``, ``timeout``, CI cancellation) stops the job like Ctrl-C: the daemons
    are told to abort and ``--local`` daemons are stopped. Yields the signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:  # once: a second signal must not cut the clean-up short
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def detach_argv(command: click.Command, argv: list[str]) -> list[str]:
    """``argv`` as the user typed it, without --detach, --out and --job-id (and their values).

    Options are recognised by ``command``'s own option table, so a value is never mistaken
    for an option nor an option for a value; nothing is rebuilt from defaults.
    """
    dropped = {"detach", "out", "job_id"}
    options: dict[str, tuple[bool, str | None]] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                options[name] = (not param.is_flag and not param.count, param.name)
    kept: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            kept += argv[index:]
            break
        name, equals, _ = token.partition("=")
        takes_value, param_name = options.get(name, (False, None))
        width = 2 if takes_value and not equals else 1
        if param_name not in dropped:
            kept += argv[index : index + width]
        index += width
    return kept
