"""Job progress: a live bar on a terminal, one line per epoch or round, concise lines in logs."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import time

import pytest
from entry_points import SUBMIT
from rich.console import Console

from psgd.results.progress import JobProgress, LiveProgress, open_progress

pytestmark = pytest.mark.timeout(60)


def batch(node: int, epoch: int, step: int, loss: float = 1.0, sent: int = 0) -> dict:
    return {"type": "progress", "node": node, "epoch": epoch, "batch": step, "batches": 8,
            "loss": loss, "bytes_sent": sent}  # fmt: skip


def evaluated(node: int, epoch: int, accuracy: float, sent: int = 0) -> dict:
    return {"type": "epoch", "node": node, "epoch": epoch, "test_loss": 0.5,
            "test_accuracy": accuracy, "train_s": 1.0, "bytes_sent": sent}  # fmt: skip


def printed(capsys) -> list[str]:
    return [line.split("] ", 1)[1] for line in capsys.readouterr().out.splitlines()]


def test_plain_lines_wait_for_the_slowest_node_and_sum_up_each_epoch(capsys):
    show = open_progress(epochs=2, batches=8, nodes=2, live=False)
    assert type(show) is JobProgress and show.updates_per_epoch == 4
    show(batch(0, 1, 2, loss=2.0, sent=2_000_000))
    assert printed(capsys) == []  # node 1 has not reported yet
    show(batch(1, 1, 2, loss=1.0, sent=4_000_000))
    show(batch(0, 1, 4))  # node 1 is still in the first quarter
    assert printed(capsys) == ["epoch 1/2  batch 2/8  loss 1.5000  3.0 MB sent per worker"]
    show(evaluated(0, 1, 0.80, 8_000_000))
    assert printed(capsys) == []  # one line per epoch, once every node is evaluated
    show(evaluated(1, 1, 0.90, 8_000_000))
    assert printed(capsys) == [
        "epoch 1/2  test accuracy 0.8500 (nodes 0.8000-0.9000)  test loss 0.5000  "
        "8.0 MB sent per worker"
    ]
    show(batch(0, 2, 2))
    show(batch(1, 2, 2))
    assert printed(capsys)[0].startswith("epoch 2/2  batch 2/8")
    show.close()


def test_rounds_get_one_line_each_and_unknown_events_none(capsys):
    show = open_progress(epochs=1, batches=8, nodes=10, rounds=5, live=False)
    show(
        {
            "type": "round",
            "round": 2,
            "rounds": 5,
            "clients": 4,
            "samples": 400,
            "train_loss": 0.5,
            "bytes_up": 2_000_000,
            "bytes_down": 3_000_000,
            "wall_s": 1.0,
        }
    )
    show({"type": "round", "round": 3, "rounds": 5, "clients": 4, "samples": 400,
          "train_loss": 0.4, "bytes_up": 2_000_000, "bytes_down": 3_000_000, "wall_s": 2.0,
          "accuracy": 0.91, "loss": 0.3, "client_accuracy_p10": 0.8,
          "client_accuracy_worst": 0.7})  # fmt: skip
    show({"type": "something new", "node": 0})
    assert printed(capsys) == [
        "round 2/5  4 clients  train loss 0.5000  up 2.0 MB down 3.0 MB",
        "round 3/5  4 clients  train loss 0.4000  test loss 0.3000  accuracy 0.9100 "
        "(clients: p10 0.8000, worst 0.7000)  up 2.0 MB down 3.0 MB",
    ]


def test_a_live_bar_counts_rounds():
    console = Console(file=io.StringIO(), force_terminal=True, width=140)
    show = LiveProgress(epochs=1, batches=1, nodes=3, rounds=4, console=console)
    show({"type": "round", "round": 1, "rounds": 4, "clients": 3, "train_loss": 0.5,
          "bytes_up": 1_000_000, "bytes_down": 1_000_000, "wall_s": 1.0})  # fmt: skip
    task = show.bar.tasks[0]
    assert (task.completed, task.total) == (1, 4) and "round 1/4" in task.description
    show.close()


def test_quiet_shows_nothing(capsys):
    show = open_progress(epochs=1, batches=8, nodes=1, quiet=True)
    show(batch(0, 1, 8))
    show(evaluated(0, 1, 0.5))
    assert capsys.readouterr().out == ""


def test_live_bar_keeps_epoch_lines_and_leaves_no_bar_behind():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=140)
    show = LiveProgress(epochs=2, batches=8, nodes=1, rounds=None, console=console)
    assert show.updates_per_epoch > 4 and not show.batch_lines
    for step in range(1, 9):
        show(batch(0, 1, step, loss=0.25, sent=step * 1_000_000))
    show(evaluated(0, 1, 0.75, 8_000_000))
    show.bar.refresh()
    drawn = screen.getvalue()
    assert "epoch 1/2  test accuracy 0.7500" in drawn
    assert "loss 0.2500" in drawn and "MB/worker" in drawn and "eta" in drawn
    assert "batch 8/8" not in drawn.replace("epoch 1/2 batch 8/8", "")  # no batch lines
    show.close()
    show.close()  # idempotent


def test_a_job_on_a_terminal_draws_a_bar_and_in_a_pipe_plain_lines(tmp_path):
    args = [*SUBMIT, "--simulate", "--train-samples", "2000", "--test-samples", "200",
            "--epochs", "2", "--batch_size", "20"]  # fmt: skip
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "120", "TERM": "xterm"}
    main, child = pty.openpty()
    job = subprocess.Popen([*args, "--out", "tty"], stdout=child, stderr=child, cwd=tmp_path,
                           env=env)  # fmt: skip
    os.close(child)
    shown, deadline = b"", time.monotonic() + 50
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    assert job.wait(timeout=10) == 0, shown.decode(errors="replace")
    os.close(main)
    text = shown.decode(errors="replace")
    assert "\u2501" in text  # the bar's line character
    assert "epoch 1/2  test accuracy" in text and "epoch 2/2  test accuracy" in text
    piped = subprocess.run([*args, "--out", "pipe"], capture_output=True, text=True,
                           timeout=50, cwd=tmp_path, env=env)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "\u2501" not in piped.stdout and "\x1b[" not in piped.stdout
    progress = [line for line in piped.stdout.splitlines() if line.startswith("[")]
    assert [line.split("] ")[1][:22] for line in progress] == [
        *[f"epoch 1/2  batch {b}/50" for b in (12, 24, 36, 48)], "epoch 1/2  test accuracy"[:22],
        *[f"epoch 2/2  batch {b}/50" for b in (12, 24, 36, 48)], "epoch 2/2  test accuracy"[:22],
    ]  # fmt: skip
