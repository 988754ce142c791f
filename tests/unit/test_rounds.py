"""The round engine: real client sampling, executors, deadlock detection, records that scale."""

from __future__ import annotations

import csv
import json
import math
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from psgd import Parameter_Server
from psgd.algorithms.federated import sample_clients
from psgd.cluster.runner import Target, run_job
from psgd.errors import ConfigError, JobFailed
from psgd.job import JobSpec
from psgd.train.node import drops_out
from psgd.train.prepare import prepare_job
from psgd.train.rounds import run_rounds

FEDAVG = {"codec": "federated.FedAvgClient", "ps_codec": "federated.FedAvgServer"}
SMALL = {"train_samples": 6000, "test_samples": 1000, "batch_size": 10, "optimizer": "sgd",
         "learn_rate": 0.1, "model": [784, 32, 10]}  # fmt: skip


def _rows(folder: Path, name: str = "rounds.csv") -> list[dict[str, str]]:
    with open(folder / name) as f:
        return list(csv.DictReader(f))


def test_only_picked_clients_train_and_each_trains_its_local_epoch(tmp_path):
    spec = JobSpec(node_count=40, rounds=4, params={"fraction": 0.1, "seed": 3}, executors=0,
                   partition="unequal", **FEDAVG, **SMALL)  # fmt: skip
    job = prepare_job(spec)
    samples = job.settings.node_samples
    result = run_rounds(job)
    assert result.error is None and len(result.round_rows) == 4
    for row in result.round_rows:
        picked = sample_clients(range(40), 0.1, row["round"] - 1, seed=3)
        steps = sum(math.ceil(samples[n] / 10) for n in picked)
        assert row["clients"] == len(picked) == 4
        assert row["samples"] == steps * 10  # exactly the picked clients' work, nobody else's
        assert row["bytes_up"] > 0 and row["bytes_down"] > 0
    assert result.figures["clients_trained"] <= 16


