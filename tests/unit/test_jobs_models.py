"""Jobs with other models, losses, start models and data: in-process, through the real CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from psgd.cli.submit import submit
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.nn import Sequential, load_model, load_weights
from psgd.train.prepare import prepare_job

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO / "bench"))
from make_breast_cancer_like import write  # noqa: E402

QUICK = ["--simulate", "-q", "--train-samples", "3000", "--test-samples", "300", "--epochs", "1",
         "--batch_size", "32", "--learn_rate", "0.01"]  # fmt: skip

USER_LEARNER = '''
import numpy as np
from psgd.nn import Variable


class Centroids:
    """Nearest class mean as a learner: the loss pulls each class's centroid to its samples."""

    def __init__(self, features, classes, rng):
        self.C = Variable("centroids", rng.standard_normal((classes, features)).astype(np.float32))
        self.variables = [self.C]

    def loss_and_grads(self, x, y):
        diff = self.C.value[y] - x
        self.C.grad[...] = 0
        np.add.at(self.C.grad, y, diff / len(y))
        return float(0.5 * (diff**2).sum() / len(y))

    def evaluate(self, x, y):
        d = ((x[:, None, :] - self.C.value[None]) ** 2).sum(axis=2)
        return float(d.min(axis=1).mean()), float((d.argmin(axis=1) == y).mean())

    def get_weights(self):
        return [self.C.value.copy()]

    def set_weights(self, weights):
        self.C.value[...] = weights[0]


def build(features, classes, rng, loss=None, activation="relu"):
    return Centroids(features, classes, rng)
