"""psgd compare: runs read back from their folders, tabled and overlaid in one figure."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from run_folders import make_run

from psgd.cli import main
from psgd.errors import ConfigError
from psgd.results.compare import compare_rows, csv_table, find_runs, markdown_table
from psgd.results.plot import comparison_figure
from psgd.results.runs import load_run

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/plain (3 nodes) and runs/dummy (2 nodes), 3 epochs each."""
    root = tmp_path_factory.mktemp("runs")
    make_run(root / "plain", codec="plain.Plain", node_count=3)
    make_run(root / "dummy", codec="dummy.DummyCodec", node_count=2)
    return root


def test_a_run_reads_back_as_the_mean_of_its_nodes_per_epoch(runs):
    run = load_run(runs / "plain")
    progress = run.progress()
    assert [p.step for p in progress] == [1, 2, 3] and run.unit == "epoch"
    summary = json.loads((runs / "plain" / "summary.json").read_text())
    assert progress[-1].accuracy == pytest.approx(summary["accuracy"], abs=1e-6)
    assert progress[-1].bytes_per_worker == pytest.approx(run.bytes_per_worker())
    sent = [p.bytes_per_worker for p in progress]
    assert sent == sorted(sent) and sent[0] > 0
    assert run.codec == "plain.Plain" and run.server_bytes() is None


def test_a_round_based_run_reads_back_per_evaluated_round(tmp_path):
    folder = make_run(
        tmp_path / "fed", codec="federated.FedAvgClient", ps_codec="federated.FedAvgServer",
        node_count=4, rounds=4, eval_every=2, executors=0, params={"fraction": 0.5},
    )  # fmt: skip
    run = load_run(folder)
    assert run.unit == "round" and [p.step for p in run.progress()] == [2, 4]
    summary = json.loads((folder / "summary.json").read_text())
    assert run.progress()[-1].accuracy == pytest.approx(summary["accuracy"])
    assert run.bytes_per_worker() == pytest.approx(summary["bytes_up"] / 4)
    row = compare_rows([run], target=0.01)[0]
    assert (row.unit, row.steps, row.steps_to_target) == ("round", 4, 2)
    assert "| rounds | rounds to 0.01 |" in markdown_table([row], target=0.01)


def test_rows_give_epochs_to_target_bytes_and_wall_time(runs):
    plain, dummy = load_run(runs / "plain"), load_run(runs / "dummy")
    target = plain.progress()[1].accuracy  # reached at epoch 2 at the latest
    rows = compare_rows([plain, dummy], ["P2P", "local"], target=target)
    assert rows[0].steps_to_target is not None and rows[0].steps_to_target <= 2
    assert rows[0].steps == 3 and rows[0].bytes_per_worker > 0
    assert rows[1].bytes_per_worker == 0  # DummyCodec never sends
    unreachable = compare_rows([plain], target=1.0)[0]
    assert unreachable.steps_to_target is None
    assert "| not in 3 |" in markdown_table([unreachable], target=1.0)


def test_markdown_and_csv_tables_hold_the_same_figures(runs):
    rows = compare_rows(find_runs([runs]), target=0.5)
    table = markdown_table(rows, target=0.5).splitlines()
    assert table[0] == "| run | accuracy | epochs | epochs to 0.5 | MB per worker | wall s |"
    assert len(table) == 2 + len(rows)
    parsed = list(csv.DictReader(io.StringIO(csv_table(rows, target=0.5))))
    assert [r["codec"] for r in parsed] == [row.codec for row in rows]
    for row, line in zip(rows, parsed, strict=True):
        assert float(line["accuracy"]) == pytest.approx(row.accuracy, rel=1e-5)
        assert int(line["bytes_per_worker"]) == row.bytes_per_worker
        assert f"{row.accuracy:.4f}" in "\n".join(table)


def test_a_failed_run_is_tabled_with_its_status(runs, tmp_path):
    failed = tmp_path / "failed"
    shutil.copytree(runs / "dummy", failed)
    summary = json.loads((failed / "summary.json").read_text())
    summary.update(status="failed", error="node 1 died")
    (failed / "summary.json").write_text(json.dumps(summary))
    row = compare_rows([load_run(failed)])[0]
    assert row.status == "failed" and "(failed)" in markdown_table([row])


