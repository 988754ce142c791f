"""Authentication and encryption with ZeroMQ's CURVE (libzmq + ``zmq.auth``).

A key folder (``psgd keys generate DIR``) holds::

    DIR/worker.key_secret       the workers' key pair (every daemon of the cluster shares it)
    DIR/submitter.key_secret    a submitter's key pair (``psgd keys add DIR NAME`` makes more)
    DIR/authorized/*.key        the public keys allowed to connect to a daemon

A daemon started with ``--keys DIR`` is a CURVE server on its control and data ports and
accepts only clients whose public key is in ``DIR/authorized``; it talks to its peers as a
CURVE client with the worker key, so worker-to-worker traffic is encrypted and authenticated
too. A submitter with ``--keys DIR`` connects with its own key pair and checks that the daemon
holds the worker key. Every refused connection is logged with the peer's address.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from psgd.errors import ConfigError

__all__ = ["AUTHORIZED", "WORKER_KEY", "Security", "add_key", "generate_keys"]

WORKER_KEY = "worker"
SUBMITTER_KEY = "submitter"
AUTHORIZED = "authorized"

_log = logging.getLogger(__name__)


def _create(folder: Path, name: str) -> None:
    if (folder / f"{name}.key_secret").exists():
        raise ConfigError(f"{folder / (name + '.key_secret')} exists; refusing to overwrite a key")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"key name must be letters, digits, - or _, got {name!r}")
    public, secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    authorized = folder / AUTHORIZED
    authorized.mkdir(exist_ok=True)
    os.replace(public, authorized / f"{name}.key")


def generate_keys(folder: Path) -> list[Path]:
    """A new key folder with the worker key pair and one submitter key pair, both authorised."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (WORKER_KEY, SUBMITTER_KEY):
        _create(folder, name)
    return sorted(folder.rglob("*.key*"))


def add_key(folder: Path, name: str) -> Path:
    """Add (and authorise) another submitter key pair; returns its secret file."""
    if not (folder / f"{WORKER_KEY}.key_secret").exists() and not (folder / AUTHORIZED).is_dir():
        raise ConfigError(f"{folder}: not a psgd key folder (run 'psgd keys generate' first)")
    _create(folder, name)
    return folder / f"{name}.key_secret"


def _load_pair(path: Path) -> tuple[bytes, bytes]:
    if not path.is_file():
        raise ConfigError(f"--keys: {path} not found")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except Exception as exc:
        raise ConfigError(f"--keys: {path} is not a CURVE key file: {exc}") from None
    if secret is None:
        raise ConfigError(f"--keys: {path} holds no secret key")
    return public, secret


def _worker_public(folder: Path) -> bytes:
    path = folder / AUTHORIZED / f"{WORKER_KEY}.key"
    if not path.is_file():
        raise ConfigError(f"--keys: {path} (the workers' public key) not found")
    public, _ = zmq.auth.load_certificate(str(path))
    return public


class _LoggingAuthenticator(ThreadAuthenticator):
    """``zmq.auth`` authenticator that logs every refused connection with its address."""

    _address = "?"

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = ""
    ) -> None:
        if status_code != b"200":
            _log.warning(
                "refused a connection from %s: %s",
                self._address,
                status_text.decode("ascii", "replace"),
            )
        super()._send_zap_reply(request_id, status_code, status_text, user_id or "anonymous")


@dataclass
class Security:
    """One side's CURVE keys; applies them to sockets (see ``transport.new_socket``)."""

    public: bytes
    secret: bytes
    server_public: bytes
    authorized: Path

    @classmethod
    def for_worker(cls, folder: Path) -> Security:
        public, secret = _load_pair(folder / f"{WORKER_KEY}.key_secret")
        return cls(public, secret, public, folder / AUTHORIZED)

    @classmethod
    def for_submitter(cls, folder: Path, name: str = SUBMITTER_KEY) -> Security:
        public, secret = _load_pair(folder / f"{name}.key_secret")
        return cls(public, secret, _worker_public(folder), folder / AUTHORIZED)

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (it must be bound after this)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the workers (it must connect after this)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public

    def start_authenticator(self, context: zmq.Context) -> ThreadAuthenticator:
        """Check every incoming connection on ``context`` against the authorised keys."""
        if not any(self.authorized.glob("*.key")):
            raise ConfigError(f"--keys: no authorised public keys in {self.authorized}")
        authenticator = _LoggingAuthenticator(context)
        authenticator.start()
        authenticator.configure_curve(domain="*", location=str(self.authorized))
        return authenticator
