"""Shared cores: nodes that compute at once on fewer cores take turns, on the virtual clock."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from psgd.cli.submit import submit
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.link_spec import Link
from psgd.train.prepare import prepare_job
from psgd.train.shared_cores import SharedCores
from psgd.train.simulate import simulate
from psgd.train.vclock import VirtualClock, build_clock


def test_work_that_finds_a_core_idle_runs_at_full_speed():
    cores = SharedCores(2)
    assert cores.reserve(0.0, 1.0) == 1.0
    assert cores.reserve(0.0, 1.0) == 1.0  # the second core
    assert cores.reserve(1.0, 0.5) == 1.5  # both free again
    assert cores.reserve(5.0, 0.0) == 5.0


def test_k_nodes_at_once_on_fewer_cores_take_k_over_cores_as_long_together():
    for count, nodes in ((1, 2), (2, 3), (2, 4), (3, 7)):
        cores = SharedCores(count)
        ends = [cores.reserve(0.0, 1.0) for _ in range(nodes)]
        assert max(ends) == pytest.approx(nodes / count)
        assert min(ends) == pytest.approx(1.0)  # early bookings keep their times


def test_a_long_stretch_holds_one_core_and_leaves_the_other():
    cores = SharedCores(2)
    assert cores.reserve(0.0, 10.0) == 10.0
    assert cores.reserve(5.0, 1.0) == pytest.approx(6.0)  # the idle core
    # a third at 5: the window [5, T] must hold 1 (this) + 1 (the second) + (T - 5) (the first)
    assert cores.reserve(5.0, 1.0) == pytest.approx(7.0)


def test_work_waits_out_a_busy_window_then_runs():
    cores = SharedCores(1)
    assert cores.reserve(0.0, 2.0) == 2.0
    assert cores.reserve(1.0, 1.0) == pytest.approx(3.0)  # 1 s of the first still to run
    # the second is booked as a fluid, 1 s of work over [1, 3]: a quarter of it is left at 2.5
    assert cores.reserve(2.5, 1.0) == pytest.approx(3.75)
    cores.forget_before(3.0)  # nothing booked runs after 3.75 but the third
    assert cores.reserve(4.0, 1.0) == pytest.approx(5.0)


def _spare(count: int, booked: list, ready: float, work: float, moment: float) -> float:
    """Capacity over [ready, moment] left after ``work`` and the ``booked`` stretches' work."""
    others = sum(r * max(0.0, min(e, moment) - max(s, ready)) for s, e, r in booked)
    return count * (moment - ready) - work - others


def test_every_booking_ends_at_the_first_moment_the_capacity_covers_it():
    rng = np.random.default_rng(7)
    for count in (1, 2, 3):
        cores, booked = SharedCores(count), []  # booked: (start, end, rate), as recorded
        for _ in range(150):
            ready, work = float(rng.uniform(0, 20)), float(rng.exponential(1.0))
            end = cores.reserve(ready, work)
            assert end >= ready + work - 1e-9
            assert _spare(count, booked, ready, work, end) >= -1e-6
            earlier = max(ready + work, end - 1e-3)
            if earlier < end - 1e-6:  # a moment before the end must not be covered yet
                assert _spare(count, booked, ready, work, earlier) < 1e-6
            booked.append((ready, end, work / (end - ready)))


def test_a_count_below_one_is_refused_by_name():
    with pytest.raises(ConfigError, match="--shared-cores"):
        SharedCores(0)
    with pytest.raises(ConfigError, match="--shared-cores"):
        JobSpec(shared_cores=0)


def test_the_clock_charges_compute_through_the_shared_cores():
    links = {n: Link() for n in range(3)}
    alone = VirtualClock(links, {})
    shared = VirtualClock(links, {}, shared_cores=2)
    for clock in (alone, shared):
        for node in range(3):
            clock.compute(node, 1.0)
    assert [alone.now(n) for n in range(3)] == [1.0, 1.0, 1.0]
    assert max(shared.now(n) for n in range(3)) == pytest.approx(1.5)
    assert shared.describe()["shared_cores"] == 2 and "shared_cores" not in alone.describe()
    assert build_clock([], [], [0, 1], shared_cores=1) is not None


def test_four_nodes_on_one_core_take_several_times_their_compute():
    base = {"train_samples": 3840, "test_samples": 200, "epochs": 1, "node_count": 4, "seed": 3}
    own = simulate(prepare_job(JobSpec(**base, device_speed=["1"])))
    shared = simulate(prepare_job(JobSpec(**base, device_speed=["1"], shared_cores=1)))
    assert own.error is None and shared.error is None
    own_s = max(r.virtual_train_s or 0 for r in own.reports)
    shared_s = max(r.virtual_train_s or 0 for r in shared.reports)
    # measured thread CPU differs run to run, by up to 1.5x on a loaded machine, and threads
    # computing at once each use a little more than one alone: 4 on one core cost 2.5x to 3.5x
    assert 2.0 * own_s < shared_s < 5.0 * own_s


def test_the_command_line_records_shared_cores_and_refuses_them_off_simulate(tmp_path):
    out = tmp_path / "run"
    typed = ["--simulate", "--train-samples", "640", "--test-samples", "200",
             "--shared-cores", "1", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(submit, typed)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["emulated"]["shared_cores"] == 1 and summary["virtual_train_s"] > 0
    shown = f"virtual clock (emulated links and devices): wall {summary['virtual_wall_s']:.2f}s"
    assert shown in result.output
    result = CliRunner().invoke(submit, ["--simulate", "--shared-cores", "0"])
    assert result.exit_code == 2 and "--shared-cores" in result.output
    result = CliRunner().invoke(
        submit, ["--local", "2", "--shared-cores", "2", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "--shared-cores" in result.output
