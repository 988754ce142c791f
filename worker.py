#!/usr/bin/env python3
"""Start a psgd worker daemon: ``python worker.py --help``."""

from psgd.blas_env import limit_blas_threads

limit_blas_threads()

from psgd.cli import worker_main  # noqa: E402  (BLAS threads must be set before numpy loads)

if __name__ == "__main__":
    worker_main()
