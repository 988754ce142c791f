"""psgd's training loop (one in-process node, DummyCodec) against a bare numpy loop.

Both train the same MLP (784-128-128-10, ReLU, softmax cross-entropy, Adam, float32, batch 64)
on the same MNIST samples, alternating runs in this process; the script prints the median
samples/s of each and their ratio. The issue's bar: ratio >= 0.9.

    python bench/bench_trainer.py [--steps 400] [--repeats 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from bare_mlp import Adam, gradients, init_params  # noqa: E402

from psgd.data import load_mnist  # noqa: E402
from psgd.job import JobSpec  # noqa: E402
from psgd.settings import GlobalSettings  # noqa: E402
from psgd.train.inprocess import InProcessNetwork  # noqa: E402
from psgd.train.prepare import prepare_job  # noqa: E402
from psgd.train.trainer import Trainer  # noqa: E402

BATCH = 64


def bare_numpy_loop(x: np.ndarray, y: np.ndarray, steps: int, seed: int = 0) -> float:
    """The hand-written MLP + Adam training loop (``bare_mlp``); returns samples/s."""
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    adam = Adam(params)
    order = rng.permutation(len(x))
    start = time.perf_counter()
    for step in range(steps):
        index = order[(step * BATCH) % (len(x) - BATCH) :][:BATCH]
        for p, delta in zip(params, adam.steps(gradients(params, x[index], y[index])), strict=True):
            p -= delta
    return steps * BATCH / (time.perf_counter() - start)


def psgd_loop(steps: int, train_samples: int) -> float:
    """One node of an in-process psgd job with DummyCodec; returns its training samples/s."""
    spec = JobSpec(codec="dummy.DummyCodec", node_count=1, epochs=1, batch_size=BATCH,
                   train_samples=train_samples, test_samples=100)  # fmt: skip
    job = prepare_job(spec)
    job.trainer_config.steps_per_epoch = steps
    GlobalSettings.set_default(job.settings)
    network = InProcessNetwork([0])
    trainer = Trainer(0, job.build_model(), job.node_blocks(0),
                      (job.dataset.x_test, job.dataset.y_test), job.codec_classes,
                      network.channel(0), job.trainer_config)  # fmt: skip
    report = trainer.train()
    trainer.close()
    return report.samples_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = load_mnist()
    n = 20000
    x, y = np.ascontiguousarray(data.x_train[:n]), data.y_train[:n]
    bare, ours = [], []
    psgd_loop(50, n)  # warm up both paths
    bare_numpy_loop(x, y, 50)
    for _ in range(args.repeats):
        bare.append(bare_numpy_loop(x, y, args.steps))
        ours.append(psgd_loop(args.steps, n))
    bare_median, ours_median = statistics.median(bare), statistics.median(ours)
    print(f"bare numpy loop : {bare_median:10.0f} samples/s  (runs: {[round(b) for b in bare]})")
    print(f"psgd DummyCodec : {ours_median:10.0f} samples/s  (runs: {[round(o) for o in ours]})")
    print(f"ratio psgd/bare : {ours_median / bare_median:10.3f}  (bar: >= 0.9)")


if __name__ == "__main__":
    main()
