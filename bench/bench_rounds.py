"""Federated rounds at the field's scale: psgd's round engine against a bare numpy round.

Workload (McMahan et al. 2017's MNIST 2NN): MLP 784-200-200-10 ReLU float32, B=10, E=1,
plain SGD lr 0.1, IID clients, one evaluation of the global model on the 10k test set per
round. For each setting it measures, in the same run:

- **bare**: a hand-written numpy round on one core (no psgd): each picked client copies the
  global model, trains one local epoch, the server takes the sample-weighted average, then one
  evaluation. Median seconds per round.
- **bare, 2 cores**: the same round with two forked processes training half the picked
  clients each, the parent averaging and evaluating: the floor this machine allows.
- **psgd**: ``psgd-submit --simulate --codec federated.FedAvgClient --ps-codec
  federated.FedAvgServer`` in a subprocess (its executors use every core); median seconds per
  round from ``rounds.csv`` (the first round, which includes start-up, is left out), and the
  peak RSS of the job's processes.

Prints one row per setting with psgd/bare. Bars (issue 9): K=100 C=0.1 <= 0.15 s and <= 1.5x
bare; K=100 C=1.0 <= 0.75 s; K=1000 C=0.01 <= 0.1 s and <= 1 GB; K=10000 runs in <= 2 GB.

``--model cnn-mnist`` runs McMahan et al.'s MNIST CNN instead (``--model cnn-mnist`` in psgd,
``bare_cnn`` for the bare round; lr 0.05); a round then costs tens of seconds on two cores, so
use few rounds and settings, e.g. ``--model cnn-mnist --rounds 3 --bare-rounds 1
--settings 100:0.1``.

    python bench/bench_rounds.py [--rounds 12] [--settings 100:0.1,100:1.0,1000:0.01,10000:0.001]
                                 [--model 2nn|cnn-mnist]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import bare_cnn  # noqa: E402
import numpy as np  # noqa: E402
from bare_mlp import gradients, init_params  # noqa: E402

from psgd.data import load_mnist  # noqa: E402

SIZES = (784, 200, 200, 10)

#: Runs the psgd command line, then prints the peak RSS (KiB) of it and its executors.
_MEASURED_RUN = (
    "import resource, sys\n"
    "from psgd.cli import main\n"
    "main(sys.argv[1:], standalone_mode=False)\n"
    "usage = [resource.getrusage(w).ru_maxrss for w in "
    "(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]\n"
    "print(max(usage))\n"
)
BATCH = 10


def _evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    w1, b1, w2, b2, w3, b3 = params
    correct = 0
    for start in range(0, len(x), 1000):
        h = np.maximum(x[start : start + 1000] @ w1 + b1, 0)
        h = np.maximum(h @ w2 + b2, 0)
        correct += int(np.count_nonzero((h @ w3 + b3).argmax(1) == y[start : start + 1000]))
    return correct / len(x)


def _cnn_evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    correct = 0
    for start in range(0, len(x), 100):
        logits = bare_cnn.forward(params, x[start : start + 100])
        correct += int(np.count_nonzero(logits.argmax(1) == y[start : start + 100]))
    return correct / len(x)


#: Per model: psgd's --model, the bare initialiser, gradients and evaluation, the lr.
MODELS = {
    "2nn": (",".join(map(str, SIZES)), lambda rng: init_params(rng, SIZES), gradients,
            _evaluate, 0.1),
    "cnn-mnist": ("cnn-mnist", bare_cnn.init_params, bare_cnn.gradients, _cnn_evaluate, 0.05),
}  # fmt: skip


def bare_rounds(
    clients: int, fraction: float, rounds: int, model_name: str = "2nn"
) -> tuple[float, float]:
    """Median seconds per bare numpy round, and the final accuracy."""
    _, init, grad_of, evaluate, lr = MODELS[model_name]
    data = load_mnist()
    rng = np.random.default_rng(0)
    parts = np.array_split(rng.permutation(len(data.y_train)), clients)
    picked_per_round = max(1, round(fraction * clients))
    model = init(rng)
    times, accuracy = [], 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        picked = rng.choice(clients, picked_per_round, replace=False)
        total = [np.zeros_like(p, dtype=np.float64) for p in model]
        weight = 0
        for client in picked:
            rows = parts[client][rng.permutation(len(parts[client]))]
            local = [p.copy() for p in model]
            for step in range(0, len(rows), BATCH):
                batch = rows[step : step + BATCH]
                grads = grad_of(local, data.x_train[batch], data.y_train[batch])
                for p, g in zip(local, grads, strict=True):
                    p -= lr * g
            for t, p in zip(total, local, strict=True):
                t += len(rows) * p
            weight += len(rows)
        model = [(t / weight).astype(np.float32) for t in total]
        accuracy = evaluate(model, data.x_test, data.y_test)
        times.append(time.perf_counter() - start)
    return statistics.median(times), accuracy


_DATA: dict[str, Any] = {}


def _train_clients(task: tuple[str, list[np.ndarray], list[np.ndarray]]) -> tuple[list[Any], int]:
    """A forked worker of the two-core bare round: its clients' weighted sum of models."""
    model_name, model, parts = task
    _, _, grad_of, _, lr = MODELS[model_name]
    x, y = _DATA["x"], _DATA["y"]
    total = [np.zeros_like(p, dtype=np.float64) for p in model]
    weight = 0
    for rows in parts:
        local = [p.copy() for p in model]
        for step in range(0, len(rows), BATCH):
            batch = rows[step : step + BATCH]
            grads = grad_of(local, x[batch], y[batch])
            for p, g in zip(local, grads, strict=True):
                p -= lr * g
        for t, p in zip(total, local, strict=True):
            t += len(rows) * p
        weight += len(rows)
    return total, weight


