"""Run figures drawn by matplotlib: what each panel shows, odd data, the PNG on disk."""

from __future__ import annotations

import math

import numpy as np
import pytest
from run_folders import make_run

from psgd.results.plot import LEGEND_MAX, comparison_figure, plot_run, run_figure
from psgd.results.runs import NodeRecords, RunRecords, load_run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunRecords:
    return load_run(make_run(tmp_path_factory.mktemp("run") / "run", node_count=2))


def _lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (line.get_xdata(), line.get_ydata()) for line in ax.get_lines()}


def test_a_run_folder_gets_its_plot_png(run):
    image = pytest.importorskip("matplotlib.image").imread(run.path / "plot.png")
    assert image.shape[:2] == (750, 1100)
    assert image[..., :3].std() > 0.05  # something is drawn


def test_loss_panel_has_every_batch_of_every_node_with_epochs_on_top(run):
    loss = run_figure(run).axes[0]
    lines = _lines(loss)
    for node in run.nodes:
        xs, ys = lines[f"node {node.node}"]
        assert list(ys) == [row["loss"] for row in node.batches]
        assert list(xs) == list(range(1, len(node.batches) + 1))
    assert any(ax.get_xlabel() == "epoch" for ax in loss.child_axes)


def test_accuracy_panels_show_nodes_and_their_mean_per_epoch_bytes_and_time(run):
    figure = run_figure(run)
    per_epoch, per_byte, per_second = figure.axes[1:4]
    mean = [p.accuracy for p in run.progress()]
    assert list(_lines(per_epoch)["mean"][1]) == pytest.approx(mean)
    assert list(_lines(per_epoch)["mean"][0]) == [1, 2, 3]
    assert list(_lines(per_byte)["mean"][0]) == pytest.approx(
        [p.bytes_per_worker / 1e6 for p in run.progress()]
    )
    assert per_byte.get_xlabel() == "MB sent per worker"
    assert per_second.get_xlabel() == "training time (s)"


def test_odd_records_still_give_a_figure(tmp_path):
    nan = math.nan
    odd = RunRecords(
        tmp_path,
        {"status": "failed", "spec": {"codec": "x.Y"}},
        [NodeRecords(0, [{"epoch": 1, "loss": nan}, {"epoch": 1, "loss": 2.0}], []),
         NodeRecords(1, [], [])],
    )  # fmt: skip
    figure = run_figure(odd)
    assert any("(failed)" in t.get_text() for t in figure.texts)  # the suptitle
    assert any(t.get_text() == "no data" for t in figure.axes[1].texts)
    assert plot_run(tmp_path / "plot.png", odd).stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]  # no temporary file left
    empty = RunRecords(tmp_path, {}, [])
    assert len(run_figure(empty).axes) == 4


def test_many_nodes_share_one_legend_entry_the_mean(tmp_path):
    evals = [{"epoch": 1.0, "test_accuracy": 0.5, "train_s": 1.0, "bytes_sent": 10.0}]
    nodes = [NodeRecords(i, [{"epoch": 1.0, "loss": 1.0}], evals) for i in range(LEGEND_MAX + 5)]
    figure = run_figure(RunRecords(tmp_path, {"status": "completed"}, nodes))
    legend = figure.axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["mean"]


def test_comparison_overlays_one_line_per_run_in_three_panels(run, tmp_path):
    figure = comparison_figure([run, run], ["a", "b"])
    labels = [ax.get_xlabel() for ax in figure.axes[:3]]
    assert labels == ["epoch", "MB sent per worker", "time (s)"]
    for ax in figure.axes[:3]:
        assert sorted(_lines(ax)) == ["a", "b"]
