"""Write docs/results.md: every built-in codec on MNIST, same MLP, same seed, 4 nodes.

For each run: final test accuracy (mean over workers), epochs, bytes sent per worker (counted
by the framework from the real wire encoding), and wall time; the federated family on IID and
Dirichlet(0.5) data; and the attack/defence matrix. Runs in-process (``--simulate``).

    python bench/results.py [--epochs 2] [--only SUBSTRING] [--out docs/results.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from psgd.job import JobSpec  # noqa: E402
from psgd.train.prepare import prepare_job  # noqa: E402
from psgd.train.rounds import is_round_job, run_rounds  # noqa: E402
from psgd.train.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """One row: a label and the JobSpec options that differ from the common ones."""

    family: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)


def ps(client: str, server: str, **options: Any) -> dict[str, Any]:
    return {"codec": client, "ps_codec": server, **options}


RUNS = [
    Run("baseline", "plain.Plain (P2P averaging)", {"codec": "plain.Plain"}),
    Run("baseline", "dummy.DummyCodec (no communication)", {"codec": "dummy.DummyCodec"}),
    Run(
        "parameter server",
        "ps: sync gradient averaging",
        ps("ps.GradientPSClient", "ps.GradientPSServer"),
    ),
    Run(
        "parameter server",
        "ps: async PS (ASGD)",
        ps("ps.AsyncPSClient", "ps.AsyncPSServer", sync="asgd"),
    ),
    Run(
        "parameter server",
        "ps: DC-ASGD (SGD lr 0.05)",
        ps("ps.AsyncPSClient", "ps.DCASGDServer", sync="asgd", optimizer="sgd", learn_rate=0.05),
    ),
    Run("model averaging", "averaging.ModelAverage (M=10)", {"codec": "averaging.ModelAverage"}),
    Run("model averaging", "averaging.BMUF (M=10)", {"codec": "averaging.BMUF"}),
    Run(
        "model averaging",
        "EASGD sync (tau=10)",
        ps("averaging.EASGDWorker", "averaging.EASGDServer"),
    ),
    Run(
        "model averaging",
        "EASGD async (tau=10)",
        ps("averaging.AsyncEASGDWorker", "averaging.AsyncEASGDServer", sync="asgd"),
    ),
    Run("compression", "top-k 1% + error feedback", {"codec": "compression.TopKPlain"}),
    Run("compression", "random-k 1% + error feedback", {"codec": "compression.RandomKPlain"}),
    Run("compression", "QSGD s=16", {"codec": "compression.QSGDPlain"}),
    Run("compression", "TernGrad", {"codec": "compression.TernGradPlain"}),
    Run("compression", "signSGD majority vote", {"codec": "compression.SignSGD"}),
]
for partition, args in (("iid", {}), ("dirichlet", {"alpha": 0.5})):
    tag = "IID" if partition == "iid" else "Dirichlet(0.5)"
    RUNS += [
        Run("federated", f"FedAvg, {tag}",
            ps("federated.FedAvgClient", "federated.FedAvgServer", partition=partition,
               partition_args=args, params={"fraction": 1.0})),
        Run("federated", f"FedAvg 50% clients, {tag}",
            ps("federated.FedAvgClient", "federated.FedAvgServer", partition=partition,
               partition_args=args, params={"fraction": 0.5})),
        Run("federated", f"FedProx mu=0.01, {tag}",
            ps("federated.FedProxClient", "federated.FedProxServer", partition=partition,
               partition_args=args, params={"fraction": 1.0})),
        Run("federated", f"FedEM, 3 components, {tag}",
            ps("federated.FedAvgClient", "federated.FedAvgServer", partition=partition,
               partition_args=args, components=3, params={"fraction": 1.0})),
    ]  # fmt: skip

DEFENCES = [
    ("no defence (mean)", "ps.GradientPSServer"),
    ("coordinate median", "robust.MedianServer"),
    ("trimmed mean", "robust.TrimmedMeanServer"),
    ("Krum", "robust.KrumServer"),
    ("Multi-Krum", "robust.MultiKrumServer"),
]
ATTACKS = [("no attack", []), ("label flipping", ["4:label_flip"]),
           ("sign flipping x4", ["4:sign_flip:4"])]  # fmt: skip


def run(options: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    spec = JobSpec(**{**common, **options})
    started = time.perf_counter()
    job = prepare_job(spec)
    if is_round_job(job):  # federated codecs run in rounds: one local epoch each, as epochs
        job = prepare_job(JobSpec(**{**spec.to_dict(), "rounds": spec.epochs, "epochs": 1}))
        result = run_rounds(job)
    else:
        result = simulate(job)
    wall = time.perf_counter() - started
    if result.error:
        return {"error": result.error.splitlines()[0][:120], "wall": wall}
    if result.round_rows:
        rows = result.round_rows
        return {
            "accuracy": rows[-1]["accuracy"],
            "bytes": sum(r["bytes_up"] for r in rows) / spec.node_count,
            "ps_bytes": result.ps_bytes_sent,
            "wall": wall,
        }
    reports = result.reports
    return {
        "accuracy": sum(r.accuracy for r in reports) / len(reports),
        "bytes": sum(r.bytes_sent for r in reports) / len(reports),
        "ps_bytes": result.ps_bytes_sent,
        "wall": wall,
    }


def fmt_bytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} MB"


def table_row(label: str, outcome: dict[str, Any], epochs: int) -> str:
    if "error" in outcome:
        error, wall = outcome["error"], outcome["wall"]
        return f"| {label} | failed: {error} | {epochs} | - | - | {wall:.0f} s |"
    return (
        f"| {label} | {outcome['accuracy']:.4f} | {epochs} | {fmt_bytes(outcome['bytes'])} | "
        f"{fmt_bytes(outcome['ps_bytes'])} | {outcome['wall']:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", default="", help="run only rows whose label contains this")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default docs/results.md; with --only, print without writing",
    )
    args = parser.parse_args()
    if args.out is None and not args.only:
        args.out = ROOT / "docs" / "results.md"
    common = {"node_count": 4, "epochs": args.epochs, "seed": 0}
    lines = [
        "# Results: built-in codecs on MNIST",
        "",
        f"Produced by `python bench/results.py --epochs {args.epochs}`: MLP 784-128-128-10, "
        "Adam lr 0.001 unless stated, batch 64 per node, seed 0, 4 worker nodes, in-process "
        "(`--simulate`; the same codecs run unchanged on daemons). Accuracy is the final test "
        "accuracy averaged over workers; bytes are per worker (and for the server), counted by "
        "the framework from the real wire encoding. Wall time includes evaluation and was "
        "measured on a 2-core machine. FedAvg with 20 clients to 97% (the issue's federated "
        "bar, with McMahan et al.'s figures beside ours): [federated.md](federated.md), made by "
        "`python bench/bench_federated.py`.",
        "",
    ]
    family = None
    for row in RUNS:
        if args.only and args.only not in row.label:
            continue
        if row.family != family:
            family = row.family
            lines += ["", f"## {family}", "",
                      "| codec | accuracy | epochs | bytes per worker | bytes from server | wall |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
        outcome = run(row.options, common)
        lines.append(table_row(row.label, outcome, args.epochs))
        print(lines[-1], flush=True)
    if not args.only or "attack" in args.only:
        lines += ["", "## Attack / defence matrix", "",
                  "5 workers, node 4 attacks, parameter server with the given aggregation.", "",
                  "| aggregation | " + " | ".join(a for a, _ in ATTACKS) + " |",
                  "|---|" + "---|" * len(ATTACKS)]  # fmt: skip
        for label, server in DEFENCES:
            cells = []
            for _, attack in ATTACKS:
                options = ps("ps.GradientPSClient", server, node_count=5, attacks=attack)
                outcome = run(options, common)
                cells.append(outcome.get("accuracy") and f"{outcome['accuracy']:.4f}" or "failed")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
