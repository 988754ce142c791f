"""What a codec buys in wall time on slow links: 3 namespace hosts on shaped links, real daemons.

``bench/netlab.py`` makes three network namespaces whose links are shaped with ``tc tbf`` to
``--rate`` (default 100 Mbit/s, both ways), a ``psgd-worker`` daemon runs in each, and the
submitter (this process, root namespace) runs the same MNIST job with each codec: MLP
784-128-128-10, Adam, batch 64, ``--epochs`` (default 2) over the full training set split
three ways, exchange after every batch (SSGD). Codecs:

- ``plain.Plain`` (the baseline: every node sends its dense step to the two others),
- ``compression.TopKPlain`` (top-k 1% with error feedback),
- ``compression.QSGDPlain`` (QSGD, 16 levels, reported beside),
- Plain and top-k again with ``--sync double_buffer`` (double buffering, reported beside).

Repeats interleave the codecs. For each the script prints the medians of the job's wall time
(``summary.json``'s ``wall_s``: handshake, shipping, training, evaluation) and of the slowest
node's training time, the accuracy, the MB each node sent, and the ratio of wall times to
Plain's (of the medians, and the median of per-repeat ratios). The bar: top-k / Plain <= 0.2
with accuracy within 1 point of Plain's. With ``--virtual`` it also runs each job with
``--simulate --link RATE --device-speed S --shared-cores C`` (``--virtual-speed``, default 1;
``--virtual-cores``, default this machine's cores, which the namespace hosts share; 0: a core
per host) and prints the virtual clock's times beside the namespace ones, with bar 2 (within
20%).

The machine's load average is printed before and after: other processes on a shared machine
slow the daemons down (each needs a core), so compare ratios and rerun when figures spread.
Each job's CPU seconds per daemon (``/proc/PID/stat``: user + system) are printed too: when
they are far below the job's training time on unloaded links, the daemons waited for a core.

    sudo python bench/bench_shaped_links.py [--repeats 3] [--rate 100mbit] [--epochs 2] \\
        [--hosts 3] [--codecs plain,topk1%+ef,...] [--train-samples N] [--test-samples N] \\
        [--virtual] [--virtual-speed 1] [--virtual-cores C] [--json results.json] [--keep DIR]

The job (its data blocks and the whole test set, images as grey levels) is shipped to each
daemon over its shaped link: at 100 Mbit/s that is ~2 s of the wall time. ``--keep DIR`` keeps
the run folders and the daemons' logs.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads; children inherit it

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from netlab import TCP_PAYLOAD_SHARE, Lab, Shape, time_transfer  # noqa: E402

from psgd.cluster.runner import Target, run_job  # noqa: E402
from psgd.job import JobSpec  # noqa: E402
from psgd.nn.blas import BLAS_ENV_VARS  # noqa: E402

PORT = 15387
HOSTS = 3
BAR = 0.2
CLOCK_BAR = 0.2
ACCURACY_POINTS = 0.01
REPO = Path(__file__).resolve().parents[1]
#: name -> (codec, params, other JobSpec fields).
CODECS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "plain": ("plain.Plain", {}, {}),
    "topk1%+ef": ("compression.TopKPlain", {"ratio": 0.01}, {}),
    "qsgd16": ("compression.QSGDPlain", {"levels": 16}, {}),
    "plain+db": ("plain.Plain", {}, {"sync": "double_buffer"}),
    "topk+db": ("compression.TopKPlain", {"ratio": 0.01}, {"sync": "double_buffer"}),
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in BLAS_ENV_VARS:
        env[name] = "1"
    return env


def _spec(name: str, args: argparse.Namespace) -> JobSpec:
    codec, params, fields = CODECS[name]
    return JobSpec(
        codec=codec, node_count=args.hosts, epochs=args.epochs, params=dict(params),
        train_samples=args.train_samples, test_samples=args.test_samples, seed=0, **fields,
    )  # fmt: skip


def _figures(summary: dict[str, Any]) -> dict[str, float]:
    nodes = summary["nodes"]
    figures = {
        "wall_s": float(summary["wall_s"]),
        "train_s": max(float(n["train_s"]) for n in nodes),
        "accuracy": float(summary["accuracy"]),
        "mb_per_node": statistics.mean(n["bytes_sent"] for n in nodes) / 1e6,
    }
    if "virtual_wall_s" in summary:
        figures["virtual_wall_s"] = float(summary["virtual_wall_s"])
        figures["virtual_train_s"] = float(summary["virtual_train_s"])
    return figures


def _cpu_s(pids: list[int]) -> list[float]:
    """User + system CPU seconds of each process so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used.append((int(fields[11]) + int(fields[12])) / ticks)
    return used


def _run(spec: JobSpec, out: Path, target: Target, pids: list[int]) -> dict[str, float]:
    before = _cpu_s(pids)
    summary = run_job(spec, out, quiet=True, target=target)
    figures = _figures(summary)
    if pids:
        figures["daemon_cpu_s"] = max(a - b for a, b in zip(_cpu_s(pids), before, strict=True))
    return figures


def _start_lab(lab: Lab, shape: Shape, logs: Path, count: int) -> list[str]:
    """Hosts shaped so, a daemon on each, the shaping checked; returns worker.json entries."""
    hosts = [lab.add_host(shape) for _ in range(count)]
    for host in hosts:
        log_dir = str(logs / host.namespace)
        argv = [sys.executable, "-m", "psgd.cli", "worker", "--bind", host.address,
                "--port", str(PORT), "--log-dir", log_dir, "--insecure"]  # fmt: skip
        ready = f"psgd worker listening on tcp://{host.address}:{PORT}"
        lab.start(host, argv, ready, env=_env(), cwd=REPO)
    nbytes = 5_000_000
    took = time_transfer(hosts[0].namespace, hosts[1].namespace, hosts[1].address, nbytes, 60.0)
    assert shape.rate_bit_s is not None
    print(
        f"{count} hosts, links {shape}; a {nbytes / 1e6:g} MB TCP transfer host to host: "
        f"{took:.3f} s = {nbytes * 8 / took / 1e6:.1f} Mbit/s of payload "
        f"(tbf's ceiling for TCP payload: {shape.rate_bit_s * TCP_PAYLOAD_SHARE / 1e6:.1f})"
    )
    return [f"{h.address}:{PORT}" for h in hosts]


