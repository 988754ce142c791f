"""``python -m psgd.testing p2p|ps|describe``: the codec test scripts' command line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from psgd.codec_params import describe_codec
from psgd.errors import CodecError, CodecNotFound, ConfigError
from psgd.job import parse_param
from psgd.loader import codec_name, resolve_codec
from psgd.settings import GlobalSettings
from psgd.testing.harness import CodecCheck, check_p2p, check_ps

__all__ = ["main"]


def _shape(ctx: Any, param: Any, value: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected sizes like 4,4, got {value!r}") from None
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"expected sizes >= 1 like 4,4, got {value!r}")
    return shape


def _params(ctx: Any, param: Any, value: Sequence[str]) -> dict[str, Any]:
    try:
        return dict(parse_param(item) for item in value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _common(func: Any) -> Any:
    options = [
        click.option(
            "--nodes",
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="Worker nodes.",
        ),
        click.option(
            "--rounds",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="Rounds (batches) to simulate.",
        ),
        click.option(
            "--redundancy",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Nodes holding each block.",
        ),
        click.option(
            "--assignment",
            type=click.Choice(["iid", "duplicate"]),
            default="iid",
            show_default=True,
            help="Block assignment.",
        ),
        click.option(
            "--shape",
            default="4,4",
            show_default=True,
            callback=_shape,
            help="Shape of the random arrays.",
        ),
        click.option(
            "--sync",
            type=click.Choice(["ssgd", "asgd"]),
            default="ssgd",
            show_default=True,
            help="ssgd: a result every round; asgd: late, shuffled.",
        ),
        click.option(
            "--param",
            "params",
            multiple=True,
            callback=_params,
            help="key=value for GlobalSettings.get_params; repeatable.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _finish(check: CodecCheck) -> None:
    click.echo(check.table())
    raise SystemExit(0 if check.passed else 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Test a codec on a simulated topology before touching a cluster."""


@main.command()
@click.argument("codec")
@_common
def p2p(codec: str, **options: Any) -> None:
    """Peer-to-peer: every node runs CODEC (module.Class or file.py:Class)."""
    try:
        check = check_p2p(codec, **options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _finish(check)


@main.command()
@click.argument("codecs", nargs=-1, required=True)
def describe(codecs: tuple[str, ...]) -> None:
    """What each of CODECS is and the --param keys it declares (defaults and help)."""
    # No job runs here: a codec module reading the settings at import sees one node, no params.
    GlobalSettings.set_default(GlobalSettings(1))
    for i, name in enumerate(codecs):
        try:
            cls = resolve_codec(name)
            text = describe_codec(cls, codec_name(cls))
        except (CodecNotFound, CodecError) as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(("\n" if i else "") + text)


@main.command()
@click.argument("client")
@click.argument("server")
@_common
def ps(client: str, server: str, **options: Any) -> None:
    """Parameter server: workers run CLIENT, the server runs SERVER."""
    try:
        check = check_ps(client, server, **options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _finish(check)
