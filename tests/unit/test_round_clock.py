"""Round jobs on the virtual clock: slow devices, slow links and deadlines, computed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from psgd import Parameter_Server
from psgd.algorithms.federated import sample_clients
from psgd.cluster.runner import Target, run_job
from psgd.job import JobSpec
from psgd.link_spec import resolve_device_speeds
from psgd.results.plot import run_figure
from psgd.results.runs import load_run
from psgd.train.prepare import prepare_job
from psgd.train.rounds import run_rounds

FEDAVG = {"codec": "federated.FedAvgClient", "ps_codec": "federated.FedAvgServer"}
SMALL = {"train_samples": 3000, "test_samples": 500, "batch_size": 10, "optimizer": "sgd",
         "learn_rate": 0.1, "model": [784, 32, 10], "node_count": 20, "rounds": 3,
         "params": {"fraction": 0.5}}  # fmt: skip
STRAGGLERS = "stragglers:0.3,0.001"  # 30% of the clients compute 1000x slower


def _run(**options):
    spec = JobSpec(**FEDAVG, **SMALL, **options)
    result = run_rounds(prepare_job(spec))
    assert result.error is None, result.error
    return spec, result


def test_device_speeds_of_one_train_the_same_model_as_no_emulation():
    _, plain = _run(executors=2)
    _, emulated = _run(executors=2, device_speed=["1"])
    for a, b in zip(plain.weights[Parameter_Server], emulated.weights[Parameter_Server],
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    drop = ("wall_s", "virtual_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(plain.round_rows) == strip(emulated.round_rows)
    virtual = [row["virtual_s"] for row in emulated.round_rows]
    assert 0 < virtual[0] < virtual[1] < virtual[2]  # the server's clock, round after round


def test_a_deadline_in_virtual_time_leaves_out_the_slow_devices_and_nobody_sleeps():
    started = time.monotonic()
    spec, waiting = _run(executors=0, device_speed=[STRAGGLERS])
    _, cut = _run(executors=0, device_speed=[STRAGGLERS], round_deadline=0.2)
    assert time.monotonic() - started < 60  # computed, not slept
    speeds = resolve_device_speeds([STRAGGLERS], [*range(20), Parameter_Server], spec.seed)
    for row in cut.round_rows:
        picked = sample_clients(range(20), 0.5, row["round"] - 1, seed=spec.seed)
        fast = [n for n in picked if speeds[n] == 1.0]
        assert 0 < len(fast) < len(picked)  # this seed picks stragglers every round
        assert row["clients"] == len(fast)  # the stragglers' updates came after the deadline
    assert [row["clients"] for row in waiting.round_rows] == [10, 10, 10]
    assert cut.round_rows[0]["virtual_s"] == pytest.approx(0.2, abs=0.05)
    assert waiting.round_rows[0]["virtual_s"] > 0.5  # it waited for a 1000x slower device
    assert cut.figures["virtual_wall_s"] < waiting.figures["virtual_wall_s"]


def test_a_slow_link_costs_the_bytes_it_carries():
    _, fast = _run(executors=0, links=["1gbit"])
    _, slow = _run(executors=0, links=["1mbit,10ms"])
    per_round = fast.round_rows[0]["bytes_down"] + fast.round_rows[0]["bytes_up"]
    # a round sends every picked client the model and back, over the server's link
    assert slow.round_rows[0]["virtual_s"] >= per_round * 8 / 1e6
    assert fast.round_rows[0]["virtual_s"] < slow.round_rows[0]["virtual_s"] / 10


def test_clients_sharing_one_core_take_turns_and_the_plot_shows_the_virtual_clock(tmp_path):
    larger = {**SMALL, "train_samples": 8000}  # clients' work well above the server's
    own = run_rounds(prepare_job(JobSpec(**FEDAVG, **larger, executors=0, device_speed=["1"])))
    spec = JobSpec(**FEDAVG, **larger, executors=0, shared_cores=1)
    summary = run_job(spec, tmp_path / "run", quiet=True, target=Target(simulate=True))
    assert summary["emulated"]["shared_cores"] == 1
    # ten picked clients a round: on one core they follow each other instead of overlapping
    # (about 8x here; thread CPU varies run to run)
    rounds = load_run(tmp_path / "run").rounds
    assert rounds[0]["virtual_s"] > 3 * own.round_rows[0]["virtual_s"]
    time_panel = run_figure(load_run(tmp_path / "run")).axes[3]
    line = [ln for ln in time_panel.get_lines() if ln.get_label() == "virtual clock"]
    assert len(line) == 1
    assert list(line[0].get_xdata()) == [r["virtual_s"] for r in rounds]