def bare_rounds_two_cores(
    clients: int, fraction: float, rounds: int, model_name: str = "2nn"
) -> float:
    """Median seconds per bare numpy round using both cores: the hardware's floor.

    Two forked processes train half the picked clients each (no framework at all); the parent
    averages and evaluates. Nothing can run the same round much faster on this machine.
    """
    _, init, _, evaluate, _ = MODELS[model_name]
    data = load_mnist()
    _DATA.update(x=data.x_train, y=data.y_train)
    rng = np.random.default_rng(0)
    parts = np.array_split(rng.permutation(len(data.y_train)), clients)
    picked_per_round = max(1, round(fraction * clients))
    model = init(rng)
    times = []
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in range(rounds):
            start = time.perf_counter()
            picked = rng.choice(clients, picked_per_round, replace=False)
            shuffled = [parts[c][rng.permutation(len(parts[c]))] for c in picked]
            halves = [(model_name, model, shuffled[0::2]), (model_name, model, shuffled[1::2])]
            answers = pool.map(_train_clients, [h for h in halves if h[2]])
            weight = sum(w for _, w in answers)
            model = [
                (sum(total[i] for total, _ in answers) / weight).astype(np.float32)
                for i in range(len(model))
            ]
            evaluate(model, data.x_test, data.y_test)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def psgd_rounds(
    clients: int,
    fraction: float,
    rounds: int,
    model_name: str = "2nn",
    where: tuple[str, ...] = ("--simulate",),
) -> tuple[float, float, float]:
    """Median seconds per psgd round (first left out), final accuracy, peak RSS in MB.

    ``where``: ``("--simulate",)``, or ``("--local", "N")`` for N loopback daemons hosting the
    clients (peak RSS is then the largest single process's).
    """
    model, lr = MODELS[model_name][0], MODELS[model_name][4]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [
            sys.executable, "-c", _MEASURED_RUN, "submit", *where, "--quiet",
            "--codec", "federated.FedAvgClient", "--ps-codec", "federated.FedAvgServer",
            "--node_count", str(clients), "--param", f"fraction={fraction}",
            "--rounds", str(rounds), "--model", model,
            "--batch_size", str(BATCH), "--optimizer", "sgd", "--learn_rate", str(lr),
            "--out", str(out),
        ]  # fmt: skip
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        peak_kb = int(done.stdout.split()[-1])
        with open(out / "rounds.csv") as f:
            walls = [float(row["wall_s"]) for row in csv.DictReader(f)]
        summary = json.loads((out / "summary.json").read_text())
    per_round = [b - a for a, b in zip(walls, walls[1:], strict=False)]
    peak = peak_kb / 1024
    return statistics.median(per_round), float(summary["accuracy"]), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--settings", default="100:0.1,100:1.0,1000:0.01,10000:0.001")
    parser.add_argument("--bare-rounds", type=int, default=5)
    parser.add_argument("--model", choices=sorted(MODELS), default="2nn")
    parser.add_argument(
        "--local", type=int, default=0, metavar="N",
        help="also run each setting on N loopback daemons hosting the clients (a column more)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.rounds < 2 or args.bare_rounds < 1:
        parser.error(
            "--rounds must be at least 2 (the first round, which includes start-up, is left "
            "out of psgd's time) and --bare-rounds at least 1"
        )
    if args.local:
        print(f"psgd on {args.local} daemons: `--local {args.local}`, same job")
    daemons = ["daemons s/round", "daemons/in-process"] if args.local else []
    head = ["K", "C", "bare s/round", "bare 2 cores", "psgd s/round", "psgd/bare",
            "psgd/bare 2 cores", "psgd peak RSS", "accuracy"]  # fmt: skip
    print("| " + " | ".join(head + daemons) + " |")
    print("|" + "---|" * (len(head) + len(daemons)))
    for item in args.settings.split(","):
        k, c = item.split(":")
        clients, fraction = int(k), float(c)
        psgd_s, accuracy, peak = psgd_rounds(clients, fraction, args.rounds, args.model)
        bare_s, _ = bare_rounds(clients, fraction, args.bare_rounds, args.model)
        floor_s = bare_rounds_two_cores(clients, fraction, args.bare_rounds, args.model)
        extra = ""
        if args.local:
            where = ("--local", str(args.local))
            net_s, net_accuracy, _ = psgd_rounds(clients, fraction, args.rounds, args.model, where)
            assert net_accuracy == accuracy, "the same job on daemons must give the same model"
            extra = f" {net_s:.3f} | {net_s / psgd_s:.2f} |"
        print(
            f"| {clients} | {fraction} | {bare_s:.3f} | {floor_s:.3f} | {psgd_s:.3f} | "
            f"{psgd_s / bare_s:.2f} | {psgd_s / floor_s:.2f} | {peak:.0f} MB | {accuracy:.4f} |"
            f"{extra}",
            flush=True,
        )


if __name__ == "__main__":
    main()
