"""Encode+decode time of psgd.net.wire against pickle, both measured in the same run.

Two payloads: one flat float32 array of 118,282 elements (473 KB, the MLP 784-128-128-10 as one
vector) and the list of that MLP's six weight and bias arrays. "wire" is
``decode(encode(header, content))`` (frames share the arrays' memory, nothing is copied);
"pickle" is ``pickle.loads(pickle.dumps((header, content)))`` with the data in-band;
"floor" is an unvalidated msgpack header + ``np.frombuffer`` per array, the least any
zero-copy multipart encoding can cost. Prints medians over interleaved repeats (us per
encode+decode) and the ratios.

    python -m bench.bench_wire [--repeats 7]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from psgd.net.wire import decode, encode, frames_size

SIZES = [784, 128, 128, 10]
HEADER = {"type": "grad", "job": "bench", "sender": 1, "batch": 42}


def mlp_arrays(rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:], strict=True):
        arrays.append(rng.standard_normal((n_in, n_out)).astype(np.float32))
        arrays.append(np.zeros(n_out, dtype=np.float32))
    return arrays


def wire(content: Any) -> Any:
    return decode(encode(HEADER, content))


def pickled(content: Any) -> Any:
    return pickle.loads(pickle.dumps((HEADER, content), protocol=pickle.HIGHEST_PROTOCOL))


def floor(content: Any) -> Any:
    arrays = content if isinstance(content, list) else [content]
    meta = [[a.dtype.str, a.shape] for a in arrays]
    frames = [msgpack.packb(dict(HEADER, arrays=meta)), *(memoryview(a).cast("B") for a in arrays)]
    header = msgpack.unpackb(frames[0])
    return [
        np.frombuffer(frame, dtype).reshape(shape)
        for (dtype, shape), frame in zip(header["arrays"], frames[1:], strict=True)
    ]


def median_us(runs: list[Callable[[Any], Any]], content: Any, repeats: int) -> dict[str, float]:
    """Median us per call of each run; repeats interleave the runs so load drift hits all."""
    timers = {run.__name__: timeit.Timer(lambda run=run: run(content)) for run in runs}
    numbers = {name: timer.autorange()[0] for name, timer in timers.items()}  # >= 0.2 s each
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            samples[name].append(timer.timeit(numbers[name]) / numbers[name] * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    cases = {
        "flat float32[118282]": rng.standard_normal(118_282).astype(np.float32),
        "MLP 784-128-128-10, 6 arrays": mlp_arrays(rng),
    }
    print(f"{'payload':30} {'bytes':>8} {'floor us':>9} {'wire us':>8} {'pickle us':>10} "
          f"{'pickle/wire':>12} {'wire/floor':>11}")  # fmt: skip
    for name, content in cases.items():
        size = frames_size(encode(HEADER, content))
        timings = median_us([floor, wire, pickled], content, args.repeats)
        print(
            f"{name:30} {size:8d} {timings['floor']:9.1f} {timings['wire']:8.1f} "
            f"{timings['pickled']:10.1f} {timings['pickled'] / timings['wire']:11.1f}x "
            f"{timings['wire'] / timings['floor']:10.1f}x"
        )


if __name__ == "__main__":
    main()
