"""--param keys on real daemons: what the workers' codecs read comes back to the submitter."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
from entry_points import SUBMIT

pytestmark = pytest.mark.timeout(120)

LAZY_CODEC = textwrap.dedent(
    """
    from psgd import Codec, GlobalSettings


    class Lazy(Codec):
        # declares nothing; reads its key only once training runs, never in __init__
        def dispose(self):
            pass

        def update_blocks(self, block_weight):
            GlobalSettings.get_params("late_key", 0)
            self.set_result(block_weight.content, lambda old, new: new)

        def receive_blocks(self, content):
            return None
    """
)


def test_keys_read_on_daemons_count_and_a_misspelled_one_is_named(tmp_path):
    (tmp_path / "codecs").mkdir()
    (tmp_path / "codecs" / "lazy.py").write_text(LAZY_CODEC)
    done = subprocess.run(
        [*SUBMIT, "--local", "2", "--codec", "lazy.Lazy", "--train-samples", "400",
         "--test-samples", "100", "--epochs", "1", "--param", "late_key=1",
         "--param", "lat_key=2", "--out", "run"],
        capture_output=True, text=True, timeout=100, cwd=tmp_path,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params_unread"] == ["lat_key"]  # late_key was read on the daemons only
    assert "warning: --param lat_key=2 was never read; the codecs read late_key" in done.stderr
    assert "late_key=1" not in done.stderr
