"""Write docs/results.md: every built-in codec on MNIST, same MLP, same seed, 4 nodes.

Each run is a real run folder (``--runs DIR`` keeps them), and each family's table and figure
are ``psgd compare``'s (``psgd.results.compare``): final test accuracy (mean over workers),
epochs, MB sent per worker and from the server (counted by the framework from the real wire
encoding), wall time; the federated family on IID and Dirichlet(0.5) data; and the
attack/defence matrix. Runs in-process (``--simulate``).

    python bench/results.py [--epochs 2] [--only SUBSTRING] [--out docs/results.md] [--runs DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from psgd.cluster.runner import Target, run_job  # noqa: E402
from psgd.errors import PsgdError  # noqa: E402
from psgd.job import JobSpec  # noqa: E402
from psgd.results.compare import compare_rows, markdown_table  # noqa: E402
from psgd.results.plot import plot_comparison  # noqa: E402
from psgd.results.runs import RunRecords, load_run  # noqa: E402
from psgd.train.prepare import prepare_job  # noqa: E402
from psgd.train.rounds import is_round_job  # noqa: E402

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


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def run(label: str, options: dict[str, Any], common: dict[str, Any], runs: Path) -> RunRecords:
    """Run one job in-process into ``runs/<label>`` and read its folder back."""
    folder = runs / slug(label)
    if folder.exists():
        shutil.rmtree(folder)
    spec = JobSpec(**{**common, **options})
    if is_round_job(prepare_job(spec)):  # federated codecs run in rounds: one local epoch each
        spec = JobSpec(**{**spec.to_dict(), "rounds": spec.epochs, "epochs": 1})
    try:
        run_job(spec, folder, quiet=True, target=Target(simulate=True))
    except PsgdError as exc:  # a failed run still leaves its summary
        print(f"{label}: failed: {exc}", flush=True)
    return load_run(folder)


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
    parser.add_argument("--runs", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--train-samples", type=int, default=None, help="quick runs: fewer")
    parser.add_argument("--test-samples", type=int, default=None)
    args = parser.parse_args()
    if args.out is None and not args.only:
        args.out = ROOT / "docs" / "results.md"
    runs_dir = args.runs or Path(tempfile.mkdtemp(prefix="psgd-results-"))
    common = {"node_count": 4, "epochs": args.epochs, "seed": 0,
              "train_samples": args.train_samples, "test_samples": args.test_samples}  # fmt: skip
    lines = [
        "# Results: built-in codecs on MNIST",
        "",
        f"Produced by `python bench/results.py --epochs {args.epochs}`: MLP 784-128-128-10, "
        "Adam lr 0.001 unless stated, batch 64 per node, seed 0, 4 worker nodes, in-process "
        "(`--simulate`; the same codecs run unchanged on daemons). Tables and figures are "
        "`psgd compare`'s: accuracy is the final test accuracy averaged over workers; MB "
        "(10^6 bytes) are per worker (and from the server), counted by the framework from the "
        "real wire encoding; wall time includes evaluation and was measured on a 2-core "
        "machine. The federated rows run in rounds on the 4 nodes (as many rounds of one local "
        "epoch as --epochs says, 2 here); FedAvg at McMahan et al.'s scale, K=100 "
        "clients to 97% with the paper's figures beside ours, is in "
        "[federated.md](federated.md), made by `python bench/bench_federated.py`.",
        "",
    ]
    families: dict[str, list[tuple[str, RunRecords]]] = {}
    for row in RUNS:
        if args.only and args.only not in row.label:
            continue
        outcome = run(row.label, row.options, common, runs_dir)
        families.setdefault(row.family, []).append((row.label, outcome))
        print(f"{row.label}: {outcome.accuracy:.4f}", flush=True)
    for family, done in families.items():
        labels, runs = [label for label, _ in done], [outcome for _, outcome in done]
        lines += ["", f"## {family}", "", markdown_table(compare_rows(runs, labels)), ""]
        if args.out is not None:
            figure = args.out.parent / f"results-{slug(family)}.png"
            plot_comparison(figure, runs, labels)
            lines += [f"![{family}: accuracy per epoch, per MB sent, per second]({figure.name})"]
    if not args.only or "attack" in args.only:
        lines += ["", "## Attack / defence matrix", "",
                  "5 workers, node 4 attacks, parameter server with the given aggregation.", "",
                  "| aggregation | " + " | ".join(a for a, _ in ATTACKS) + " |",
                  "|---|" + "---|" * len(ATTACKS)]  # fmt: skip
        for label, server in DEFENCES:
            cells = []
            for attack_label, attack in ATTACKS:
                options = ps("ps.GradientPSClient", server, node_count=5, attacks=attack)
                outcome = run(f"{label} {attack_label}", options, common, runs_dir)
                cells.append(f"{outcome.accuracy:.4f}" if outcome.completed else "failed")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}; run folders in {runs_dir}")
    else:
        print(text)


if __name__ == "__main__":
    main()
