"""The codec x model matrix both test paths share: every shipped codec (with its server codec
where it needs one), every built-in model, tiny data, and the checks every case must pass.

``tests/unit/test_codec_model_matrix.py`` runs every pair in-process (``--simulate``);
``tests/e2e/test_codec_model_daemons.py`` runs a set covering each kind of codec on real worker
daemons. A case passes when the job completed, every saved weight is finite and has the shape
the model gives it, and (where it trained long enough) the saved model's test loss is below
the initial model's.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psgd.cluster.runner
from psgd.job import JobSpec
from psgd.nn import load_weights
from psgd.train.prepare import prepare_job

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "bench"))
from make_breast_cancer_like import make  # noqa: E402


def case(codec: str, ps: str | None = None, **settings: Any) -> dict[str, Any]:
    """psgd.run keywords of one codec (pair): its names and any settings it needs."""
    return {"codec": codec, "ps_codec": ps, **settings}


DPS = "compression.DecodingPSServer"
ROUNDS = {"rounds": 2, "params": {"fraction": 1.0}}

#: One entry per shipped codec (pair). Every worker does a few steps: 2 nodes x 64 samples in
#: batches of 16 (2 steps each) unless a case needs more nodes.
CODECS: dict[str, dict[str, Any]] = {
    # per-batch peer codecs
    "plain": case("plain.Plain"),
    "dummy": case("dummy.DummyCodec"),
    "majority-vote": case("compression.MajorityVote"),
    # parameter servers
    "gradient-ps": case("ps.GradientPSClient", "ps.GradientPSServer"),
    "fedavg-psgd": case("fedavg.FedAvgClient", "fedavg.FedAvgServer", params={"local_steps": 2}),
    "async-ps": case("ps.AsyncPSClient", "ps.AsyncPSServer", sync="asgd"),
    "dc-asgd": case("ps.AsyncPSClient", "ps.DCASGDServer", sync="asgd", optimizer="sgd"),
    # model averaging
    "model-average": case("averaging.ModelAverage", params={"block_steps": 2}),
    "bmuf": case("averaging.BMUF", params={"block_steps": 2}),
    "easgd": case("averaging.EASGDWorker", "averaging.EASGDServer", params={"easgd_tau": 2}),
    "async-easgd": case(
        "averaging.AsyncEASGDWorker",
        "averaging.AsyncEASGDServer",
        sync="asgd",
        params={"easgd_tau": 2},
    ),
    # compression, peer to peer
    "topk": case("compression.TopKPlain", params={"ratio": 0.1}),
    "topk-no-ef": case("compression.TopKPlain", params={"ratio": 0.1, "error_feedback": False}),
    "randomk": case("compression.RandomKPlain", params={"ratio": 0.1}),
    "qsgd": case("compression.QSGDPlain"),
    "terngrad": case("compression.TernGradPlain"),
    "sign": case("compression.SignPlain"),
    "signsgd": case("compression.SignSGD"),
    # compression through a parameter server
    "topk-ps": case("compression.TopKPSClient", DPS, params={"ratio": 0.1}),
    "randomk-ps": case("compression.RandomKPSClient", DPS, params={"ratio": 0.1}),
    "qsgd-ps": case("compression.QSGDPSClient", DPS),
    "terngrad-ps": case("compression.TernGradPSClient", DPS),
    "sign-ps": case("compression.SignPSClient", DPS),
    "signsgd-ps": case("compression.SignSGDPSClient", "compression.SignSGDServer"),
    # robust servers, and an attack Krum is meant to survive
    "median": case("ps.GradientPSClient", "robust.MedianServer", node_count=3),
    "trimmed-mean": case("ps.GradientPSClient", "robust.TrimmedMeanServer", node_count=3),
    "krum": case("ps.GradientPSClient", "robust.KrumServer", node_count=5),
    "multi-krum": case("ps.GradientPSClient", "robust.MultiKrumServer", node_count=5),
    "krum-sign-flip": case(
        "ps.GradientPSClient", "robust.KrumServer", node_count=5, attacks=["4:sign_flip:4"]
    ),
    # federated rounds (FedEM: FedAvg's codecs on a mixture of two models per client)
    "fedavg": case("federated.FedAvgClient", "federated.FedAvgServer", **ROUNDS),
    "fedprox": case("federated.FedProxClient", "federated.FedProxServer", **ROUNDS),
    "fedem": case("federated.FedAvgClient", "federated.FedAvgServer", components=2, **ROUNDS),
}


@dataclass
class Model:
    """A built-in model and the tiny data it trains on."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    #: The learning rate of cases that train with plain SGD (DC-ASGD needs it).
    sgd_rate: float = 0.05
    #: The initial model's test loss (set by ``prepare``).
    initial_loss: float = math.nan
    #: ``{variable name: shape}`` the model gives its variables.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


