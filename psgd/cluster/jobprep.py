"""Check a JOB message and prepare it, off the daemon's control thread.

Checking is cheap and bounded (settings, node range, secret, the assignment's size via
``psgd.settings.check_assignment``, the model's shape against the weights shipped); loading the
codec runs shipped code and may take any time, raise anything (``SystemExit`` included) or never
return, so the daemon runs all of it on a ``Preparation`` thread and keeps answering HELLO,
heartbeats and signals meanwhile.
"""

from __future__ import annotations

import logging
import shutil
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from psgd.algorithms.attacks import Attack, parse_attacks
from psgd.codec import Codec, Parameter_Server
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.net import protocol, wire
from psgd.net.bundle import load_bundle, unload_bundle
from psgd.net.routing import RoutedChannel
from psgd.net.security import Security
from psgd.net.transport import PeerChannel
from psgd.net.wire_objects import ContentClasses
from psgd.settings import GlobalSettings
from psgd.train.trainer import TrainerConfig

__all__ = ["MIN_SECRET_BYTES", "JobParts", "Prepared", "Preparation", "check_job"]

_log = logging.getLogger(__name__)

#: What a daemon can be in a job: a per-batch worker or PS, or, in a round job, a pool of
#: virtual clients or the round job's PS (``psgd.train.pool``).
ROLES = ("worker", "ps", "pool", "round-ps")

#: A job's secret must be at least this long (the submitter sends 32 random bytes).
MIN_SECRET_BYTES = 16


@dataclass
class JobParts:
    """A JOB message's settings, checked before any of its code is loaded."""

    spec: JobSpec
    config: TrainerConfig
    settings: GlobalSettings
    attack: Attack | None


@dataclass
class Prepared:
    """What preparation made: the codec classes, the open data channel, the job's folder."""

    parts: JobParts
    classes: list[type[Codec]]
    channel: PeerChannel
    folder: Path
    #: The classes of the job's shipped codec modules, whose objects may travel as content.
    content_classes: ContentClasses | None = None
    #: A worker's model, holding the shipped initial weights (None on the server).
    model: Any = None


def _check_weights(spec: JobSpec, content: Any) -> None:
    """The shipped weights must be exactly the model the spec names (nothing bigger is built)."""
    weights = content.get("weights") if isinstance(content, dict) else None
    if not isinstance(weights, list | tuple):
        raise ConfigError("job carries no weights")
    dims = content.get("model_dims")
    if dims is not None and not (
        isinstance(dims, list | tuple) and len(dims) == 2 and all(isinstance(d, int) for d in dims)
    ):
        raise ConfigError("job: model_dims must be [features, classes]")
    sizes = spec.mlp_sizes()
    got = [getattr(w, "shape", None) for w in weights]
    if sizes is None:  # a named model: its build checks the shapes (set_weights)
        if len(got) != spec.layer_count:
            raise ConfigError(
                f"{len(got)} weight arrays shipped for the {spec.layer_count} variables of "
                f"--model {spec.model}"
            )
        return
    shapes = [
        s for a, b in zip(sizes[:-1], sizes[1:], strict=True) for s in ((a, b), (b,))
    ] * spec.components
    if got != shapes:
        raise ConfigError(
            f"the weights shipped ({len(got)} arrays) do not match --model "
            f"{','.join(map(str, sizes))} x {spec.components} component(s)"
        )


def check_job(message: protocol.Message) -> JobParts:
    """Check a JOB's fields and settings; ``ConfigError`` naming the problem. Runs no code."""
    role, node = message["role"], message["node"]
    if role not in ROLES:
        raise ConfigError(f"job role must be one of {', '.join(ROLES)}, got {role!r:.20}")
    if len(message["secret"]) < MIN_SECRET_BYTES:
        raise ConfigError(f"job secret shorter than {MIN_SECRET_BYTES} bytes")
    try:
        spec = JobSpec.from_dict(message["spec"])
        config = TrainerConfig(**message["trainer"])
    except Exception as exc:
        raise ConfigError(f"bad job settings: {type(exc).__name__}: {exc}") from None
    if role == "worker" and not 0 <= node < spec.node_count:
        raise ConfigError(f"node {node} is not a worker of a job of {spec.node_count} nodes")
    if role in ("ps", "round-ps") and node != Parameter_Server:
        raise ConfigError(f"the parameter server is node {Parameter_Server}, not {node}")
    if role in ("pool", "round-ps"):
        pools = message.get("pools")
        if (
            type(pools) is not int
            or not 1 <= pools <= spec.node_count
            or (role == "pool" and not 0 <= node < pools)
        ):
            raise ConfigError(
                f"pool {node} of {pools!r:.20} pools: not a pool of a job of {spec.node_count} "
                "clients"
            )
    if len(message["codecs"]) != spec.layer_count:
        raise ConfigError(f"{len(message['codecs'])} codec names for {spec.layer_count} layers")
    if role in ("worker", "pool"):
        _check_weights(spec, message.content)
    try:
        settings = GlobalSettings.for_job(spec, [int(n) for n in message["node_samples"]])
        attack = parse_attacks(spec.attacks, spec.node_count).get(node)
    except Exception as exc:
        raise ConfigError(f"bad job settings: {type(exc).__name__}: {exc}") from None
    if attack is not None and attack.on_data:
        attack = None  # data attacks were applied by the submitter
    return JobParts(spec, config, settings, attack)


