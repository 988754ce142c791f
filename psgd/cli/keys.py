"""``psgd keys``: make the CURVE key folder a secure cluster needs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from psgd.errors import ConfigError

__all__ = ["keys"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def keys() -> None:
    """CURVE keys: authenticated, encrypted clusters."""


@keys.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def generate(folder: Path) -> None:
    """Create FOLDER with the workers' and a submitter's key pairs, both authorised."""
    from psgd.net.security import generate_keys

    try:
        made = generate_keys(folder)
    except ConfigError as exc:
        click.echo(f"psgd keys: {exc}", err=True)
        sys.exit(1)
    for path in made:
        click.echo(f"wrote {path}")
    click.echo(f"copy {folder} to every host; start workers with --keys {folder}, submit with "
               f"--keys {folder}")  # fmt: skip


@keys.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("name")
def add(folder: Path, name: str) -> None:
    """Add another submitter key pair NAME to FOLDER and authorise it."""
    from psgd.net.security import add_key

    try:
        secret = add_key(folder, name)
    except ConfigError as exc:
        click.echo(f"psgd keys: {exc}", err=True)
        sys.exit(1)
    click.echo(f"wrote {secret}; submit with --keys {folder} --key-name {name}")
    click.echo("copy the new public key in authorized/ to every worker's key folder")
