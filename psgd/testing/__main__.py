"""``python -m psgd.testing``: the codec test scripts."""

from psgd.testing.scripts import main

main()