def _ratio_rows(runs: dict[str, list[dict[str, float]]], key: str) -> list[str]:
    base = runs["plain"]
    base_median = statistics.median(b[key] for b in base)
    lines = []
    for name, rows in runs.items():
        med = statistics.median(r[key] for r in rows)
        paired = statistics.median(r[key] / b[key] for r, b in zip(rows, base, strict=False))
        accuracy = statistics.median(r["accuracy"] for r in rows)
        lines.append(
            f"  {name:10s} {key} {med:7.2f} s  ratio to plain {med / base_median:.3f} "
            f"(paired {paired:.3f})  accuracy {accuracy:.4f}  "
            f"{statistics.median(r['mb_per_node'] for r in rows):8.2f} MB sent per node"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", default="100mbit")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument(
        "--codecs",
        default=",".join(CODECS),
        help="subset of " + ",".join(CODECS).replace("%", "%%"),
    )
    parser.add_argument("--hosts", type=int, default=HOSTS, help="namespace hosts (nodes)")
    parser.add_argument("--virtual", action="store_true", help="also the --simulate clock")
    parser.add_argument(
        "--virtual-speed", type=float, default=1.0,
        help="--device-speed of the virtual run (default 1: this machine's speed)",
    )  # fmt: skip
    parser.add_argument(
        "--virtual-cores", type=int, default=os.cpu_count() or 1,
        help="--shared-cores of the virtual run (default: this machine's cores, which the "
        "namespace hosts share; 0: a core per host)",
    )  # fmt: skip
    parser.add_argument("--json", default=None, help="write every run's figures here")
    parser.add_argument("--keep", default=None, help="keep the run folders and daemon logs here")
    args = parser.parse_args()
    names = [n for n in args.codecs.split(",") if n]
    if "plain" not in names:
        names.insert(0, "plain")
    shape = Shape.parse(args.rate)
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    virtual: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        lab = Lab()
        try:
            addresses = _start_lab(lab, shape, folder / "logs", args.hosts)
            (folder / "worker.json").write_text(json.dumps({"Worker": addresses}))
            target = Target(workers_file=folder / "worker.json")
            for repeat in range(args.repeats):
                for name in names:
                    out = folder / f"{name}-{repeat}"
                    pids = [d.process.pid for d in lab.daemons]
                    runs[name].append(_run(_spec(name, args), out, target, pids))
                    print(f"  repeat {repeat} {name}: {runs[name][-1]}", flush=True)
                    if args.virtual:
                        spec = _spec(name, args)
                        spec.links = [args.rate]
                        spec.device_speed = [f"{args.virtual_speed:g}"]
                        spec.shared_cores = args.virtual_cores or None
                        sim = Target(simulate=True)
                        row = _run(spec, folder / f"{name}-{repeat}-sim", sim, [])
                        virtual[name].append(row)
                        print(f"  repeat {repeat} {name} --simulate: {row}", flush=True)
        finally:
            lab.close()
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(this machine: {os.cpu_count()} cores)")  # fmt: skip
    print(f"medians of {args.repeats} repeats, {args.epochs} epochs, links {shape}:")
    for line in _ratio_rows(runs, "wall_s") + _ratio_rows(runs, "train_s"):
        print(line)
    for name in names:
        cpu = statistics.median(r["daemon_cpu_s"] for r in runs[name])
        print(f"  {name:10s} CPU of the busiest daemon per job {cpu:7.2f} s")
    if "topk1%+ef" in runs:
        ratio = statistics.median(r["wall_s"] for r in runs["topk1%+ef"]) / statistics.median(
            r["wall_s"] for r in runs["plain"]
        )
        gap = statistics.median(r["accuracy"] for r in runs["plain"]) - statistics.median(
            r["accuracy"] for r in runs["topk1%+ef"]
        )
        met = ratio <= BAR and gap <= ACCURACY_POINTS
        print(f"bar: top-k/plain wall {ratio:.3f} <= {BAR} and accuracy {gap * 100:+.2f} points "
              f"behind (<= 1): {'met' if met else 'NOT met'}")  # fmt: skip
    if args.virtual:
        cores = f" --shared-cores {args.virtual_cores}" if args.virtual_cores else ""
        print(f"virtual clock (--simulate --link {args.rate} --device-speed "
              f"{args.virtual_speed:g}{cores}) against the namespace hosts (medians):")  # fmt: skip
        worst = 0.0
        for name in names:
            for key in ("wall_s", "train_s"):
                real = statistics.median(r[key] for r in runs[name])
                predicted = statistics.median(r[f"virtual_{key}"] for r in virtual[name])
                if key == "wall_s":
                    worst = max(worst, abs(predicted / real - 1))
                print(f"  {name:10s} {key:8s} namespace {real:7.2f} s  virtual {predicted:7.2f} s"
                      f"  virtual/namespace {predicted / real:.3f}")  # fmt: skip
        print(f"bar: the virtual clock within {CLOCK_BAR:.0%} of every namespace wall time "
              f"(worst {worst:.1%}): {'met' if worst <= CLOCK_BAR else 'NOT met'}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"namespace": runs, "virtual": virtual}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
