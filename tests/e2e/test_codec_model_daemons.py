"""Every built-in model with one codec of each kind on real worker daemons.

Six ``psgd-worker`` processes (five workers and a server, OS-chosen ports) serve every job of
this module; the submitter is ``psgd.run`` with a ``worker.json``. The cases and their checks
are ``tests/matrix_cases.py``'s: completed, the saved model finite and of the model's shapes,
and a test loss below the initial model's. The in-process side of the matrix (every codec
with every model) is ``tests/unit/test_codec_model_matrix.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from entry_points import WORKER
from matrix_cases import Model, check_run, job_settings, models, no_plots  # noqa: F401 (fixtures)

import psgd
import psgd.cluster.runner
from psgd.cluster.local import DaemonProcess, start_daemon

pytestmark = pytest.mark.timeout(120)

#: One codec of each kind: per-batch peer, PS, async PS, compressing (through a PS), model
#: averaging, EASGD, robust server, federated rounds.
KINDS = ["plain", "gradient-ps", "async-ps", "topk-ps", "model-average", "easgd", "krum", "fedavg"]
MODELS = ["mlp:784,32,10", "cnn-mnist", "cnn-cifar", "logreg"]


@pytest.fixture(scope="module")
def daemons(tmp_path_factory) -> Iterator[list[DaemonProcess]]:
    """Five worker daemons and a server daemon for every job of the module."""
    logs = tmp_path_factory.mktemp("daemon-logs")
    started: list[DaemonProcess] = []
    try:
        for _ in range(6):
            started.append(start_daemon(logs, command=WORKER))
        yield started
    finally:
        for daemon in started:
            daemon.stop()


def worker_list(path: Path, daemons: list[DaemonProcess], nodes: int, ps: bool) -> Path:
    listing: dict[str, object] = {"Worker": [str(d.endpoint) for d in daemons[:nodes]]}
    if ps:
        listing["PS"] = str(daemons[-1].endpoint)
    path.write_text(json.dumps(listing))
    return path


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("codec", KINDS)
def test_codec_trains_model_on_daemons(codec, model_name, daemons, models, tmp_path):  # noqa: F811
    model = models[model_name]
    settings = job_settings(codec, model)
    nodes = settings.pop("node_count", 2)
    has_ps = settings["ps_codec"] is not None
    workers = worker_list(tmp_path / "worker.json", daemons, nodes, has_ps)
    result = psgd.run(out=tmp_path / "run", workers=workers, node_count=nodes, **settings)
    assert result["summary"]["mode"] == "network"
    loss = check_run(result, model)
    assert loss < model.initial_loss, f"test loss {loss:.4f}, initially {model.initial_loss:.4f}"
