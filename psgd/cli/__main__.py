"""``python -m psgd.cli``: the ``psgd`` command."""

from psgd.cli import main

main()
