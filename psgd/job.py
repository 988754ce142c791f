"""``JobSpec``: every setting of a training job, checked once, the same in-process and networked."""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from psgd.errors import ConfigError
from psgd.link_spec import check_device_speeds, check_links
from psgd.settings import check_assignment

__all__ = [
    "EVAL_MODES",
    "EXCHANGE_MODES",
    "JobSpec",
    "layer_codec_names",
    "new_job_id",
    "parse_param",
]

EXCHANGE_MODES = ("auto", "delta", "params", "accumulate")
SYNC_NAMES = ("ssgd", "asgd", "double_buffer")
#: What is evaluated: ``auto`` (the global model per round for round jobs, every node per
#: epoch otherwise), ``global`` (the server's model), ``clients`` (each client's held-out split).
EVAL_MODES = ("auto", "global", "clients")


def new_job_id() -> str:
    """A job id that sorts by start time: ``20261123-231500-3f9a``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def parse_param(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` into a key and an int, float, bool or string value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--param: expected key=value, got {text!r}")
    raw = raw.strip()
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    return key, raw


def layer_codec_names(codec: str | dict[int, str], layer_count: int) -> list[str]:
    """The codec name for each layer (trainable variable) of the model.

    ``codec`` is one name for every layer (``plain.Plain``); or comma-separated items where
    ``i=name`` sets layer ``i`` and a bare name sets the default
    (``plain.Plain,4=dummy.DummyCodec``);
    or exactly one bare name per layer, in order (Parallel-SGD's list form); or a dict
    ``{layer_index: name}`` with an optional ``-1`` default entry.
    """
    mapping: dict[int, str] = {}
    if isinstance(codec, dict):
        mapping.update({int(k): str(v) for k, v in codec.items()})
    else:
        items = [item.strip() for item in str(codec).split(",") if item.strip()]
        if not items:
            raise ConfigError("--codec: no codec named")
        bare = [item for item in items if "=" not in item]
        if len(bare) == layer_count and len(bare) > 1:
            mapping.update(enumerate(bare))
        elif len(bare) == 1:
            mapping[-1] = bare[0]
        elif bare:
            raise ConfigError(
                f"--codec: {len(bare)} bare names for {layer_count} layers; give one name, "
                "one per layer, or use i=name items"
            )
        for item in items:
            if "=" in item:
                index, _, name = item.partition("=")
                try:
                    mapping[int(index)] = name.strip()
                except ValueError:
                    raise ConfigError(f"--codec: bad layer index in {item!r}") from None
    for layer_index in mapping:
        if layer_index != -1 and not 0 <= layer_index < layer_count:
            raise ConfigError(f"--codec: layer {layer_index} out of range 0..{layer_count - 1}")
    names: list[str] = []
    for layer in range(layer_count):
        chosen = mapping.get(layer, mapping.get(-1))
        if chosen is None:
            raise ConfigError(f"--codec: no codec for layer {layer} and no default given")
        names.append(chosen)
    return names


@dataclass
class JobSpec:
    """All settings of one training job (the command line options, one field each)."""

    codec: Any = "plain.Plain"
    ps_codec: str | None = None
    node_count: int = 2
    epochs: int = 2
    batch_size: int = 64
    learn_rate: float = 0.001
    optimizer: str = "adam"
    sync: str = "ssgd"
    assignment: str = "iid"
    redundancy: int = 1
    dataset: str = "mnist"
    partition: str = "iid"
    #: Layer sizes of an MLP, or a name: ``mlp:784,128,10``, ``cnn-mnist``, ``cnn-cifar``,
    #: ``logreg``, ``path/to/file.py:build``, ``module.build`` (see ``psgd.nn.zoo``).
    model: list[int] | str = field(default_factory=lambda: [784, 128, 128, 10])
    activation: str = "relu"
    #: ``--loss``: None trains with the model's own loss.
    loss: str | None = None
    #: ``--init``: a model file the job starts from.
    init: str | None = None
    #: The model's number of trainable variables: set by ``prepare_job`` once it is built.
    model_variables: int | None = None
    exchange: str = "auto"
    seed: int = 0
    timeout_s: float = 60.0
    params: dict[str, Any] = field(default_factory=dict)
    partition_args: dict[str, Any] = field(default_factory=dict)
    attacks: list[str] = field(default_factory=list)
    #: ``--link`` / ``--device-speed`` items (``psgd.link_spec``): emulated in ``--simulate``.
    links: list[str] = field(default_factory=list)
    device_speed: list[str] = field(default_factory=list)
    #: ``--shared-cores``: the emulated nodes share this many cores (None: a device each).
    shared_cores: int | None = None
    checkpoint_every: int = 0
    components: int = 1
    train_samples: int | None = None
    test_samples: int | None = None
    rounds: int | None = None
    local_epochs: float | None = None
    target_accuracy: float | None = None
    eval: str = "auto"
    eval_every: int = 1
    client_test_fraction: float = 0.2
    executors: int | None = None
    batch_records: bool = False
    round_deadline: float | None = None
    dropout: float = 0.0
    job_id: str = field(default_factory=new_job_id)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first invalid option."""
        positive = {
            "--node_count": self.node_count,
            "--epochs": self.epochs,
            "--batch_size": self.batch_size,
            "--redundancy": self.redundancy,
        }
        for option, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{option}: must be a whole number >= 1, got {value!r}")
        check_assignment(self.assignment, self.node_count, self.redundancy)
        if not self.learn_rate > 0:
            raise ConfigError(f"--learn_rate: must be > 0, got {self.learn_rate!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"--timeout: must be > 0 seconds, got {self.timeout_s!r}")
        if self.sync not in SYNC_NAMES:
            raise ConfigError(f"--sync: expected one of {SYNC_NAMES}, got {self.sync!r}")
        if self.exchange not in EXCHANGE_MODES:
            raise ConfigError(
                f"--exchange: expected one of {EXCHANGE_MODES}, got {self.exchange!r}"
            )
        if isinstance(self.model, str) and not self.model.strip():
            raise ConfigError("--model: empty (give layer sizes or a model name)")
        sizes = self.mlp_sizes()
        if sizes is not None and (len(sizes) < 2 or min(sizes) < 1):
            raise ConfigError(
                f"--model: expected layer sizes like 784,128,128,10, got {self.model}"
            )
        if self.model_variables is not None and (
            not isinstance(self.model_variables, int) or self.model_variables < 1
        ):
            raise ConfigError(f"model_variables must be >= 1, got {self.model_variables!r}")
        for option, limit in (
            ("--train-samples", self.train_samples),
            ("--test-samples", self.test_samples),
        ):
            if limit is not None and limit < 1:
                raise ConfigError(f"{option}: must be >= 1, got {limit}")
        self._validate_rounds()
        check_links(self.links)
        check_device_speeds(self.device_speed)
        if self.shared_cores is not None and (
            not isinstance(self.shared_cores, int) or self.shared_cores < 1
        ):
            raise ConfigError(
                f"--shared-cores: must be a whole number >= 1, got {self.shared_cores!r}"
            )

    def _validate_rounds(self) -> None:
        if self.rounds is not None and (not isinstance(self.rounds, int) or self.rounds < 1):
            raise ConfigError(f"--rounds: must be a whole number >= 1, got {self.rounds!r}")
        if self.local_epochs is not None and not self.local_epochs > 0:
            raise ConfigError(f"--local-epochs: must be > 0, got {self.local_epochs!r}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"--target-accuracy: must be in (0, 1], got {self.target_accuracy!r}")
        if self.eval not in EVAL_MODES:
            raise ConfigError(f"--eval: expected one of {EVAL_MODES}, got {self.eval!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ConfigError(f"--eval-every: must be a whole number >= 1, got {self.eval_every!r}")
        if not 0 < self.client_test_fraction < 1:
            raise ConfigError(
                f"--client-test-fraction: must be in (0, 1), got {self.client_test_fraction!r}"
            )
        if self.executors is not None and (
            not isinstance(self.executors, int) or self.executors < 0
        ):
            raise ConfigError(f"--executors: must be a whole number >= 0, got {self.executors!r}")
        deadline = self.round_deadline
        if deadline is not None and not (isinstance(deadline, int | float) and deadline > 0):
            raise ConfigError(f"--round-deadline: must be seconds > 0, got {deadline!r}")
        if not (isinstance(self.dropout, int | float) and 0 <= self.dropout < 1):
            raise ConfigError(f"--dropout: must be a probability in [0, 1), got {self.dropout!r}")

    def mlp_sizes(self) -> list[int] | None:
        """The layer sizes when ``model`` names an MLP (``[784, 10]``, ``"mlp:784,10"``)."""
        if not isinstance(self.model, str):
            return [int(size) for size in self.model]
        parts = self.model.strip().removeprefix("mlp:").split(",")
        if not all(part.strip().isdigit() for part in parts):
            return None
        return [int(part) for part in parts]

    @property
    def layer_count(self) -> int:
        """Number of trainable variables (one codec each): ``model_variables`` once the model
        is built; before, for an MLP, weights and bias of each layer, per component."""
        if self.model_variables is not None:
            return self.model_variables
        sizes = self.mlp_sizes()
        if sizes is None:
            raise ConfigError(
                f"--model {self.model}: its number of variables is known once it is built "
                "(psgd.train.prepare.prepare_job)"
            )
        return 2 * (len(sizes) - 1) * max(1, self.components)

    def codec_names(self) -> list[str]:
        """The worker codec name of each layer."""
        return layer_codec_names(self.codec, self.layer_count)

    def ps_codec_names(self) -> list[str] | None:
        """The parameter-server codec name of each layer, or None without a PS."""
        if self.ps_codec is None:
            return None
        return layer_codec_names(self.ps_codec, self.layer_count)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (JSON and msgpack safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build from ``to_dict`` output; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"job spec: unknown fields {unknown}")
        return cls(**data)
