"""Double buffering (``--sync double_buffer``) against SSGD on the 2-worker network job.

The job: MLP 784-128-128-10, Plain codec, 2 worker daemons on loopback (``--local 2``), one
epoch over ``2 * 64 * steps`` MNIST samples, Adam; the only difference between the two sides
is the sync mode. SSGD waits for each batch's merged result before the next batch; double
buffering applies it one batch late, so the exchange overlaps the next batch's computation.
Repeats interleave the sides (alternating which goes first); the script prints each side's
median aggregate samples/s (``summary["samples_per_s"]``: training samples over training time,
waiting included), the ratio double_buffer/ssgd of the medians and the median of the paired
ratios, and each side's test accuracy.

``--rate 100mbit`` (root, Linux) runs the whole measurement inside a fresh network namespace
whose loopback is shaped by ``tc ... tbf rate RATE`` (a token bucket: a bandwidth-limited
link; netem is often not built into kernels), leaving the host's own loopback alone.

    python bench/bench_double_buffer.py [--repeats 5] [--steps 300] [--rate 100mbit]
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy loads; the daemons inherit it

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from psgd.cluster.runner import run_job  # noqa: E402
from psgd.job import JobSpec  # noqa: E402

BATCH = 64


def one_run(sync: str, steps: int, out: Path) -> dict[str, Any]:
    spec = JobSpec(codec="plain.Plain", node_count=2, epochs=1, batch_size=BATCH, sync=sync,
                   train_samples=2 * BATCH * steps, test_samples=2000)  # fmt: skip
    return run_job(spec, out / spec.job_id, quiet=True, local=2)


def measure(repeats: int, steps: int) -> None:
    runs: dict[str, list[dict[str, Any]]] = {"ssgd": [], "double_buffer": []}
    with tempfile.TemporaryDirectory(prefix="psgd-bench-db-") as folder:
        out = Path(folder)
        one_run("ssgd", min(steps, 30), out)  # warm-up: page in data and code
        for repeat in range(repeats):
            order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
            for sync in order:
                runs[sync].append(one_run(sync, steps, out))
    rate = {s: [r["samples_per_s"] for r in rs] for s, rs in runs.items()}
    median = {s: statistics.median(v) for s, v in rate.items()}
    paired = [d / s for d, s in zip(rate["double_buffer"], rate["ssgd"], strict=True)]
    print(f"2 workers (--local 2) x {steps} batches of {BATCH}, Plain, Adam")
    for sync, values in rate.items():
        accuracy = statistics.median(r["accuracy"] for r in runs[sync])
        print(f"{sync:14s} {median[sync]:9,.0f} samples/s  runs {[round(v) for v in values]}"
              f"  accuracy {accuracy:.4f}")  # fmt: skip
    print(f"ratio double_buffer/ssgd {median['double_buffer'] / median['ssgd']:.3f} (medians), "
          f"paired median {statistics.median(paired):.3f}")  # fmt: skip


def in_shaped_namespace(argv: list[str], rate: str) -> int:
    """Run this script (without --rate) in a fresh netns whose loopback is shaped by tc."""
    name = f"psgd-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        do = ["ip", "netns", "exec", name]
        subprocess.run([*do, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run([*do, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate,
                        "burst", "256kb", "limit", "16mb"], check=True)  # fmt: skip
        print(f"loopback shaped: tbf rate {rate} (network namespace {name})")
        sys.stdout.flush()
        return subprocess.run([*do, sys.executable, *argv]).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300, help="batches per worker (<= 468)")
    parser.add_argument("--rate", default=None, help="shape the link, e.g. 100mbit (root)")
    args = parser.parse_args()
    if args.rate:
        argv = [sys.argv[0], "--repeats", str(args.repeats), "--steps", str(args.steps)]
        sys.exit(in_shaped_namespace(argv, args.rate))
    measure(args.repeats, args.steps)


if __name__ == "__main__":
    main()
