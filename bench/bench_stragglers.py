"""FedAvg with slow devices: time to a target accuracy with and without a round deadline.

McMahan et al.'s setting (K=100 clients of 600 MNIST samples, C=0.1, 2NN, E=1, B=10, SGD lr
0.1, IID), with 20% of the clients five times slower (``--device-speed stragglers:0.2,0.2``),
run in-process on the virtual clock (``psgd.train.round_clock``): each round costs what the
slowest picked client's compute would take. The first run waits for every picked client; the
second closes each round at a deadline of half the first run's median round time
(``--round-deadline``), so rounds that picked a straggler go on without it.

Prints, for each run: rounds to the target, virtual seconds to the target (the emulated
devices' time: what the deployment would take) and real seconds (this machine), and the ratio
of virtual times deadline / no deadline.

    python bench/bench_stragglers.py [--target 0.97] [--rounds 150] [--clients 100]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from psgd.job import JobSpec  # noqa: E402
from psgd.train.prepare import prepare_job  # noqa: E402
from psgd.train.rounds import run_rounds  # noqa: E402

STRAGGLERS = "stragglers:0.2,0.2"


def run(clients: int, rounds: int, target: float, deadline: float | None) -> dict[str, Any]:
    """One FedAvg job to ``target``; its rounds, virtual and real times."""
    spec = JobSpec(
        codec="federated.FedAvgClient", ps_codec="federated.FedAvgServer", node_count=clients,
        rounds=rounds, params={"fraction": 0.1}, model=[784, 200, 200, 10], batch_size=10,
        optimizer="sgd", learn_rate=0.1, target_accuracy=target, device_speed=[STRAGGLERS],
        round_deadline=deadline,
    )  # fmt: skip
    started = time.perf_counter()
    result = run_rounds(prepare_job(spec))
    assert result.error is None, result.error
    rows = result.round_rows
    virtual = [row["virtual_s"] for row in rows]
    per_round = [b - a for a, b in zip([0.0, *virtual], virtual, strict=False)]
    return {
        "reached": result.figures["target_round"],
        "rounds": len(rows),
        "virtual_s": virtual[-1],
        "real_s": time.perf_counter() - started,
        "median_round_s": statistics.median(per_round),
        "clients": statistics.mean(row["clients"] for row in rows),
        "accuracy": rows[-1].get("accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    waiting = run(args.clients, args.rounds, args.target, None)
    deadline = round(waiting["median_round_s"] / 2, 4)
    cut = run(args.clients, args.rounds, args.target, deadline)
    print(f"K={args.clients}, C=0.1, {STRAGGLERS}, target {args.target}")
    print("| round deadline | rounds to target | virtual s to target | virtual s/round | "
          "clients/round | real s | accuracy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, row in (("none", waiting), (f"{deadline} s", cut)):
        reached = row["reached"] if row["reached"] is not None else f">{row['rounds']}"
        print(
            f"| {name} | {reached} | {row['virtual_s']:.1f} | {row['median_round_s']:.3f} | "
            f"{row['clients']:.1f} | {row['real_s']:.0f} | {row['accuracy']:.4f} |"
        )
    print(f"virtual time to target, deadline / none: {cut['virtual_s'] / waiting['virtual_s']:.2f}")


if __name__ == "__main__":
    main()
