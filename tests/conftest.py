"""Shared fixtures: every test starts with no job settings left over from another."""

from __future__ import annotations

import pytest

from psgd.settings import GlobalSettings


@pytest.fixture(autouse=True)
def _fresh_global_settings():
    yield
    GlobalSettings._default = None
    GlobalSettings._params = {}
