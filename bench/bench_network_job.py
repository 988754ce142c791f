"""A 2-worker Plain job over the network against a hand-written two-process numpy+pyzmq loop.

Both sides train the MLP 784-128-128-10 (ReLU, softmax cross-entropy, Adam, float32, batch 64)
on two halves of the first ``2 * 64 * steps`` MNIST training samples, ``--steps`` batches per
worker, and exchange after every batch, with one BLAS thread per process.

- "baseline": two spawned processes, each a bare numpy training loop on its half. After each
  batch a process sends its six Adam steps to the other over a raw pyzmq PAIR socket on
  tcp://127.0.0.1 (one multipart message, one frame per array, ``copy=False``), receives the
  other's (``copy=False``, ``np.frombuffer``), and subtracts the mean of both. The processes
  stay up across repeats; each repeat times ``--steps`` batches of a fresh model after one
  untimed warm-up run.
- "psgd": the real job through psgd's public path, ``psgd.cli.run_job(JobSpec(codec=
  "plain.Plain", node_count=2, epochs=1, batch_size=64, train_samples=2 * 64 * steps),
  local=2)``: two worker daemons started by ``LocalCluster``, the job shipped by the
  submitter, packages over ``PeerChannel``. Its figure is ``summary["samples_per_s"]``: the
  sum over workers of training samples over training time (data loading and evaluation
  excluded, first batch included).

Both figures are aggregate samples/s (the sum over the two workers of each one's rate).
Repeats interleave the two sides, alternating which goes first; the script prints the
medians, their ratio psgd/baseline, and the median of the per-repeat ratios (each pair ran
back to back, so it shares the machine's load). The bar: both ratios >= 0.8. A run whose
baseline figures spread more than 1.3x is flagged: other processes took CPU during it.

    python bench/bench_network_job.py [--repeats 7] [--steps 450]
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads; spawned children inherit it

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import zmq  # noqa: E402
from bare_mlp import Adam, gradients, init_params  # noqa: E402

from psgd.cli.submit import run_job  # noqa: E402
from psgd.data import load_mnist  # noqa: E402
from psgd.job import JobSpec  # noqa: E402

BATCH = 64
MNIST_TRAIN = 60_000
BAR = 0.8
NOISY = 1.3  # baseline max/min beyond which a run is flagged as disturbed


# --------------------------------------------------------------------------- baseline


class BareWorker:
    """One process of the baseline: a bare numpy MLP + Adam loop and a PAIR socket."""

    def __init__(self, x: np.ndarray, y: np.ndarray, sock: zmq.Socket, seed: int) -> None:
        self.x, self.y, self.sock = x, y, sock
        self.rng = np.random.default_rng(seed)

    def train(self, steps: int) -> float:
        """``steps`` batches of a fresh model, exchanging after each; returns samples/s."""
        params = init_params(np.random.default_rng(0))  # the same model on both workers
        adam = Adam(params)
        shapes = [p.shape for p in params]
        x, y, sock = self.x, self.y, self.sock
        order = self.rng.permutation(len(x))
        start = time.perf_counter()
        for step in range(steps):
            index = order[(step * BATCH) % (len(x) - BATCH) :][:BATCH]
            deltas = adam.steps(gradients(params, x[index], y[index]))
            sock.send_multipart(deltas, copy=False)  # new arrays: never changed while in flight
            frames = sock.recv_multipart(copy=False)
            for p, mine, frame, shape in zip(params, deltas, frames, shapes, strict=True):
                theirs = np.frombuffer(frame, np.float32).reshape(shape)
                p -= (mine + theirs) * np.float32(0.5)
        return steps * BATCH / (time.perf_counter() - start)


def bare_process(rank: int, conn: Any, samples: int) -> None:
    """Child: worker ``rank`` of the baseline; trains ``steps`` for each number it receives."""
    data = load_mnist()
    half = samples // 2
    x = np.ascontiguousarray(data.x_train[rank * half : (rank + 1) * half])
    y = np.ascontiguousarray(data.y_train[rank * half : (rank + 1) * half])
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    if rank == 0:
        conn.send(sock.bind_to_random_port("tcp://127.0.0.1"))
    else:
        sock.connect(conn.recv())
    worker = BareWorker(x, y, sock, seed=rank)
    while (steps := conn.recv()) is not None:
        conn.send(worker.train(steps))
    context.destroy(linger=0)


class Baseline:
    """The two baseline processes, kept up across repeats."""

    def __init__(self, samples: int) -> None:
        spawn = mp.get_context("spawn")
        self.conns, self.processes = [], []
        for rank in range(2):
            conn, child = spawn.Pipe()
            process = spawn.Process(target=bare_process, args=(rank, child, samples), daemon=True)
            process.start()
            self.conns.append(conn)
            self.processes.append(process)
        self.conns[1].send(f"tcp://127.0.0.1:{self.conns[0].recv()}")

    def run(self, steps: int) -> float:
        """Aggregate samples/s of one run of ``steps`` batches on both workers."""
        for conn in self.conns:
            conn.send(steps)
        return sum(conn.recv() for conn in self.conns)

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for process in self.processes:
            process.join(10)


# --------------------------------------------------------------------------- psgd


def psgd_run(steps: int, test_samples: int, out: Path) -> dict[str, Any]:
    """Run the 2-worker Plain job on two local daemons; returns its summary."""
    spec = JobSpec(codec="plain.Plain", node_count=2, epochs=1, batch_size=BATCH,
                   train_samples=2 * BATCH * steps, test_samples=test_samples)  # fmt: skip
    summary = run_job(spec, out / spec.job_id, quiet=True, local=2)
    batches = [node["batches"] for node in summary["nodes"]]
    if batches != [steps, steps]:
        raise RuntimeError(f"psgd trained {batches} batches per node, expected {steps} each")
    return summary


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    most = MNIST_TRAIN // (2 * BATCH)
    parser.add_argument("--steps", type=int, default=450, help=f"batches per worker (<= {most})")
    parser.add_argument("--test-samples", type=int, default=1000, help="psgd's evaluation set")
    args = parser.parse_args()
    if not 1 <= args.steps <= most:
        parser.error(f"--steps must be in 1..{most} (two halves of MNIST's 60,000 samples)")

    baseline = Baseline(2 * BATCH * args.steps)
    bare: list[float] = []
    ours: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="psgd-bench-") as folder:
        out = Path(folder)
        try:
            baseline.run(args.steps)  # warm-up: connect, page in data and code
            psgd_run(min(args.steps, 50), 100, out)
            for repeat in range(args.repeats):
                sides = [
                    lambda: bare.append(baseline.run(args.steps)),
                    lambda: ours.append(psgd_run(args.steps, args.test_samples, out)),
                ]
                for side in sides if repeat % 2 == 0 else sides[::-1]:
                    side()
        finally:
            baseline.close()
    report(bare, ours, args.steps)


def report(bare: list[float], ours: list[dict[str, Any]], steps: int) -> None:
    rates = [summary["samples_per_s"] for summary in ours]
    bare_median, ours_median = statistics.median(bare), statistics.median(rates)
    paired = [o / b for o, b in zip(rates, bare, strict=True)]
    ratio, paired_median = ours_median / bare_median, statistics.median(paired)
    per_node = [[round(node["samples_per_s"]) for node in s["nodes"]] for s in ours]
    print(
        f"2 workers x {steps} batches of {BATCH}, float32, exchange every batch, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print(f"baseline numpy+pyzmq  {bare_median:9,.0f} samples/s  runs {[round(b) for b in bare]}")
    print(f"psgd Plain, 2 daemons {ours_median:9,.0f} samples/s  runs {[round(r) for r in rates]}")
    print(f"  psgd per node {per_node}")
    print(f"  psgd job wall s {[s['wall_s'] for s in ours]}")
    print(f"ratio psgd/baseline   {ratio:9.3f}  (of the medians)")
    print(f"paired ratio median   {paired_median:9.3f}  (per repeat: "
          f"{', '.join(f'{p:.2f}' for p in paired)})")  # fmt: skip
    spread = max(bare) / min(bare)
    if spread > NOISY:
        print(f"warning: baseline runs differ {spread:.1f}x: other processes took CPU during "
              "this run; its ratios are unreliable, run again on a quieter machine")  # fmt: skip
    worst = min(ratio, paired_median)
    verdict = "meets" if worst >= BAR else "MISSES"
    print(f"{verdict} the bar (>= {BAR}, both ratios)")


if __name__ == "__main__":
    main()
