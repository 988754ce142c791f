"""job_submit.py as a user meets it: --help, clear option errors, the run folder."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from click.testing import CliRunner
from entry_points import SUBMIT

from psgd.cli.argv import detach_argv
from psgd.cli.submit import submit

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--simulate", "-q", "--train-samples", "2000", "--test-samples", "500", "--epochs", "1"]


def test_help_explains_every_option():
    result = CliRunner().invoke(submit, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--codec", "--ps-codec", "--node_count", "--epochs", "--batch_size", "--learn_rate",
        "--optimizer", "--sync", "--assignment", "--redundancy", "--dataset", "--seed", "--out",
        "--param", "--simulate", "--timeout", "--exchange", "--partition", "--model",
    ):  # fmt: skip
        assert option in result.output, option


def test_simulated_run_writes_summary_and_records(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(submit, [*QUICK, "--out", str(out), "--param", "x=1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("accuracy", "loss", "epochs", "samples_per_s", "wall_s", "bytes_sent"):
        assert key in summary
    assert summary["status"] == "completed" and summary["epochs"] == 1
    assert set(summary["bytes_sent"]) == {"0", "1"} and summary["bytes_sent"]["0"] > 0
    assert summary["spec"]["params"] == {"x": 1}
    assert summary["samples_per_s"] > 0 and 0.5 < summary["accuracy"] <= 1
    for name in ("train-node0.csv", "eval-node1.csv", "model.npz", "log.txt", "job.json"):
        assert (out / name).exists(), name
    rows = (out / "train-node0.csv").read_text().splitlines()
    assert rows[0] == "epoch,batch,loss,bytes_round,bytes_sent,time_s" and len(rows) > 10


def test_finished_run_folder_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(submit, [*QUICK, "--out", str(out)]).exit_code == 0
    before = (out / "summary.json").read_bytes()
    again = runner.invoke(submit, [*QUICK, "--out", str(out)])
    assert again.exit_code == 2 and "already holds a finished run" in again.output
    assert (out / "summary.json").read_bytes() == before


def test_unknown_codec_is_a_usage_error_naming_what_was_looked_up(tmp_path):
    result = CliRunner().invoke(
        submit, [*QUICK, "--codec", "fedavg.FedAvgClien", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "did you mean FedAvgClient" in result.output


def test_bad_param_and_model_are_usage_errors(tmp_path):
    runner = CliRunner()
    bad_param = runner.invoke(submit, [*QUICK, "--param", "novalue"])
    assert bad_param.exit_code == 2 and "key=value" in bad_param.output
    bad_model = runner.invoke(submit, [*QUICK, "--model", "100,10", "--out", str(tmp_path)])
    assert bad_model.exit_code == 2 and "784 features" in bad_model.output


def test_failing_job_exits_non_zero_and_keeps_a_failed_summary(tmp_path):
    codec = REPO / "tests" / "unit" / "test_simulate.py"
    out = tmp_path / "run"
    result = CliRunner().invoke(
        submit,
        [*QUICK, "--codec", f"{codec}:ExplodesOnReceive", "--timeout", "5", "--out", str(out)],
    )
    assert result.exit_code == 1
    assert "ZeroDivisionError" in result.output
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_job_submit_script_runs_as_a_user_would(tmp_path):
    proc = subprocess.run(
        [*SUBMIT, *QUICK[:1], "--train-samples", "2000",
         "--test-samples", "500", "--epochs", "1", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stdout and "test accuracy" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_more_nodes_than_the_worker_list_is_refused_before_anything_ships(tmp_path):
    listing = tmp_path / "worker.json"
    listing.write_text('{"Worker": ["127.0.0.1:1", "127.0.0.1:2"]}')
    result = CliRunner().invoke(
        submit,
        ["--workers", str(listing), "--node_count", "3", *QUICK[2:], "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2
    assert "--node_count 3 but" in result.output and "lists 2 workers" in result.output


def test_codec_that_raises_in_init_is_one_clear_message_before_training(tmp_path):
    codec = tmp_path / "bad.py"
    codec.write_text(
        "from psgd import Codec\n\n\nclass Bad(Codec):\n"
        "    def __init__(self, node_id):\n        raise RuntimeError('no GPU here')\n\n"
        "    def dispose(self):\n        pass\n\n"
        "    def update_blocks(self, block_weight):\n        pass\n\n"
        "    def receive_blocks(self, content):\n        pass\n"
    )
    result = CliRunner().invoke(
        submit, [*QUICK, "--codec", f"{codec}:Bad", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "codec Bad: __init__ raised RuntimeError: no GPU here" in result.output
    assert "epoch" not in result.output


def test_detach_reruns_what_was_typed_without_detach_out_and_job_id(tmp_path, monkeypatch):
    started: list[list[str]] = []
    monkeypatch.setattr(
        "psgd.cluster.detach.detach", lambda argv, out, job_id: started.append(argv) or 4242
    )
    typed = ["--local", "2", "--epochs", "1", "--param", "note=x", "--out", str(tmp_path / "r"),
             "--detach", "-q", "--job-id", "j-1", "--param=b=2", "--out=elsewhere"]  # fmt: skip
    result = CliRunner().invoke(submit, typed)
    assert result.exit_code == 0, result.output
    assert "detached (background submitter pid 4242)" in result.output
    assert started == [["--local", "2", "--epochs", "1", "--param", "note=x", "-q", "--param=b=2"]]


def test_detach_argv_never_takes_a_value_for_an_option():
    argv = ["--codec", "--detach", "--out", "--job-id", "--simulate", "--workers", "-q"]
    assert detach_argv(submit, argv) == ["--codec", "--detach", "--simulate", "--workers", "-q"]


def test_a_diverging_run_ends_diverged_and_exits_non_zero(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(submit, [*QUICK, "--attack", "1:scale:1e308", "--out", str(out)])
    assert result.exit_code == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert re.match(r"node \d diverged: .*\(round 0\)$", summary["error"])
    assert "diverged" in result.output


def test_a_diverging_round_job_ends_diverged(tmp_path):
    out = tmp_path / "run"
    federated = ["--codec", "federated.FedAvgClient", "--ps-codec", "federated.FedAvgServer",
                 "--node_count", "4", "--rounds", "3", "--optimizer", "sgd", "--learn_rate",
                 "1e30"]  # fmt: skip
    result = CliRunner().invoke(submit, [*QUICK, *federated, "--out", str(out)])
    assert result.exit_code == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["error"].startswith("round 1 diverged")


def test_local_and_a_different_node_count_for_a_per_batch_job_is_refused(tmp_path):
    args = ["--local", "2", "--node_count", "3", "-q", "--train-samples", "600", "--out",
            str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(submit, args)
    assert result.exit_code != 0
    assert "--local 2 starts one daemon per node" in result.output
    assert "--node_count is 3" in result.output