'''


def run(tmp_path: Path, *args: str, out: str = "run") -> dict:
    result = CliRunner().invoke(submit, [*QUICK, *args, "--out", str(tmp_path / out)])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / out / "summary.json").read_text())


@pytest.fixture(scope="module")
def tabular(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("data") / "cancer.npz")


def test_mlp_name_and_old_sizes_syntax_build_the_same_job(tmp_path):
    named = run(tmp_path, "--model", "mlp:784,32,10", out="named")
    sizes = run(tmp_path, "--model", "784,32,10", out="sizes")
    assert named["accuracy"] == sizes["accuracy"] > 0.6
    np.testing.assert_array_equal(
        load_model(tmp_path / "named" / "model.npz").get_weights()[0],
        load_model(tmp_path / "sizes" / "model.npz").get_weights()[0],
    )


def test_cnn_mnist_trains_and_its_model_file_rebuilds(tmp_path):
    summary = run(tmp_path, "--model", "cnn-mnist", "--node_count", "1", "--batch_size", "32",
                  "--train-samples", "640", "--learn_rate", "0.001")  # fmt: skip
    model = load_model(tmp_path / "run" / "model.npz")
    assert isinstance(model, Sequential) and len(model.variables) == 8
    assert summary["accuracy"] > 0.3  # 20 steps; chance is 0.1


def test_user_learner_file_trains_and_is_saved_weights_only(tmp_path):
    (tmp_path / "centroids.py").write_text(USER_LEARNER)
    summary = run(tmp_path, "--model", f"{tmp_path / 'centroids.py'}:build",
                  "--optimizer", "sgd", "--learn_rate", "1.0")  # fmt: skip
    assert summary["accuracy"] > 0.6
    assert load_weights(tmp_path / "run" / "model.npz")["centroids"].shape == (10, 784)
    with pytest.raises(Exception, match="holds only the weights of a 'Centroids' learner"):
        load_model(tmp_path / "run" / "model.npz")


def test_user_builder_that_returns_no_learner_is_refused_by_name(tmp_path):
    (tmp_path / "bad.py").write_text(
        "def build(features, classes, rng, **options):\n    return 3\n"
    )
    result = CliRunner().invoke(submit, [*QUICK, "--model", f"{tmp_path / 'bad.py'}:build"])
    assert result.exit_code != 0
    assert "returned int, not a learner: missing loss_and_grads" in result.output


def test_init_starts_from_a_model_file_and_checks_its_shapes(tmp_path):
    run(tmp_path, "--model", "784,16,10", out="first")
    saved = tmp_path / "first" / "model.npz"
    job = prepare_job(JobSpec(model=[784, 16, 10], init=str(saved), train_samples=100,
                              test_samples=50))  # fmt: skip
    for ours, theirs in zip(job.initial_weights, load_model(saved).get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ConfigError, match=r"dense0.W is \(784, 16\) float32 in the file, "
                                          r"\(784, 32\) float32 in the model"):  # fmt: skip
        prepare_job(JobSpec(model=[784, 32, 10], init=str(saved), train_samples=100))


@pytest.mark.parametrize(("loss", "better_than"), [("mse", 0.3), ("bce", 0.6)])
def test_other_losses_train_an_mlp(tmp_path, loss, better_than):
    summary = run(tmp_path, "--model", "784,32,10", "--loss", loss)
    assert summary["accuracy"] > better_than  # 0.1 is chance; MSE learns slowest


def test_logreg_easgd_centre_model_is_evaluated_and_saved(tmp_path, tabular):
    summary = run(tmp_path, "--dataset", str(tabular), "--model", "logreg", "--node_count", "3",
                  "--codec", "averaging.EASGDWorker", "--ps-codec", "averaging.EASGDServer",
                  "--epochs", "10", "--batch_size", "16", "--train-samples", "456",
                  "--test-samples", "113")  # fmt: skip
    centre = load_model(tmp_path / "run" / "model.npz")
    data = np.load(tabular)
    loss, accuracy = centre.evaluate(data["x_test"], data["y_test"])
    assert summary["server_accuracy"] == pytest.approx(accuracy, abs=1e-6) and accuracy > 0.8
    workers = [load_model(tmp_path / "run" / f"model-node{n}.npz") for n in range(3)]
    assert not np.array_equal(workers[0].get_weights()[0], centre.get_weights()[0])


def test_gradient_ps_server_model_is_the_workers_model(tmp_path):
    run(tmp_path, "--model", "784,16,10", "--codec", "ps.GradientPSClient",
        "--ps-codec", "ps.GradientPSServer", "--exchange", "delta")  # fmt: skip
    server = load_model(tmp_path / "run" / "model.npz").get_weights()
    worker = load_model(tmp_path / "run" / "model-node0.npz").get_weights()
    for a, b in zip(server, worker, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_federated_rounds_save_the_global_cnn(tmp_path):
    summary = run(tmp_path, "--model", "cnn-mnist", "--codec", "federated.FedAvgClient",
                  "--ps-codec", "federated.FedAvgServer", "--node_count", "4", "--rounds", "1",
                  "--param", "fraction=0.5", "--executors", "0", "--train-samples", "200",
                  "--test-samples", "100", "--batch_size", "10")  # fmt: skip
    assert summary["rounds"] == 1
    assert len(load_model(tmp_path / "run" / "model.npz").variables) == 8


def test_natural_partition_on_leaf_data_gives_each_writer_a_client(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / "leaf" / split).mkdir(parents=True)
        users = {f"w{u}": {"x": rng.random((5 + u, 12)).tolist(),
                           "y": rng.integers(0, 3, 5 + u).tolist()} for u in range(3)}  # fmt: skip
        (tmp_path / "leaf" / split / "d.json").write_text(
            json.dumps({"users": list(users), "user_data": users})
        )
    job = prepare_job(JobSpec(dataset=f"leaf:{tmp_path / 'leaf'}", partition="natural",
                              node_count=3, model=[12, 3]))  # fmt: skip
    assert [len(b) for b in job.block_indices] == [5, 6, 7]
    with pytest.raises(ConfigError, match="has 3 writers/users"):
        prepare_job(JobSpec(dataset=f"leaf:{tmp_path / 'leaf'}", partition="natural",
                            node_count=4, model=[12, 3]))  # fmt: skip


def test_a_learners_own_state_goes_into_checkpoints(tmp_path):
    from psgd.train.checkpoint import load_checkpoint, save_checkpoint

    state = {"epoch": 2, "weights": [np.ones(3, np.float32)], "optimizers": [[[]]],
             "report": {}, "state": [np.arange(4.0)]}  # fmt: skip
    save_checkpoint(tmp_path / "c.npz", state)
    loaded = load_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded["state"][0], np.arange(4.0))
    save_checkpoint(tmp_path / "none.npz", {**state, "state": []})
    assert load_checkpoint(tmp_path / "none.npz")["state"] == []


def test_cifar_cnn_trains_on_a_cifar10_folder(tmp_path):
    from test_data_formats import write_cifar_binary

    write_cifar_binary(tmp_path / "cifar-10-batches-bin")
    summary = run(tmp_path, "--dataset", f"cifar10:{tmp_path / 'cifar-10-batches-bin'}",
                  "--model", "cnn-cifar", "--train-samples", "20", "--test-samples", "4",
                  "--batch_size", "5", "--codec", "averaging.ModelAverage")  # fmt: skip
    assert summary["status"] == "completed"
    assert len(load_model(tmp_path / "run" / "model.npz").variables) == 10
