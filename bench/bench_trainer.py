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

from psgd.data import load_mnist  # noqa: E402
from psgd.inprocess import InProcessNetwork  # noqa: E402
from psgd.job import JobSpec  # noqa: E402
from psgd.prepare import prepare_job  # noqa: E402
from psgd.settings import GlobalSettings  # noqa: E402
from psgd.trainer import Trainer  # noqa: E402

BATCH = 64
SIZES = (784, 128, 128, 10)


def bare_numpy_loop(x: np.ndarray, y: np.ndarray, steps: int, seed: int = 0) -> float:
    """A hand-written MLP + Adam training loop; returns samples/s."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:], strict=True):
        limit = np.sqrt(6.0 / fan_in)
        params.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps = 0.001, 0.9, 0.999, 1e-8
    order = rng.permutation(len(x))
    start = time.perf_counter()
    for step in range(steps):
        index = order[(step * BATCH) % (len(x) - BATCH) :][:BATCH]
        xb, yb = x[index], y[index]
        w1, b1_, w2, b2_, w3, b3 = params
        h1 = np.maximum(xb @ w1 + b1_, 0)
        h2 = np.maximum(h1 @ w2 + b2_, 0)
        logits = h2 @ w3 + b3
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs = exp / exp.sum(axis=1, keepdims=True)
        probs[np.arange(BATCH), yb] -= 1
        d3 = probs / BATCH
        g_w3, g_b3 = h2.T @ d3, d3.sum(axis=0)
        d2 = (d3 @ w3.T) * (h2 > 0)
        g_w2, g_b2 = h1.T @ d2, d2.sum(axis=0)
        d1 = (d2 @ w2.T) * (h1 > 0)
        g_w1, g_b1 = xb.T @ d1, d1.sum(axis=0)
        t = step + 1
        correction = np.float32(lr * np.sqrt(1 - b2**t) / (1 - b1**t))
        for p, g, mi, vi in zip(params, (g_w1, g_b1, g_w2, g_b2, g_w3, g_b3), m, v, strict=True):
            mi *= b1
            mi += (1 - b1) * g
            vi *= b2
            vi += (1 - b2) * g * g
            p -= correction * mi / (np.sqrt(vi) + eps)
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
