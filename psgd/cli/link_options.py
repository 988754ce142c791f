"""``--link``, ``--device-speed``, ``--shared-cores``: emulated links and devices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from psgd.errors import ConfigError
from psgd.link_spec import check_device_speeds, check_links

__all__ = ["link_options"]


def _checked(check: Callable[[list[str]], None]) -> Callable[..., list[str]]:
    def callback(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
        try:
            check(list(value))
        except ConfigError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
        return list(value)

    return callback


def link_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --link, --device-speed and --shared-cores to a click command."""
    options = [
        click.option(
            "--link",
            "links",
            multiple=True,
            metavar="[NODE=]BANDWIDTH[,LATENCY]",
            callback=_checked(check_links),
            help="--simulate: emulate each node's link (e.g. 100mbit, 10mbit,50ms; "
            "1=1mbit,100ms for node 1, ps=1gbit for the server); runs report a virtual "
            "clock beside real time, computed, never slept. Repeatable.",
        ),
        click.option(
            "--device-speed",
            "device_speed",
            multiple=True,
            metavar="[NODE=]FACTOR|DIST",
            callback=_checked(check_device_speeds),
            help="--simulate: compute speed against this machine (0.2: 5x slower), for every "
            "worker, one node (2=0.2), or drawn: stragglers:FRACTION,FACTOR, uniform:LOW,HIGH, "
            "lognormal:SIGMA. Repeatable.",
        ),
        click.option(
            "--shared-cores",
            "shared_cores",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="--simulate: the nodes share N cores, as hosts emulated on one machine do "
            "(network namespaces); the virtual clock makes nodes that compute at once take "
            "turns. Default: every node has a device of its own.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
