"""The namespace lab of the multi-host tests: ``bench/netlab.py``, which a user also runs.

One implementation serves the tests, the shaped-link bench and root users; this module only
makes it importable from the tests (everything in ``netlab.__all__``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from netlab import *  # noqa: E402, F403
from netlab import __all__  # noqa: E402, F401
