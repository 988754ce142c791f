"""CURVE key folders: make them, add submitters, rotate the workers' key.

A cluster's key folder (``psgd keys generate DIR``) holds::

    DIR/worker.key_secret        the workers' key pair: worker hosts only, never submitters
    DIR/authorized/worker.key    the workers' public key (submitters check daemons with it)
    DIR/authorized/NAME.key      the submitters allowed to submit (control ports only)
    DIR/submitter.key_secret     the key pair of a first submitter, the cluster admin's own

A submitter's folder (``psgd keys add DIR NAME --out OUT``) holds only its own key pair and the
workers' public key::

    OUT/NAME.key_secret
    OUT/authorized/worker.key

Secret files are created 0600 and folders 0700 from the start (never readable by others, not
even for a moment); an existing file is never overwritten.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import zmq
import zmq.auth

from psgd.errors import ConfigError

__all__ = [
    "AUTHORIZED",
    "SUBMITTER_KEY",
    "WORKER_KEY",
    "add_key",
    "generate_keys",
    "load_pair",
    "load_public",
    "rotate_worker_key",
]

WORKER_KEY = "worker"
SUBMITTER_KEY = "submitter"
AUTHORIZED = "authorized"

_BANNER = "#   ****  Generated on {0} by psgd  ****\n#   ZeroMQ CURVE {1} Certificate\n{2}\n"
_SECRET_NOTE = "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"


def _private_folder(folder: Path) -> None:
    """Create ``folder`` (and missing parents) 0700; tighten an existing one to 0700."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask; an old folder may be 0755


def _key_text(public: bytes, secret: bytes | None) -> str:
    now = datetime.datetime.now().isoformat(timespec="seconds")
    kind = "**Secret**" if secret is not None else "Public"
    text = _BANNER.format(now, kind, _SECRET_NOTE if secret is not None else "")
    text += f'metadata\ncurve\n    public-key = "{public.decode("ascii")}"\n'
    if secret is not None:
        text += f'    secret-key = "{secret.decode("ascii")}"\n'
    return text


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write a new file (never overwrite) created with ``mode``: never wider, not even briefly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"{path} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
    os.chmod(path, mode)  # O_CREAT's mode is masked by the umask: make it exactly ``mode``


def _check_name(name: str) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"key name must be letters, digits, - or _, got {name!r}")


def _new_pair(secret_file: Path, public_file: Path) -> None:
    """A new key pair: the secret (0600) in ``secret_file``, the public key in ``public_file``."""
    for path in (secret_file, public_file):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    public, secret = zmq.curve_keypair()
    _write_new(secret_file, _key_text(public, secret), 0o600)
    _write_new(public_file, _key_text(public, None), 0o644)


def generate_keys(folder: Path) -> list[Path]:
    """A new key folder: the worker key pair and one submitter key pair, both public keys in
    ``authorized/`` (the worker's is the daemons' identity, the submitter's may submit)."""
    _private_folder(folder)
    _private_folder(folder / AUTHORIZED)
    for name in (WORKER_KEY, SUBMITTER_KEY):
        _new_pair(folder / f"{name}.key_secret", folder / AUTHORIZED / f"{name}.key")
    return sorted(folder.rglob("*.key*"))


def _is_key_folder(folder: Path) -> None:
    if not (folder / AUTHORIZED / f"{WORKER_KEY}.key").is_file():
        raise ConfigError(
            f"{folder}: not a psgd key folder (no {AUTHORIZED}/{WORKER_KEY}.key; "
            "run 'psgd keys generate' first)"
        )


def add_key(folder: Path, name: str, out: Path | None = None) -> Path:
    """Add another submitter key pair NAME and authorise it in ``folder``; its secret file.

    With ``out``, the secret goes to a folder of its own, ``out`` (made with the workers'
    public key, so it is all a submitter needs), and never into ``folder``.
    """
    _is_key_folder(folder)
    _check_name(name)
    if name == WORKER_KEY:
        raise ConfigError(f"{WORKER_KEY!r} is the workers' key; choose another submitter name")
    public_file = folder / AUTHORIZED / f"{name}.key"
    if out is None:
        secret_file = folder / f"{name}.key_secret"
        _new_pair(secret_file, public_file)
        return secret_file
    secret_file = out / f"{name}.key_secret"
    worker_public = out / AUTHORIZED / f"{WORKER_KEY}.key"
    for path in (secret_file, public_file, worker_public):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    _private_folder(out)
    _private_folder(out / AUTHORIZED)
    shutil.copyfile(folder / AUTHORIZED / f"{WORKER_KEY}.key", worker_public)
    _new_pair(secret_file, public_file)
    return secret_file


def rotate_worker_key(folder: Path) -> Path:
    """Replace the workers' key pair in ``folder`` (authorised submitters stay); the new
    public key file, to copy into every submitter's ``authorized/``."""
    _is_key_folder(folder)
    secret_file = folder / f"{WORKER_KEY}.key_secret"
    public_file = folder / AUTHORIZED / f"{WORKER_KEY}.key"
    if not secret_file.is_file():
        raise ConfigError(f"{folder}: no {secret_file.name} (rotate in the workers' key folder)")
    fresh_secret = folder / f".{WORKER_KEY}.key_secret.new"
    fresh_public = folder / AUTHORIZED / f".{WORKER_KEY}.key.new"
    for path in (fresh_secret, fresh_public):
        path.unlink(missing_ok=True)
    _new_pair(fresh_secret, fresh_public)
    os.replace(fresh_secret, secret_file)
    os.replace(fresh_public, public_file)
    return public_file


def load_public(path: Path) -> bytes:
    """The public key in a key file (``ConfigError`` naming the file otherwise)."""
    if not path.is_file():
        raise ConfigError(f"--keys: {path} not found")
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except Exception as exc:
        raise ConfigError(f"--keys: {path} is not a CURVE key file: {exc}") from None
    return public


def load_pair(path: Path) -> tuple[bytes, bytes]:
    """The public and secret key of a secret key file."""
    if not path.is_file():
        raise ConfigError(f"--keys: {path} not found")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except Exception as exc:
        raise ConfigError(f"--keys: {path} is not a CURVE key file: {exc}") from None
    if secret is None:
        raise ConfigError(f"--keys: {path} holds no secret key")
    return public, secret
