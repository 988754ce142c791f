"""The virtual clock: link queues, message times, compute scaling, and jobs run on it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from psgd.cli.submit import submit
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.link_spec import (
    TCP_PAYLOAD_SHARE,
    Link,
    parse_link,
    resolve_device_speeds,
    resolve_links,
)
from psgd.results.plot import run_figure
from psgd.results.runs import load_run
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate
from psgd.train.vclock import LinkQueue, VirtualClock, build_clock, job_bytes

MBIT = 1e6
#: Bytes that take exactly 1 s on a 1 Mbit/s link, headers included.
ONE_SECOND = 1e6 / 8 * TCP_PAYLOAD_SHARE


def clock(rate_mbit: float = 1.0, latency_s: float = 0.0, nodes: int = 3, **speeds: float):
    links = {n: Link(rate_mbit * MBIT, latency_s) for n in range(nodes)}
    return VirtualClock(links, {int(k[1:]): v for k, v in speeds.items()})


# --------------------------------------------------------------------------- parsing


def test_links_resolve_per_node_over_a_default_and_name_bad_items():
    links = resolve_links(["100mbit", "1=10mbit,50ms", "ps=1gbit"], [0, 1, -2])
    assert links == {0: Link(1e8, 0.0), 1: Link(1e7, 0.05), -2: Link(1e9, 0.0)}
    assert resolve_links([], [0])[0].rate_bit_s == float("inf")
    assert parse_link("inf,2ms") == Link(float("inf"), 0.002)
    with pytest.raises(ConfigError, match="'100mbps'.*bytes/s"):
        resolve_links(["100mbps"], [0])
    with pytest.raises(ConfigError, match="latency '5'"):
        resolve_links(["1mbit,5"], [0])
    with pytest.raises(ConfigError, match="no node 7"):
        resolve_links(["7=1mbit"], [0, 1])


def test_device_speeds_per_node_and_drawn_reproducibly():
    nodes = list(range(10))
    drawn = resolve_device_speeds(["stragglers:0.2,0.2", "3=0.5"], nodes, seed=4)
    assert drawn[3] == 0.5
    assert sorted(drawn[n] for n in nodes if n != 3).count(0.2) in (1, 2)
    assert drawn == resolve_device_speeds(["stragglers:0.2,0.2", "3=0.5"], nodes, seed=4)
    uniform = resolve_device_speeds(["uniform:0.5,2"], nodes)
    assert all(0.5 <= uniform[n] <= 2 for n in nodes) and len(set(uniform.values())) > 1
    assert resolve_device_speeds(["0.5"], [0, 1, -2]) == {0: 0.5, 1: 0.5, -2: 1.0}
    for bad, named in (("stragglers:2,0.1", "FRACTION"), ("gauss:1", "unknown distribution"),
                       ("0", "factor > 0"), ("uniform:1", "uniform:LOW,HIGH")):  # fmt: skip
        with pytest.raises(ConfigError, match=named):
            resolve_device_speeds([bad], nodes)


# --------------------------------------------------------------------------- the model


def test_link_queue_books_back_to_back_and_fills_an_earlier_gap():
    queue = LinkQueue()
    assert queue.reserve(0.0, 1.0) == 0.0
    assert queue.reserve(0.0, 1.0) == 1.0  # busy: queued behind
    assert queue.reserve(5.0, 1.0) == 5.0
    assert queue.reserve(0.5, 2.0) == 2.0  # fits between 2 and 5
    assert queue.reserve(0.5, 2.0) == 6.0  # the gap 4..5 is too short
    assert queue.starts == [0.0, 5.0] and queue.ends == [4.0, 8.0]  # merged where they touch


def test_a_message_crosses_two_equal_links_in_one_transfer_time_plus_both_latencies():
    vc = clock(rate_mbit=1.0, latency_s=0.01)
    arrival = vc.send(0, [1], int(ONE_SECOND))
    assert arrival[1] == pytest.approx(1.0 + 0.02, abs=1e-4)
    assert vc.receive(1, arrival[1]) == pytest.approx(1.02, abs=1e-4)


def test_copies_share_the_uplink_and_senders_queue_on_a_downlink():
    vc = clock()
    both = vc.send(0, [1, 2], int(ONE_SECOND))
    assert both == pytest.approx({1: 2.0, 2: 2.0}, abs=1e-4)  # fair share of 0's uplink
    vc2 = clock()
    first = vc2.send(0, [2], int(ONE_SECOND))[2]
    second = vc2.send(1, [2], int(ONE_SECOND))[2]
    assert (first, second) == pytest.approx((1.0, 2.0), abs=1e-4)  # node 2's downlink, in turn


def test_a_slow_link_sets_the_pace_and_unlimited_links_cost_only_latency():
    vc = VirtualClock({0: Link(1 * MBIT), 1: Link(0.5 * MBIT)}, {})
    assert vc.send(0, [1], int(ONE_SECOND))[1] == pytest.approx(2.0, abs=1e-4)
    free = VirtualClock({0: Link(latency_s=0.1), 1: Link(latency_s=0.2)}, {})
    assert free.send(0, [1], 10**9)[1] == pytest.approx(0.3, abs=1e-4)


def test_compute_is_scaled_by_speed_and_measured_from_the_thread_cpu():
    vc = clock(s1=0.25)
    assert vc.compute(1, 1.0) == pytest.approx(4.0, abs=1e-4)
    vc.start(0)
    before = time.thread_time()
    a = np.random.default_rng(0).random((300, 300))
    while time.thread_time() - before < 0.05:
        a = a @ a.T / 300
    used = time.thread_time() - before
    charged = vc.charge(0)
    assert used <= charged <= used + 0.05
    assert vc.advance_to(0, 100.0) == 100.0 and vc.now(0) >= 100.0


def test_no_options_no_clock():
    assert build_clock([], [], [0, 1]) is None
    assert build_clock(["1mbit"], [], [0, 1]) is not None


# --------------------------------------------------------------------------- jobs on it


def _job(**overrides):
    base = {"train_samples": 1280, "test_samples": 300, "epochs": 1, "node_count": 2}
    return simulate(prepare_job(JobSpec(**{**base, **overrides})))


def test_a_job_on_slow_links_takes_at_least_its_bytes_over_the_bandwidth():
    result = _job(links=["10mbit,1ms"])
    assert result.error is None
    for report in result.reports:
        floor = report.bytes_sent * 8 / TCP_PAYLOAD_SHARE / 10e6
        assert report.virtual_train_s is not None and report.virtual_train_s >= floor
        # ... and not much more: compute (thread CPU) can be no more than the real time
        assert report.virtual_train_s <= floor + report.train_s + 0.2
        assert report.virtual_s is not None and report.virtual_s >= report.virtual_train_s


def test_nodes_start_once_the_last_job_has_crossed_its_downlink():
    c = clock(1.0, latency_s=0.01, nodes=3)
    c.links[2] = Link(0.5 * MBIT, 0.01)  # a slower host
    start = c.ship({0: int(ONE_SECOND), 1: int(2 * ONE_SECOND), 2: int(ONE_SECOND)})
    assert start == pytest.approx(2.01, abs=1e-3)  # node 1's 2 s job, its latency
    assert all(c.now(n) >= start for n in range(3))
    assert c.send(0, [1], int(ONE_SECOND))[1] == pytest.approx(3.03, abs=1e-3)


def test_a_job_starts_after_its_data_reaches_the_nodes(tmp_path):
    spec = JobSpec(train_samples=2000, test_samples=500, epochs=1, node_count=2, links=["2mbit"])
    job = prepare_job(spec)
    data = 2000 // 2 * (784 + 8) + 500 * (784 + 8)  # grey levels + int64 labels, per node
    assert job_bytes(job, 0) >= data
    result = simulate(job)
    floor = job_bytes(job, 0) * 8 / TCP_PAYLOAD_SHARE / 2e6
    assert result.error is None and floor > 3
    first = min(row["virtual_s"] for r in result.reports for row in r.batch_rows)
    assert first >= floor


def test_a_straggler_holds_everyone_back_in_ssgd():
    fast = _job(device_speed=["1"], seed=1)
    slow = _job(device_speed=["1=0.1"], seed=1)
    assert fast.error is None and slow.error is None
    fast_s = max(r.virtual_train_s or 0 for r in fast.reports)
    for report in slow.reports:  # node 0 waits for node 1 every batch
        assert (report.virtual_train_s or 0) > 3 * fast_s


def test_the_command_line_records_virtual_time_beside_real_time(tmp_path):
    out = tmp_path / "run"
    typed = ["--simulate", "-q", "--train-samples", "1280", "--test-samples", "300", "--epochs",
             "2", "--link", "20mbit,5ms", "--link", "1=5mbit", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(submit, typed)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["emulated"]["1"] == {"link": "5mbit,0ms", "speed": 1.0}
    assert summary["virtual_wall_s"] >= summary["virtual_train_s"] > 0
    header, *rows = (out / "eval-node0.csv").read_text().splitlines()
    assert header.endswith("virtual_train_s,virtual_s") and len(rows) == 2
    assert float(rows[1].split(",")[-1]) > float(rows[0].split(",")[-1])
    assert (out / "train-node0.csv").read_text().splitlines()[0].endswith("time_s,virtual_s")
    time_panel = run_figure(load_run(out)).axes[3]
    virtual = [line for line in time_panel.get_lines() if line.get_label() == "virtual clock"]
    assert len(virtual) == 1 and len(virtual[0].get_xdata()) == 2
    assert max(virtual[0].get_xdata()) == pytest.approx(summary["virtual_train_s"], abs=1e-3)


def test_link_options_are_checked_and_refused_off_simulate(tmp_path):
    result = CliRunner().invoke(submit, ["--simulate", "--link", "fast", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--link" in result.output and "'fast'" in result.output
    result = CliRunner().invoke(
        submit, ["--local", "2", "--link", "10mbit", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "bench/netlab.py" in result.output


def test_a_slow_server_link_paces_a_parameter_server_job():
    result = _job(codec="ps.GradientPSClient", ps_codec="ps.GradientPSServer",
                  links=["ps=5mbit"])  # fmt: skip
    assert result.error is None and result.ps_bytes_sent
    # every step: the gradients come in through the server's link, then the replies go out
    through = result.ps_bytes_sent + sum(r.bytes_sent for r in result.reports)
    floor = through * 8 / TCP_PAYLOAD_SHARE / 5e6
    finished = max(r.virtual_s or 0 for r in result.reports)
    assert finished >= floor * 0.95  # the last reply may arrive after the last training step
    assert finished <= floor + max(r.train_s for r in result.reports) + 1.0


def test_asgd_runs_on_the_clock_without_waiting_for_peers():
    result = _job(sync="asgd", links=["1mbit"])
    assert result.error is None
    for report in result.reports:  # nothing waits: compute only, far less than the bytes' time
        assert report.virtual_train_s is not None
        assert report.virtual_train_s < report.bytes_sent * 8 / 1e6 / 2
        assert report.virtual_train_s <= report.train_s + 0.2