MODEL_NAMES = ["mlp:784,32,10", "784,32,10", "cnn-mnist", "cnn-cifar", "logreg"]
#: The old MLP syntax builds the very model ``mlp:`` does (test_jobs_models.py checks the
#: weights are equal): it runs with one codec of each kind, not all of them.
OLD_SYNTAX_CODECS = ["plain", "gradient-ps", "async-ps", "easgd", "topk-ps", "krum", "fedavg"]
TINY = {"epochs": 1, "batch_size": 16, "train_samples": 64, "test_samples": 50}


def write_datasets(folder: Path) -> dict[str, Model]:
    """Each built-in model with its data: MNIST for the MLPs and the MNIST CNN, a learnable
    32x32x3 ``.npz`` for the CIFAR CNN, the breast-cancer-like table for logistic regression."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((10, 32 * 32 * 3)).astype(np.float32)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        return (prototypes[y] + 0.5 * rng.random((n, prototypes.shape[1]))).astype(np.float32), y

    (x_train, y_train), (x_test, y_test) = images(200), images(50)
    np.savez(folder / "images.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)  # fmt: skip
    x_train, y_train, x_test, y_test = make(0)
    np.savez(folder / "cancer.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)  # fmt: skip
    models = {name: Model(name) for name in MODEL_NAMES}
    models["cnn-cifar"].settings = {"dataset": str(folder / "images.npz")}
    models["logreg"].settings = {"dataset": str(folder / "cancer.npz"), "learn_rate": 0.01}
    # Adam's first steps move every weight by about the learning rate: at 0.001 the 1.6M
    # weights of the MNIST CNN overshoot within a few steps (4 stale ASGD steps most of all)
    models["cnn-mnist"].settings = {"learn_rate": 1e-4, "test_samples": 20}
    models["cnn-mnist"].sgd_rate = 0.0025
    for model in models.values():
        prepare(model)
    return models


def prepare(model: Model) -> None:
    """Fill in the model's variable shapes, test set and initial test loss."""
    spec = JobSpec(model=model.name, **{**TINY, **model.settings})
    job = prepare_job(spec)
    learner = job.build_model()
    learner.set_weights(job.initial_weights)
    model.shapes = {v.name: v.value.shape for v in learner.variables}
    model.x_test, model.y_test = job.dataset.x_test, job.dataset.y_test
    model.initial_loss = learner.evaluate(model.x_test, model.y_test)[0]


def job_settings(codec: str, model: Model) -> dict[str, Any]:
    """psgd.run keywords of one matrix case."""
    settings: dict[str, Any] = {**TINY, "model": model.name, **model.settings}
    chosen = dict(CODECS[codec])
    settings["params"] = {**chosen.pop("params", {})}
    settings.update(chosen)
    if settings.get("optimizer") == "sgd":
        settings["learn_rate"] = model.sgd_rate
    return settings


def check_run(result: dict[str, Any], model: Model, components: int = 1) -> float:
    """Assert the job completed and saved finite weights of the model's shapes; return the
    saved model's test loss (the mean over a mixture's components)."""
    from psgd.nn import load_model

    summary = result["summary"]
    assert summary["status"] == "completed", summary
    run_dir = Path(result["run_dir"])
    names = (
        ["model.npz"] if components == 1 else [f"model-component{m}.npz" for m in range(components)]
    )
    losses = []
    for name in names:
        weights = load_weights(run_dir / name)
        shapes = {key: value.shape for key, value in weights.items()}
        assert shapes == model.shapes, f"{name}: {shapes} != {model.shapes}"
        for key, value in weights.items():
            assert np.isfinite(value).all(), f"{name}: {key} has non-finite values"
        losses.append(load_model(run_dir / name).evaluate(model.x_test, model.y_test)[0])
    return float(np.mean(losses))


# -- fixtures both test modules import (``from matrix_cases import models, no_plots``)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    """The models and their datasets, written once per test module."""
    return write_datasets(tmp_path_factory.mktemp("matrix-data"))


@pytest.fixture(scope="module", autouse=True)
def no_plots() -> Iterator[None]:
    """plot.png costs 1.5 s a run (matplotlib) and is tested on its own (test_plot.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psgd.cluster.runner, "_plot", lambda *args, **kwargs: None)
        yield
