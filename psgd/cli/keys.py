"""``psgd keys``: make and manage the CURVE key folders a secure cluster needs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from psgd.errors import ConfigError

__all__ = ["keys"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def keys() -> None:
    """CURVE keys: authenticated, encrypted clusters."""


def _fail(exc: ConfigError) -> NoReturn:
    click.echo(f"psgd keys: {exc}", err=True)
    sys.exit(1)


@keys.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def generate(folder: Path) -> None:
    """Create FOLDER with the workers' and a submitter's key pairs, both authorised."""
    from psgd.net.keys import generate_keys

    try:
        made = generate_keys(folder)
    except ConfigError as exc:
        _fail(exc)
    for path in made:
        click.echo(f"wrote {path}")
    click.echo(
        f"copy {folder} to every worker host and start workers with --keys {folder}; give each "
        f"submitter a folder of its own: psgd keys add {folder} NAME --out NAME-keys"
    )


@keys.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the new key pair into this folder of its own (with the workers' public key, "
    "and no worker secret): all a submitter needs.",
)
def add(folder: Path, name: str, out: Path | None) -> None:
    """Add another submitter key pair NAME and authorise it in FOLDER."""
    from psgd.net.keys import add_key

    try:
        secret = add_key(folder, name, out)
    except ConfigError as exc:
        _fail(exc)
    click.echo(f"wrote {secret}; submit with --keys {secret.parent} --key-name {name}")
    click.echo(f"copy {folder}/authorized/{name}.key into every worker host's authorized/ folder")


@keys.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
def rotate(folder: Path) -> None:
    """Replace the workers' key pair in FOLDER (authorised submitters stay)."""
    from psgd.net.keys import rotate_worker_key

    try:
        public = rotate_worker_key(folder)
    except ConfigError as exc:
        _fail(exc)
    click.echo(f"new workers' key pair in {folder}")
    click.echo(
        f"copy {folder} to every worker host and restart the daemons; copy {public} into "
        "every submitter's authorized/ folder"
    )
