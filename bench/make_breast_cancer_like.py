"""Write a breast-cancer-style tabular .npz: 569 rows of 30 standardised features, 2 classes.

The Wisconsin diagnostic breast cancer data (sklearn's ``load_breast_cancer``) has 569 samples
(212 malignant, 357 benign) of 30 real features, many strongly correlated. This script draws
data of the same shape and flavour (two Gaussian classes sharing a covariance with five dominant
directions, means 2.4 apart along a random direction), so
the model-averaging comparison runs without sklearn or a download. Features are standardised
with the training split's statistics; 20% of the rows are the test split.

    python bench/make_breast_cancer_like.py out.npz [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make(seed: int = 0, n_malignant: int = 212, n_benign: int = 357, features: int = 30):
    """``(x_train, y_train, x_test, y_test)``: float32 features, int64 labels (1 malignant)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((features, 5))  # a few shared directions: correlated features
    direction = rng.standard_normal(features)
    direction /= np.linalg.norm(direction)

    def draw(n: int, shift: float) -> np.ndarray:
        latent = rng.standard_normal((n, 5)) @ basis.T
        return latent + 0.5 * rng.standard_normal((n, features)) + shift * 2.4 * direction

    x = np.vstack([draw(n_malignant, 0.5), draw(n_benign, -0.5)])
    y = np.concatenate([np.ones(n_malignant, np.int64), np.zeros(n_benign, np.int64)])
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    n_test = len(y) // 5
    x_train, x_test = x[n_test:], x[:n_test]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return (x_train.astype(np.float32), y[n_test:], x_test.astype(np.float32), y[:n_test])


def write(path: str | Path, seed: int = 0) -> Path:
    """Write the dataset of ``make(seed)`` to ``path`` as a psgd ``.npz``; returns the path."""
    x_train, y_train, x_test, y_test = make(seed)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with np.load(write(args.out, args.seed)) as data:
        print(f"{args.out}: {len(data['y_train'])} training and {len(data['y_test'])} test rows")


if __name__ == "__main__":
    main()