def test_a_folder_that_is_no_run_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty: no summary.json"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match=r"nothere: no such run folder"):
        find_runs([tmp_path / "nothere"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad/summary.json: cannot read"):
        load_run(tmp_path / "bad")


def test_psgd_compare_prints_the_table_and_writes_figure_and_csv(runs, tmp_path):
    out = tmp_path / "cmp.png"
    result = CliRunner().invoke(
        main, ["compare", str(runs / "plain"), str(runs / "dummy"), "--target", "0.5",
               "--label", "P2P", "--label", "local", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| P2P | `plain.Plain` |" in result.output
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert out.with_suffix(".csv").read_text().startswith("label,run,codec,status,accuracy")
    as_csv = CliRunner().invoke(
        main, ["compare", str(runs), "--format", "csv", "--out", str(tmp_path / "c2.png")]
    )
    assert as_csv.exit_code == 0 and as_csv.output.startswith("label,run,codec")


def test_psgd_compare_names_a_wrong_label_count_and_a_missing_folder(runs, tmp_path):
    wrong = CliRunner().invoke(
        main, ["compare", str(runs / "plain"), "--label", "a", "--label", "b",
               "--out", str(tmp_path / "x.png")],
    )  # fmt: skip
    assert wrong.exit_code == 2 and "--label given 2 times for 1 runs" in wrong.output
    missing = CliRunner().invoke(main, ["compare", str(tmp_path / "gone")])
    assert missing.exit_code == 2 and "gone: no such run folder" in missing.output


def test_bench_results_builds_its_tables_and_figures_with_compare(tmp_path):
    script = Path(__file__).resolve().parents[2] / "bench" / "results.py"
    done = subprocess.run(
        [sys.executable, str(script), "--only", "(P2P", "--epochs", "1", "--train-samples",
         "800", "--test-samples", "100", "--out", str(tmp_path / "results.md"),
         "--runs", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "results.md").read_text()
    assert "| run | codec | accuracy | epochs | MB per worker | wall s |" in text
    assert "| plain.Plain (P2P averaging) | `plain.Plain` |" in text
    assert (tmp_path / "results-baseline.png").is_file()
    assert (tmp_path / "runs" / "plain-plain-p2p-averaging" / "summary.json").is_file()


def test_runs_on_emulated_links_are_compared_on_the_virtual_clock(tmp_path):
    slow = make_run(tmp_path / "slow", codec="plain.Plain", node_count=2, links=["2mbit"])
    sparse = make_run(tmp_path / "sparse", codec="compression.TopKPlain", node_count=2,
                      links=["2mbit"], params={"ratio": 0.01})  # fmt: skip
    runs = [load_run(slow), load_run(sparse)]
    rows = compare_rows(runs)
    times = [
        json.loads((run / "summary.json").read_text())["virtual_wall_s"] for run in (slow, sparse)
    ]
    assert [row.virtual_wall_s for row in rows] == times and times[1] < times[0]
    table = markdown_table(rows)
    assert table.splitlines()[0].endswith("| wall s | virtual wall s |")
    assert f"| {times[0]:.2f} |" in table
    parsed = list(csv.DictReader(io.StringIO(csv_table(rows))))
    assert [float(r["virtual_wall_s"]) for r in parsed] == pytest.approx(times)
    time_panel = comparison_figure(runs, ["plain", "top-k"]).axes[2]
    assert time_panel.get_xlabel() == "virtual clock (s)"
    ends = [max(line.get_xdata()) for line in time_panel.get_lines()]
    slowest = [  # the slowest worker's virtual training time after the last epoch
        max(float(r["virtual_train_s"]) for node in load_run(run).nodes for r in node.evals)
        for run in (slow, sparse)
    ]
    assert ends == pytest.approx(slowest)
    # without a clock the column and the label stay away
    plain = compare_rows([load_run(make_run(tmp_path / "real", node_count=2))])
    assert "virtual" not in markdown_table(plain)
