"""Limit BLAS threads through the environment, before numpy loads (imports nothing).

Several numpy processes on one host, each with a multi-threaded BLAS, can run 30x slower
(see PERF.md). ``worker.py`` and ``job_submit.py`` call ``limit_blas_threads`` first thing;
this module must stay free of numpy (and of ``psgd.nn``, whose package imports it) so that
the variables are set before OpenBLAS reads them. At run time ``psgd.nn.blas.blas_threads``
changes the limit through threadpoolctl.
"""

from __future__ import annotations

import os

__all__ = ["BLAS_ENV_VARS", "limit_blas_threads"]

BLAS_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(threads: int = 1) -> None:
    """Set the BLAS thread count for this process (before numpy loads) unless already set."""
    for name in BLAS_ENV_VARS:
        os.environ.setdefault(name, str(threads))
