"""Codec test scripts (public): run a codec on a simulated topology, no sockets, no threads.

From pytest: ``from psgd.testing import check_p2p; check_p2p("plain.Plain").assert_ok()``;
from a shell: ``python -m psgd.testing p2p plain.Plain --nodes 4 --rounds 5``.

Owns: the deterministic message scheduler of the scripts and their command line.
May import: the contract (``psgd``), ``psgd.net.wire`` (real encoding) and the codec loader.
"""

from psgd.testing.harness import CodecCheck, RoundRecord, check_p2p, check_ps
from psgd.testing.scripts import main

__all__ = ["CodecCheck", "RoundRecord", "check_p2p", "check_ps", "main"]
