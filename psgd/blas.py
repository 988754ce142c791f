"""Keep BLAS from oversubscribing the cores: one BLAS thread per node by default.

Must run before numpy is imported to take effect (the entry points call it first).
"""

from __future__ import annotations

import os

__all__ = ["BLAS_ENV_VARS", "limit_blas_threads"]

BLAS_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(threads: int = 1) -> None:
    """Set the BLAS thread count for this process unless the user already chose one."""
    for name in BLAS_ENV_VARS:
        os.environ.setdefault(name, str(threads))
