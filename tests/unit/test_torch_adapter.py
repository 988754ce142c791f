"""The PyTorch adapter of docs/examples/torch_model.py (runs only where torch is installed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch", reason="torch is not installed (psgd does not need it)")

from psgd.cli.submit import submit  # noqa: E402
from psgd.data import load_mnist  # noqa: E402
from psgd.nn import build_model  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "torch_model.py"
sys.path.insert(0, str(EXAMPLE.parent))
from torch_model import build  # noqa: E402


def test_the_torch_2nn_has_psgds_loss_and_gradients_for_the_same_weights():
    adapted = build(784, 10, np.random.default_rng(0))
    mlp = build_model("mlp:784,200,200,10", 784, 10, np.random.default_rng(1))
    mlp.set_weights([w.T if w.ndim == 2 else w for w in adapted.get_weights()])  # (out, in)
    images = load_mnist()
    x, y = np.asarray(images.x_train[:64]), np.asarray(images.y_train[:64])
    assert adapted.loss_and_grads(x, y) == pytest.approx(mlp.loss_and_grads(x, y), rel=1e-6)
    for ours, theirs in zip(adapted.variables, mlp.variables, strict=True):
        grad = ours.grad.T if ours.grad.ndim == 2 else ours.grad
        np.testing.assert_allclose(grad, theirs.grad, atol=1e-7)


def test_stepping_a_variable_in_place_steps_the_module():
    adapted = build(784, 10, np.random.default_rng(0))
    before = adapted.module[0].weight.detach().clone()
    adapted.variables[0].value -= 0.5
    assert torch.allclose(adapted.module[0].weight.detach(), before - 0.5)


def test_a_job_trains_the_torch_model_and_saves_its_weights(tmp_path):
    out = tmp_path / "run"
    argv = ["--simulate", "-q", "--model", f"{EXAMPLE}:build", "--node_count", "2",
            "--epochs", "1", "--train-samples", "4000", "--test-samples", "500",
            "--batch_size", "32", "--optimizer", "sgd", "--learn_rate", "0.1",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(submit, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] > 0.6  # chance is 0.1
    with np.load(out / "model.npz") as saved:
        assert [saved[k].shape for k in ("0.weight", "2.weight", "4.weight")] == [
            (200, 784), (200, 200), (10, 200)
        ]  # fmt: skip