def test_process_executors_give_the_same_model_as_training_inline():
    spec = JobSpec(node_count=20, rounds=3, params={"fraction": 0.3}, **FEDAVG, **SMALL)
    inline = run_rounds(prepare_job(JobSpec(**{**spec.to_dict(), "executors": 0})))
    forked = run_rounds(prepare_job(JobSpec(**{**spec.to_dict(), "executors": 2})))
    assert inline.error is None and forked.error is None
    for a, b in zip(inline.weights[Parameter_Server], forked.weights[Parameter_Server],
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    assert [r["accuracy"] for r in inline.round_rows] == [r["accuracy"] for r in forked.round_rows]


def test_fedavg_learns_mnist_in_rounds_and_stops_at_the_target(tmp_path):
    spec = JobSpec(node_count=100, rounds=30, target_accuracy=0.85, params={"fraction": 0.1},
                   **FEDAVG, **{**SMALL, "train_samples": 20000})  # fmt: skip
    summary = run_job(spec, tmp_path / "run", quiet=True, target=Target(simulate=True))
    rows = _rows(tmp_path / "run")
    assert summary["status"] == "completed"
    assert summary["target_round"] == len(rows) < 30
    assert float(rows[-1]["accuracy"]) >= 0.85 > max(float(r["accuracy"]) for r in rows[:-1])
    assert summary["accuracy"] == pytest.approx(float(rows[-1]["accuracy"]))


def test_a_run_folder_holds_the_same_files_for_10_or_1000_clients(tmp_path):
    files = []
    for clients in (10, 1000):
        out = tmp_path / f"k{clients}"
        spec = JobSpec(node_count=clients, rounds=2, params={"fraction": 0.01},
                       executors=0, **FEDAVG, **SMALL)  # fmt: skip
        run_job(spec, out, quiet=True, target=Target(simulate=True))
        files.append(sorted(p.name for p in out.iterdir()))
        assert len(_rows(out)) == 2
    assert files[0] == files[1]
    assert "rounds.csv" in files[0] and "summary.json" in files[0]


def test_batch_records_go_to_one_file(tmp_path):
    spec = JobSpec(node_count=30, rounds=2, params={"fraction": 0.1}, executors=0,
                   batch_records=True, **FEDAVG, **SMALL)  # fmt: skip
    run_job(spec, tmp_path / "run", quiet=True, target=Target(simulate=True))
    rows = _rows(tmp_path / "run", "clients.csv")
    assert {int(r["round"]) for r in rows} == {1, 2}
    assert len({r["node"] for r in rows}) == 6  # 3 clients a round
    assert len(rows) == 6 * 20  # 200 samples each: 20 batches of 10


def test_eval_every_and_client_evaluation(tmp_path):
    spec = JobSpec(node_count=20, rounds=5, eval_every=2, eval="clients", executors=0,
                   params={"fraction": 0.5}, **FEDAVG, **SMALL)  # fmt: skip
    summary = run_job(spec, tmp_path / "run", quiet=True, target=Target(simulate=True))
    rows = _rows(tmp_path / "run")
    assert [bool(r["accuracy"]) for r in rows] == [False, True, False, True, True]
    assert summary["eval"] == "clients" and summary["evaluated_round"] == 5
    assert summary["client_accuracy_worst"] <= summary["client_accuracy_p10"]
    assert summary["client_accuracy_p10"] <= summary["accuracy"]


DEADLOCKING_SERVER = '''
    from federated import FedAvgServer


    class EveryoneServer(FedAvgServer):
        """Picks a few clients but waits for an update from every client: can never finish."""

        def receive_blocks(self, content):
            round_no, sender, weights, n_samples = content
            self.updates[sender] = (weights, n_samples)
            return None
'''


def test_a_deadlock_fails_at_once_naming_who_waits(tmp_path, monkeypatch):
    codecs = tmp_path / "codecs"
    codecs.mkdir()
    (codecs / "everyone.py").write_text(textwrap.dedent(DEADLOCKING_SERVER))
    monkeypatch.chdir(tmp_path)
    spec = JobSpec(node_count=50, rounds=3, params={"fraction": 0.1}, executors=0,
                   **{**FEDAVG, "ps_codec": "everyone.EveryoneServer"}, **SMALL)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(JobFailed) as failure:
        run_job(spec, tmp_path / "run", quiet=True, target=Target(simulate=True))
    assert time.monotonic() - started < 20  # no timeout involved (timeout_s is 60)
    message = str(failure.value)
    assert "deadlock after round 0" in message
    assert "layers [0, 1, 2, 3]" in message and "finish round 1" in message
    assert "5 clients wait for a model" in message and "last trained for round 1" in message
    assert "45 clients were never sent anything" in message
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"


FAILING_CLIENT = """
    import threading

    from federated import FedAvgClient


    class Crashing(FedAvgClient):
        def update_blocks(self, block_weight):
            raise RuntimeError("boom in round %d" % self.round)


    class Unpicklable(FedAvgClient):
        def __init__(self, node_id):
            super().__init__(node_id)
            self.lock = threading.Lock()
"""


@pytest.mark.parametrize(
    "codec, executors, expected",
    [("failing.Crashing", 2, "Crashing.update_blocks raised RuntimeError: boom in round 0"),
     ("failing.Unpicklable", 2, "cannot be pickled")],
)  # fmt: skip
def test_a_failing_client_codec_fails_the_job_with_its_reason(
    tmp_path, monkeypatch, codec, executors, expected
):
    (tmp_path / "codecs").mkdir()
    (tmp_path / "codecs" / "failing.py").write_text(textwrap.dedent(FAILING_CLIENT))
    monkeypatch.chdir(tmp_path)
    spec = JobSpec(codec=codec, ps_codec="federated.FedAvgServer", node_count=10, rounds=2,
                   executors=executors, **SMALL)  # fmt: skip
    with pytest.raises(JobFailed, match=expected):
        run_job(spec, tmp_path / "run", quiet=True, target=Target(simulate=True))


def test_round_options_with_a_per_batch_codec_are_refused():
    with pytest.raises(ConfigError, match="--rounds is for round-based federated jobs"):
        prepare_job(JobSpec(codec="plain.Plain", rounds=3, **SMALL))


def test_a_round_client_without_a_server_is_refused():
    with pytest.raises(ConfigError, match="give --ps-codec"):
        prepare_job(JobSpec(codec="federated.FedAvgClient", **SMALL))


KEEPING_CLIENT = """
    from federated import FedAvgClient


    class Keeping(FedAvgClient):
        keeps_optimizer_state = True
"""


@pytest.mark.parametrize(("optimizer", "same"), [("momentum", False), ("sgd", True)])
def test_a_client_keeps_its_optimizer_state_only_when_its_codec_says_so(
    tmp_path, monkeypatch, optimizer, same
):
    (tmp_path / "codecs").mkdir()
    (tmp_path / "codecs" / "keeping.py").write_text(textwrap.dedent(KEEPING_CLIENT))
    monkeypatch.chdir(tmp_path)
    common = {**SMALL, "optimizer": optimizer, "train_samples": 600}
    models = []
    for codec in ("keeping.Keeping", "federated.FedAvgClient"):
        spec = JobSpec(codec=codec, ps_codec="federated.FedAvgServer", node_count=4, rounds=3,
                       params={"fraction": 1.0}, executors=2, **common)  # fmt: skip
        result = run_rounds(prepare_job(spec))
        assert result.error is None
        models.append(result.weights[Parameter_Server])
    equal = all(np.array_equal(a, b) for a, b in zip(*models, strict=True))
    assert equal == same  # momentum carried into later rounds changes them; plain SGD has none


@pytest.mark.parametrize("executors", [0, 2])
def test_dropped_clients_train_nothing_and_the_deadline_closes_the_round(executors):
    spec = JobSpec(node_count=20, rounds=4, params={"fraction": 0.5}, dropout=0.3,
                   round_deadline=5.0, executors=executors, **FEDAVG, **SMALL)  # fmt: skip
    job = prepare_job(spec)
    samples = job.settings.node_samples
    started = time.monotonic()
    result = run_rounds(job)
    assert result.error is None and len(result.round_rows) == 4
    assert time.monotonic() - started < 30  # the deadline is in virtual time: nobody waits 5 s
    for row in result.round_rows:
        picked = sample_clients(range(20), 0.5, row["round"] - 1, seed=spec.seed)
        live = [n for n in picked if not drops_out(spec.seed, row["round"], n, 0.3)]
        assert 0 < len(live) < len(picked)  # this seed drops some, keeps some, every round
        assert row["clients"] == len(live)
        assert row["samples"] == sum(math.ceil(samples[n] / 10) for n in live) * 10


def test_dropout_without_a_deadline_is_a_deadlock_naming_the_waiting_server():
    spec = JobSpec(node_count=20, rounds=3, params={"fraction": 0.5}, dropout=0.3, executors=0,
                   **FEDAVG, **SMALL)  # fmt: skip
    result = run_rounds(prepare_job(spec))
    assert result.error is not None and "deadlock after round 0" in result.error


@pytest.mark.parametrize("option", [{"dropout": 0.2}, {"round_deadline": 3.0}])
def test_deadline_and_dropout_are_for_round_jobs(option):
    with pytest.raises(ConfigError, match="is for round-based federated jobs"):
        prepare_job(JobSpec(codec="plain.Plain", **option, **SMALL))


def test_checkpoints_of_a_round_job_are_refused_before_it_runs(tmp_path):
    spec = JobSpec(node_count=10, rounds=2, checkpoint_every=1, executors=0, **FEDAVG, **SMALL)
    with pytest.raises(ConfigError, match="--checkpoint-every: round-based"):
        run_job(spec, tmp_path / "run", quiet=True, target=Target(simulate=True))
    assert not (tmp_path / "run" / "rounds.csv").exists()
