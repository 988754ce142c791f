"""Training-step throughput of psgd.nn against bare numpy loops of the same MLP, in one run.

The psgd step is ``model.loss_and_grads`` then ``var.value -= opt.delta(var.grad)`` per
variable with Adam. Two baselines: "bare" is idiomatic numpy (expressions that allocate) and
"tuned" preallocates everything and updates the weights in place. Prints samples/s (medians
over interleaved repeats) and the ratios psgd/baseline.

    OPENBLAS_NUM_THREADS=1 python -m bench.bench_nn_step [--steps 300] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from psgd.nn import build_mlp, make_optimizer  # noqa: E402

SIZES = [784, 128, 128, 10]
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def psgd_step(model, opts):
    variables = model.variables

    def step(x, y):
        model.loss_and_grads(x, y)
        for var, opt in zip(variables, opts, strict=True):
            var.value -= opt.delta(var.grad)

    return step


def bare_step(params):
    """Idiomatic hand-written numpy: forward, backward, Adam, with allocating expressions."""
    W1, b1, W2, b2, W3, b3 = params
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]

    def step(x, y):
        n = x.shape[0]
        h1 = x @ W1 + b1
        a1 = np.maximum(h1, 0)
        h2 = a1 @ W2 + b2
        a2 = np.maximum(h2, 0)
        z = a2 @ W3 + b3
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        _loss = -np.log(p[rows, y]).mean()
        p[rows, y] -= 1
        p /= n
        dW3, db3 = a2.T @ p, p.sum(axis=0)
        da2 = p @ W3.T
        da2 *= h2 > 0
        dW2, db2 = a1.T @ da2, da2.sum(axis=0)
        da1 = da2 @ W2.T
        da1 *= h1 > 0
        dW1, db1 = x.T @ da1, da1.sum(axis=0)
        t[0] += 1
        lr_t = LR * (1 - B2 ** t[0]) ** 0.5 / (1 - B1 ** t[0])
        for w, g, mi, vi in zip(params, (dW1, db1, dW2, db2, dW3, db3), m, v, strict=True):
            mi *= B1
            mi += (1 - B1) * g
            vi *= B2
            vi += (1 - B2) * g * g
            w -= lr_t * mi / (np.sqrt(vi) + EPS)

    return step


def tuned_step(params, batch):
    """Hand-tuned numpy: every buffer preallocated, every op in place, no per-step allocation."""
    W1, b1, W2, b2, W3, b3 = params
    grads = [np.empty_like(p) for p in params]
    dW1, db1, dW2, db2, dW3, db3 = grads
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    scratch = [np.empty_like(p) for p in params]
    f32 = np.float32
    a1, a2 = np.empty((batch, 128), f32), np.empty((batch, 128), f32)
    d1, d2 = np.empty((batch, 128), f32), np.empty((batch, 128), f32)
    z, mask = np.empty((batch, 10), f32), np.empty((batch, 128), bool)
    rows = np.arange(batch)
    t = [0]

    def step(x, y):
        np.dot(x, W1, out=a1)
        np.add(a1, b1, out=a1)
        np.maximum(a1, 0, out=a1)
        np.dot(a1, W2, out=a2)
        np.add(a2, b2, out=a2)
        np.maximum(a2, 0, out=a2)
        np.dot(a2, W3, out=z)
        np.add(z, b3, out=z)
        np.subtract(z, z.max(axis=1, keepdims=True), out=z)
        _picked = z[rows, y]
        np.exp(z, out=z)
        s = z.sum(axis=1, keepdims=True)
        _loss = float(np.log(s).sum() - _picked.sum()) / batch
        np.divide(1.0 / batch, s, out=s)
        np.multiply(z, s, out=z)
        z[rows, y] -= 1.0 / batch
        np.dot(a2.T, z, out=dW3)
        np.add.reduce(z, axis=0, out=db3)
        np.dot(z, W3.T, out=d2)
        np.greater(a2, 0, out=mask)
        np.multiply(d2, mask, out=d2)
        np.dot(a1.T, d2, out=dW2)
        np.add.reduce(d2, axis=0, out=db2)
        np.dot(d2, W2.T, out=d1)
        np.greater(a1, 0, out=mask)
        np.multiply(d1, mask, out=d1)
        np.dot(x.T, d1, out=dW1)
        np.add.reduce(d1, axis=0, out=db1)
        t[0] += 1
        c1 = (1 - B1) / (1 - B1 ** t[0])
        c2 = ((1 - B2) / (1 - B2 ** t[0])) ** 0.5
        for w, g, mi, vi, s_ in zip(params, grads, m, v, scratch, strict=True):
            mi *= B1  # m and v kept scaled by 1/(1-beta), as psgd does
            mi += g
            np.square(g, out=s_)
            vi *= B2
            vi += s_
            np.sqrt(vi, out=s_)
            s_ += EPS / c2
            np.divide(mi, s_, out=s_)
            s_ *= LR * c1 / c2
            w -= s_

    return step


def samples_per_s(step, xs, ys, steps):
    n, k = xs[0].shape[0], len(xs)
    t0 = time.perf_counter()
    for i in range(steps):
        step(xs[i % k], ys[i % k])
    return n * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((args.batch, SIZES[0]), dtype=np.float32) for _ in range(16)]
    ys = [rng.integers(0, SIZES[-1], args.batch) for _ in range(16)]

    def fresh_params():
        return build_mlp(SIZES, rng=np.random.default_rng(1)).get_weights()

    model = build_mlp(SIZES, rng=np.random.default_rng(1))
    opts = [make_optimizer("adam", learning_rate=LR) for _ in model.variables]
    steps = {
        "psgd": psgd_step(model, opts),
        "bare": bare_step(fresh_params()),
        "tuned": tuned_step(fresh_params(), args.batch),
    }
    results: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up: buffers, optimizer state, page faults
        samples_per_s(step, xs, ys, 20)
    names = list(steps)
    for r in range(args.repeats):
        for name in names[r % 3 :] + names[: r % 3]:  # rotate the order: no position bias
            results[name].append(samples_per_s(steps[name], xs, ys, args.steps))
    med = {name: float(np.median(r)) for name, r in results.items()}
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    print(f"MLP {SIZES}, batch {args.batch}, float32, Adam, OPENBLAS_NUM_THREADS={threads}")
    for name, value in med.items():
        print(f"  {name:6s} {value:10,.0f} samples/s  ({1e6 * args.batch / value:6.0f} us/step)")
    for base in ("bare", "tuned"):
        paired = np.median(np.array(results["psgd"]) / np.array(results[base]))
        print(f"  ratio psgd/{base}: {med['psgd'] / med[base]:.3f} (paired median {paired:.3f})")


if __name__ == "__main__":
    main()
