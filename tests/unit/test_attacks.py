"""Attack simulation: parsing, what each attack does, and that attacked runs really differ."""

from __future__ import annotations

import numpy as np
import pytest

from psgd.algorithms.attacks import parse_attack, parse_attacks
from psgd.errors import ConfigError
from psgd.job import JobSpec
from psgd.train.prepare import prepare_job
from psgd.train.simulate import simulate


def test_label_flip_poisons_only_the_named_label():
    attack = parse_attack("0:label_flip:1->4", 2)
    labels = np.array([0, 1, 1, 4, 9])
    np.testing.assert_array_equal(attack.poison_labels(labels), [0, 4, 4, 4, 9])
    np.testing.assert_array_equal(
        parse_attack("0:label_flip", 2).poison_labels(labels), [9, 8, 8, 5, 0]
    )
    assert attack.on_data


def test_label_flip_stays_within_a_binary_datasets_labels(tmp_path):
    """Found by the codec x model matrix: the default flip sent logreg's labels to 9 and 8."""
    import sys
    from pathlib import Path

    sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
    from make_breast_cancer_like import make

    x_train, y_train, x_test, y_test = make(0)
    np.savez(tmp_path / "cancer.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)  # fmt: skip
    spec = JobSpec(dataset=str(tmp_path / "cancer.npz"), model="logreg", node_count=2,
                   attacks=["1:label_flip"], train_samples=40)  # fmt: skip
    job = prepare_job(spec)
    (clean,), (poisoned,) = ([y for _, y in job.node_blocks(n).values()] for n in (0, 1))
    honest = job.dataset.y_train[job.block_indices[job.settings.node_2_block[1][0]]]
    np.testing.assert_array_equal(poisoned, 1 - honest)
    assert set(np.unique(clean)) <= {0, 1}
    spec.attacks = ["1:label_flip:1->4"]
    with pytest.raises(ConfigError, match=r"--attack '1:label_flip:1->4': the dataset's labels "
                                          r"are 0\.\.1"):  # fmt: skip
        prepare_job(spec)


def test_update_attacks_change_what_is_sent():
    rng = np.random.default_rng(0)
    update = np.arange(1, 5, dtype=np.float32)
    np.testing.assert_array_equal(parse_attack("1:sign_flip", 2).tamper(update, rng), -update)
    np.testing.assert_array_equal(parse_attack("1:scale:3", 2).tamper(update, rng), 3 * update)
    noise = parse_attack("1:gaussian:2", 2).tamper(np.zeros(20000, np.float32), rng)
    assert noise.dtype == np.float32 and abs(noise.std() - 2) < 0.05


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x:sign_flip", "node must be"),
        ("5:sign_flip", "node must be"),
        ("0:bogus", "unknown attack"),
        ("0:label_flip:1-4", "a->b"),
        ("0:scale:big", "takes a number"),
        ("0", "NODE:KIND"),
    ],
)
def test_bad_attacks_are_clear_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_attack(text, 3)


def test_one_attack_per_node():
    with pytest.raises(ConfigError, match="two attacks"):
        parse_attacks(["0:sign_flip", "0:scale"], 2)


def test_label_flip_reaches_the_attacked_node_data_only():
    job = prepare_job(JobSpec(node_count=2, train_samples=2000, test_samples=100,
                              attacks=["1:label_flip:1->4"]))  # fmt: skip
    _, clean = job.node_blocks(0)[0]
    _, poisoned = job.node_blocks(1)[1]
    assert (clean == 1).any() and not (poisoned == 1).any()


def test_sign_flipping_node_degrades_plain_averaging():
    base = {"node_count": 3, "train_samples": 6000, "test_samples": 1000, "epochs": 1}
    honest = simulate(prepare_job(JobSpec(**base)))
    attacked = simulate(prepare_job(JobSpec(**base, attacks=["2:sign_flip:3"])))
    assert honest.error is None and attacked.error is None
    assert attacked.reports[0].accuracy < honest.reports[0].accuracy - 0.2
