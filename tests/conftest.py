"""Shared fixtures: a tiny simulated line rendered once per test session."""

from __future__ import annotations

import pytest

from lib.acquire import sealant_line as sl
from lib.config import load_profile


@pytest.fixture(scope="session")
def smoke_profile():
    return load_profile("smoke")


@pytest.fixture(scope="session")
def tiny_line(tmp_path_factory, smoke_profile):
    """The smoke line's first 8 passes (3 of them defective with the default seed? checked in tests)."""
    root = tmp_path_factory.mktemp("line")
    summary = sl.simulate_line(smoke_profile, root, workers=1, progress=False)
    return root, summary
