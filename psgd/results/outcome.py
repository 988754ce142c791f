"""What a job produced: one ``NodeReport`` per node and the ``RunResult`` around them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeReport", "RunResult"]


@dataclass
class NodeReport:
    """What a node did: figures for the summary, rows for the CSV records."""

    node_id: int
    samples: int = 0
    train_s: float = 0.0
    batches: int = 0
    retries: int = 0
    bytes_sent: int = 0
    packages_sent: int = 0
    loss: float = float("nan")
    accuracy: float = float("nan")
    batch_rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    #: Emulated links (``--simulate --link``): the virtual clock's training time (evaluation
    #: excluded, like ``train_s``) and the node's virtual time when it finished.
    virtual_train_s: float | None = None
    virtual_s: float | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_s if self.train_s > 0 else 0.0

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> NodeReport:
        """Rebuild a report sent by a daemon (``figures``, ``batches``, ``epochs``)."""
        figures = data["figures"]
        return cls(
            node_id=int(figures["node"]),
            samples=int(figures["samples"]),
            train_s=float(figures["train_s"]),
            batches=int(figures["batches"]),
            retries=int(figures["retries"]),
            bytes_sent=int(figures["bytes_sent"]),
            packages_sent=int(figures["packages_sent"]),
            loss=float(figures["loss"]),
            accuracy=float(figures["accuracy"]),
            batch_rows=list(data["batches"]),
            epoch_rows=list(data["epochs"]),
        )

    def figures(self) -> dict[str, Any]:
        """The per-node entry of ``summary.json``."""
        virtual = {} if self.virtual_s is None else {
            "virtual_train_s": round(self.virtual_train_s or 0.0, 4),
            "virtual_s": round(self.virtual_s, 4),
        }  # fmt: skip
        return {
            "node": self.node_id,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "samples": self.samples,
            "train_s": self.train_s,
            "samples_per_s": round(self.samples_per_s, 1),
            "batches": self.batches,
            "bytes_sent": self.bytes_sent,
            "packages_sent": self.packages_sent,
            "retries": self.retries,
            **virtual,
        }


@dataclass
class RunResult:
    """What came back from a job, in-process or networked."""

    reports: list[NodeReport]
    ps_bytes_sent: int | None
    wall_s: float
    error: str | None = None
    weights: dict[int, list[Any]] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)
    #: Round-based jobs: one row per round (``rounds.csv``), per-batch client rows when
    #: asked (``clients.csv``), and job-level figures for ``summary.json``.
    round_rows: list[dict[str, Any]] = field(default_factory=list)
    batch_rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    #: The job failed because a node's loss or weights became non-finite (``error`` says where).
    diverged: bool = False
    #: ``--param`` keys the codecs read on the nodes (reported by daemons; in-process runs
    #: read ``GlobalSettings.params_read`` directly).
    params_read: list[str] = field(default_factory=list)
    #: Epoch jobs whose server codecs keep a model: its test figures per epoch before the
    #: last (``psgd.train.server_model``); the runner adds the last epoch's.
    server_rows: list[dict[str, Any]] = field(default_factory=list)
    #: Emulated links and devices of an in-process run: ``{node: {"link": .., "speed": ..}}``.
    emulated: dict[str, Any] = field(default_factory=dict)

    def emulated_entry(self) -> dict[str, Any]:
        """``{"emulated": ...}`` for ``summary.json`` when links were emulated, else ``{}``."""
        return {"emulated": self.emulated} if self.emulated else {}

    @property
    def status(self) -> str:
        """``completed``, ``diverged`` or ``failed``."""
        if self.error is None:
            return "completed"
        return "diverged" if self.diverged else "failed"
