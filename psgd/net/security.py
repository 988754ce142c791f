"""Authentication and encryption with ZeroMQ's CURVE (libzmq + ``zmq.auth``).

Key folders are described in ``psgd.net.keys``. A daemon started with ``--keys DIR`` is a CURVE
server on its control port and its data ports, with the workers' key pair, and checks every
client key (ZAP) by the socket it connects to:

- control port (ZAP domain ``psgd-control``): submitters, i.e. the keys in ``DIR/authorized``
  other than the workers' own. The folder is read again whenever it changes, so removing a
  submitter's key there revokes it for every new connection without a restart.
- data ports (``psgd-data``): the workers' key only. Submitters never talk to data ports.

It talks to its peers as a CURVE client with the worker key, so worker-to-worker traffic is
encrypted and authenticated too. A submitter connects with its own key pair and checks that the
daemon holds the worker key. Every refused connection is logged with the peer's address and the
socket it tried (bounded: ``psgd.net.droplog.RefusalLog``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from psgd.errors import ConfigError
from psgd.net.droplog import DAEMON_ONLY, RefusalLog
from psgd.net.keys import (
    AUTHORIZED,
    SUBMITTER_KEY,
    WORKER_KEY,
    add_key,
    generate_keys,
    load_pair,
    load_public,
)

__all__ = [
    "AUTHORIZED",
    "CONTROL_DOMAIN",
    "DATA_DOMAIN",
    "WORKER_KEY",
    "Security",
    "add_key",
    "generate_keys",
]

#: ZAP domains: which sockets a client key is checked for.
CONTROL_DOMAIN = "psgd-control"
DATA_DOMAIN = "psgd-data"

_log = logging.getLogger(__name__)


class _Submitters:
    """The submitter keys of an ``authorized/`` folder, read again whenever it changes.

    Keys are z85 text, as ``zmq.auth`` reads them from key files and hands them to callbacks.
    """

    def __init__(self, folder: Path, worker_public: bytes) -> None:
        self.folder = folder
        self.worker = worker_public
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._keys: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()

    def _current_signature(self) -> tuple[tuple[str, int, int], ...]:
        entries = []
        for path in sorted(self.folder.glob("*.key")):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def keys(self) -> frozenset[bytes]:
        """The public keys allowed to submit (the workers' own excluded)."""
        with self._lock:
            signature = self._current_signature()
            if signature != self._signature:
                keys = set()
                for name, _, _ in signature:
                    if name == f"{WORKER_KEY}.key":
                        continue  # the workers' public key (a new one too, after a rotation)
                    try:
                        keys.add(load_public(self.folder / name))
                    except (ConfigError, ValueError) as exc:
                        _log.warning("--keys: %s: skipped: %s", name, exc, extra=DAEMON_ONLY)
                self._keys = frozenset(keys - {self.worker})
                self._signature = signature
            return self._keys

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: may ``key`` (z85) submit?"""
        return key in self.keys()


class _WorkerOnly:
    def __init__(self, worker_public: bytes) -> None:
        self.worker = worker_public

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: is ``key`` (z85) the workers' key?"""
        return key == self.worker


class _LoggingAuthenticator(ThreadAuthenticator):
    """``zmq.auth`` authenticator that logs refused connections with address and socket."""

    names: dict[str, str]
    refusals: RefusalLog
    _address = "?"
    _domain = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        self._domain = msg[2].decode("utf-8", "replace") if len(msg) > 2 else ""
        await super().handle_zap_message(msg)

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = ""
    ) -> None:
        if status_code != b"200":
            where = self.names.get(self._domain, f"ZAP domain {self._domain!r:.40}")
            self.refusals.refuse(
                self._address, self._address, where, status_text.decode("ascii", "replace"),
                extra=DAEMON_ONLY if self._domain == CONTROL_DOMAIN else None,
            )  # fmt: skip
        super()._send_zap_reply(request_id, status_code, status_text, user_id or "anonymous")


@dataclass
class Security:
    """One side's CURVE keys; applies them to sockets (see ``transport.new_socket``).

    ``names`` says, per ZAP domain, which socket it is (for the refusal lines); the daemon
    and each job's data channel fill it in.
    """

    public: bytes
    secret: bytes
    server_public: bytes
    authorized: Path
    names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_worker(cls, folder: Path) -> Security:
        public, secret = load_pair(folder / f"{WORKER_KEY}.key_secret")
        return cls(public, secret, public, folder / AUTHORIZED)

    @classmethod
    def for_submitter(cls, folder: Path, name: str = SUBMITTER_KEY) -> Security:
        public, secret = load_pair(folder / f"{name}.key_secret")
        worker_public = folder / AUTHORIZED / f"{WORKER_KEY}.key"
        if not worker_public.is_file():
            raise ConfigError(f"--keys: {worker_public} (the workers' public key) not found")
        return cls(public, secret, load_public(worker_public), folder / AUTHORIZED)

    @property
    def worker_user_id(self) -> str:
        """The ZAP user id (z85 public key) of a peer holding the workers' key."""
        return self.server_public.decode("ascii")

    def server(self, sock: zmq.Socket, domain: str = CONTROL_DOMAIN) -> None:
        """Make ``sock`` a CURVE server whose clients are checked for ``domain`` (bind after)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        sock.zap_domain = domain.encode("ascii")

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the workers (it must connect after this)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public

    def start_authenticator(self, context: zmq.Context) -> ThreadAuthenticator:
        """Check every incoming connection on ``context``: submitters on the control port,
        the workers' key on data ports."""
        submitters = _Submitters(self.authorized, self.public)
        if not submitters.keys():
            raise ConfigError(
                f"--keys: no submitter public keys in {self.authorized} (the workers' own key "
                "does not count); add one with 'psgd keys add'"
            )
        authenticator = _LoggingAuthenticator(context)
        authenticator.names = self.names
        authenticator.refusals = RefusalLog(_log)
        authenticator.start()
        authenticator.configure_curve_callback(CONTROL_DOMAIN, submitters)
        authenticator.configure_curve_callback(DATA_DOMAIN, _WorkerOnly(self.public))
        return authenticator