def _load(
    message: protocol.Message,
    context: zmq.Context,
    bind_host: str,
    work_dir: Path,
    limits: wire.Limits,
    security: Security | None,
) -> Prepared:
    parts = check_job(message)  # before running any shipped code
    folder = work_dir / f"job-{message['job']}-{message['node']}"
    if folder.resolve().parent != work_dir.resolve():
        raise ConfigError(f"job id {message['job']!r:.40} is not a plain name")
    # The job's settings before any of its code runs: class bodies may read get_params.
    GlobalSettings.set_default(parts.settings)
    try:
        classes = load_bundle(message["bundle"], message["codecs"], folder)
        content_classes = ContentClasses.for_codecs(classes)
    except BaseException as exc:  # shipped code may raise anything, SystemExit included
        GlobalSettings.clear_default()
        unload_bundle(folder)
        shutil.rmtree(folder, ignore_errors=True)
        detail = traceback.format_exc()
        raise ConfigError(f"cannot load the codec: {type(exc).__name__}: {exc}\n{detail}") from None
    model = None
    if message["role"] in ("worker", "pool"):
        try:
            model = _build_model(parts.spec, message.content, folder)
        except BaseException as exc:  # a user's builder is shipped code too
            unload_bundle(folder)
            shutil.rmtree(folder, ignore_errors=True)
            raise ConfigError(f"cannot build the model: {type(exc).__name__}: {exc}") from None
    try:
        kind = RoutedChannel if message["role"] in ("pool", "round-ps") else PeerChannel
        channel = kind(
            context, message["node"], message["job"], bind_host, lambda: False, limits,
            security, message["secret"],
        )  # fmt: skip
    except BaseException:
        GlobalSettings.clear_default()
        unload_bundle(folder)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Prepared(parts, classes, channel, folder, content_classes, model)


def _build_model(spec: JobSpec, content: dict[str, Any], folder: Path) -> Any:
    """The worker's learner (a user builder is loaded from the shipped bundle only)."""
    import numpy as np

    from psgd.nn import build_model

    weights = list(content["weights"])
    features, classes = content.get("model_dims") or (0, 0)
    sizes = spec.mlp_sizes()
    if sizes is not None:  # jobs from submitters that ship no dims
        features, classes = sizes[0], 1
    model = build_model(
        spec.model, int(features), int(classes), np.random.default_rng(0), loss=spec.loss,
        activation=spec.activation, components=spec.components, shipped=folder,
    )  # fmt: skip
    model.set_weights(weights)
    return model


class Preparation:
    """Prepares one JOB on a thread of its own; the control thread watches ``done``.

    Once ``done`` is set, either ``prepared`` holds the result or ``reason`` says why the job
    is rejected. The thread never lets an exception escape, whatever the codec raises.
    """

    def __init__(
        self,
        message: protocol.Message,
        context: zmq.Context,
        bind_host: str,
        work_dir: Path,
        limits: wire.Limits = wire.DEFAULT_LIMITS,
        security: Security | None = None,
    ) -> None:
        self.done = threading.Event()
        self.prepared: Prepared | None = None
        self.reason = ""
        args = (message, context, bind_host, work_dir, limits, security)
        self.thread = threading.Thread(
            target=self._run, args=args, name="psgd-prepare", daemon=True
        )
        self.thread.start()

    def _run(self, *args: Any) -> None:
        try:
            self.prepared = _load(*args)
        except BaseException as exc:
            self.reason = str(exc) if isinstance(exc, ConfigError) else (
                f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            )  # fmt: skip
        finally:
            self.done.set()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the thread; True if it has ended."""
        self.thread.join(timeout_s)
        return not self.thread.is_alive()
