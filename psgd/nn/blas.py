"""Keep BLAS from oversubscribing the cores: one BLAS thread per busy node thread.

Several nodes on one host (threads in-process, or daemons) each running a multi-threaded BLAS
collapse throughput by up to 30x (see PERF.md). The entry points set the environment before
numpy loads; ``blas_threads`` changes the limit at run time through threadpoolctl.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BLAS_ENV_VARS", "blas_threads", "limit_blas_threads"]

from psgd.blas_env import BLAS_ENV_VARS, limit_blas_threads  # re-exported


@contextmanager
def blas_threads(threads: int) -> Iterator[None]:
    """Limit BLAS to ``threads`` threads inside the block (process-wide)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield
