#!/usr/bin/env python3
"""Submit a psgd job: ``python job_submit.py --help``."""

from psgd.blas_env import limit_blas_threads

limit_blas_threads()

from psgd.cli import submit_main  # noqa: E402  (BLAS threads must be set before numpy loads)

if __name__ == "__main__":
    submit_main()
