"""Shared fixtures: every test starts with no job settings left over from another.

Child processes (daemons, submitters) import the same ``psgd`` as the tests: a checkout's when
the tests run from one, else the installed one. With ``PSGD_EXPECT_INSTALLED=1`` (``.ci/run``)
the suite refuses to run against anything but an installed psgd.
"""

from __future__ import annotations

import os
import sys

import pytest
from entry_points import PSGD_ROOT, installed

from psgd.net.wire_objects import set_active
from psgd.settings import GlobalSettings

if os.environ.get("PSGD_EXPECT_INSTALLED") == "1":
    import psgd

    where = os.path.realpath(psgd.__file__)
    assert installed() and where.startswith(os.path.realpath(sys.prefix) + os.sep), (
        f"PSGD_EXPECT_INSTALLED=1 but psgd is imported from {where}, "
        f"not from the environment {sys.prefix}"
    )
elif not installed():
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PSGD_ROOT), os.environ.get("PYTHONPATH")])
    )


@pytest.fixture(autouse=True)
def _fresh_global_settings():
    yield
    GlobalSettings.clear_default()
    set_active(None)
