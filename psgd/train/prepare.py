"""Turn a ``JobSpec`` into what nodes need: codec classes, data blocks, the initial model.

Shared by the in-process runner and the submitter, so both start every job identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psgd.algorithms.attacks import Attack, parse_attacks
from psgd.codec import Codec, Parameter_Server
from psgd.data import Dataset, load_dataset, natural_partition, partition
from psgd.errors import ConfigError, ModelError
from psgd.job import JobSpec
from psgd.loader import forget_codec_modules, resolve_codec
from psgd.nn import Learner, build_model, init_weights, make_optimizer
from psgd.settings import GlobalSettings
from psgd.train.server_model import marks_epochs
from psgd.train.trainer import TrainerConfig, per_block_batch, steps_per_epoch

__all__ = ["PreparedJob", "prepare_job"]


@dataclass
class PreparedJob:
    """Everything derived from a spec before any node starts."""

    spec: JobSpec
    settings: GlobalSettings
    dataset: Dataset
    codec_classes: list[type[Codec]]
    ps_classes: list[type[Codec]] | None
    initial_weights: list[np.ndarray]
    block_indices: list[np.ndarray]
    trainer_config: TrainerConfig
    attacks: dict[int, Attack] = field(default_factory=dict)
    #: ``--eval clients``: each client's held-out rows of the training set (not trained on).
    client_test_indices: list[np.ndarray] | None = None
    #: Where a user model's builder file is looked up (relative paths, ``./models/``).
    cwd: Path | None = None

    def client_train_indices(self) -> list[np.ndarray]:
        """Each node's training rows: the union of the blocks it holds."""
        return [
            np.concatenate([self.block_indices[b] for b in blocks])
            for blocks in self.settings.node_2_block
        ]

    def build_model(self) -> Learner:
        """A fresh model holding the job's initial weights."""
        model = make_model(self.spec, self.dataset, np.random.default_rng(0), self.cwd)
        model.set_weights(self.initial_weights)
        return model

    @property
    def model_dims(self) -> tuple[int, int]:
        """``(features, classes)`` the model is built for."""
        return self.dataset.n_features, self.dataset.n_classes

    def node_blocks(
        self, node_id: int, features: np.ndarray | None = None
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{block_id: (x, y)}`` for every block node ``node_id`` holds.

        ``features``: the rows to take ``x`` from (default the training features; e.g. their
        grey levels, for shipping).
        """
        data = self.dataset
        x = data.x_train if features is None else features
        blocks = {
            b: (x[self.block_indices[b]], data.y_train[self.block_indices[b]])
            for b in self.settings.node_2_block[node_id]
        }
        attack = self.attacks.get(node_id)
        if attack is not None and attack.on_data:
            blocks = {
                b: (x, attack.poison_labels(y, data.n_classes)) for b, (x, y) in blocks.items()
            }
        return blocks

    def update_attack(self, node_id: int) -> Attack | None:
        """The attack node ``node_id`` applies to what it sends, if any."""
        attack = self.attacks.get(node_id)
        return attack if attack is not None and not attack.on_data else None


def make_model(
    spec: JobSpec, dataset: Dataset, rng: np.random.Generator, cwd: Path | None = None
) -> Learner:
    """The learner ``spec.model`` names, for ``dataset`` (weights drawn from ``rng``)."""
    return build_model(
        spec.model, dataset.n_features, dataset.n_classes, rng, loss=spec.loss,
        activation=spec.activation, components=spec.components, cwd=cwd,
    )  # fmt: skip


def _initial_model(spec: JobSpec, dataset: Dataset, rng: np.random.Generator,
                   cwd: Path | None) -> Learner:  # fmt: skip
    """The job's initial model: built, ``--init`` loaded, tried on two test rows."""
    model = make_model(spec, dataset, rng, cwd)
    if spec.init is not None:
        if spec.components > 1:
            raise ConfigError("--init: not with --components > 1 (a mixture's parts would match)")
        try:
            init_weights(model, Path(spec.init) if cwd is None else cwd / spec.init)
        except ModelError as exc:
            raise ConfigError(f"--init {exc}") from None
    try:
        model.evaluate(dataset.x_test[:2], dataset.y_test[:2])
    except Exception as exc:
        raise ConfigError(
            f"--model {spec.model}: cannot evaluate dataset {dataset.name!r} "
            f"({dataset.n_features} features, {dataset.n_classes} classes): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return model


def _try_codecs(
    settings: GlobalSettings,
    classes: list[type[Codec]],
    ps_classes: list[type[Codec]] | None,
) -> None:
    """Build each codec once, so one that cannot start fails here, before anything ships."""
    GlobalSettings.set_default(settings)
    tried = [(cls, 0) for cls in dict.fromkeys(classes)]
    tried += [(cls, Parameter_Server) for cls in dict.fromkeys(ps_classes or [])]
    for cls, node in tried:
        try:
            codec = cls(node)
            codec.dispose()
        except Exception as exc:
            raise ConfigError(
                f"codec {cls.__name__}: __init__ raised {type(exc).__name__}: {exc}"
            ) from None


def prepare_job(spec: JobSpec, cwd: Path | None = None) -> PreparedJob:
    """Resolve codecs, load and partition the data, build the initial model.

    Raises ``ConfigError`` / ``CodecNotFound`` / ``DatasetError`` before any training starts.
    The job's settings are set before its codec modules are executed (afresh for each job),
    so codec class bodies reading ``GlobalSettings.get_params`` see this job's values.
    """
    settings = GlobalSettings.for_job(spec)
    dataset = load_dataset(spec.dataset)
    if spec.train_samples or spec.test_samples:
        dataset = dataset.subset(spec.train_samples, spec.test_samples)
    rng = np.random.default_rng(spec.seed)
    model = _initial_model(spec, dataset, rng, cwd)
    spec.model_variables = len(model.variables)
    GlobalSettings.set_default(settings)  # before any codec module runs
    forget_codec_modules()
    codec_classes = [resolve_codec(name, cwd) for name in spec.codec_names()]
    ps_names = spec.ps_codec_names()
    ps_classes = [resolve_codec(name, cwd) for name in ps_names] if ps_names else None
    if spec.partition == "natural":
        blocks = natural_partition(dataset.groups, settings.block_count, dataset.name)
    else:
        blocks = partition(
            dataset.y_train, settings.block_count, spec.partition, rng=rng, **spec.partition_args
        )
    held_out = None
    if spec.eval == "clients":
        blocks, held_out = hold_out(blocks, spec.client_test_fraction, spec.seed)
    settings.node_samples = [
        sum(len(blocks[b]) for b in settings.node_2_block[n]) for n in range(spec.node_count)
    ]
    held = len(settings.node_2_block[0])
    block_batch = per_block_batch(spec.batch_size, held)
    config = TrainerConfig(
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        learn_rate=spec.learn_rate,
        optimizer=spec.optimizer,
        sync=spec.sync,
        exchange=spec.exchange,
        timeout_s=spec.timeout_s,
        seed=spec.seed,
        steps_per_epoch=steps_per_epoch([len(b) for b in blocks], block_batch),
        checkpoint_every=spec.checkpoint_every,
        mark_epochs=marks_epochs(codec_classes, ps_classes),
    )
    make_optimizer(spec.optimizer, spec.learn_rate)  # an unknown name fails here, not per node
    _try_codecs(settings, codec_classes, ps_classes)
    attacks = parse_attacks(spec.attacks, spec.node_count, dataset.n_classes)
    job = PreparedJob(
        spec, settings, dataset, codec_classes, ps_classes, model.get_weights(), blocks, config,
        attacks, held_out, cwd,
    )  # fmt: skip
    _check_rounds(job)
    return job


def hold_out(
    blocks: list[np.ndarray], fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each block into training rows and held-out rows (``fraction`` of it, at least 1).

    A block too small to give both keeps one training row and holds out the rest.
    """
    rng = np.random.default_rng([seed, 1717])
    train, test = [], []
    for rows in blocks:
        shuffled = rows[rng.permutation(len(rows))]
        n_test = min(max(1, round(fraction * len(rows))), max(len(rows) - 1, 0))
        train.append(np.sort(shuffled[n_test:]))
        test.append(np.sort(shuffled[:n_test]))
    return train, test


def _check_rounds(job: PreparedJob) -> None:
    """Round options need round-based codecs, and round-based codecs need a server."""
    spec = job.spec
    waits = [cls.__name__ for cls in job.codec_classes if getattr(cls, "waits_for_model", False)]
    round_options = {
        "--rounds": spec.rounds is not None,
        "--local-epochs": spec.local_epochs is not None,
        "--target-accuracy": spec.target_accuracy is not None,
        "--eval clients": spec.eval == "clients",
        "--eval global": spec.eval == "global",
        "--round-deadline": spec.round_deadline is not None,
        "--dropout": spec.dropout > 0,
    }
    if not waits:
        used = [name for name, given in round_options.items() if given]
        if used:
            raise ConfigError(
                f"{used[0]} is for round-based federated jobs, whose client codec waits for "
                f"a model (e.g. --codec federated.FedAvgClient --ps-codec "
                f"federated.FedAvgServer); {spec.codec_names()[0]} trains every batch"
            )
        return
    if len(waits) != len(job.codec_classes):
        raise ConfigError(
            f"--codec: every layer of a round-based job needs a round-based codec; "
            f"{waits[0]} waits for a model but other layers' codecs do not"
        )
    if job.ps_classes is None:
        raise ConfigError(f"--codec {waits[0]} is a round-based client: give --ps-codec too")
    if spec.redundancy != 1:
        raise ConfigError("round-based jobs give each client its own data: use --redundancy 1")
    if spec.sync != "ssgd" or spec.exchange == "delta":
        raise ConfigError(
            f"{waits[0]} exchanges weights in rounds: use --sync ssgd and --exchange auto|params"
        )
