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
    """The whole smoke line (21 passes, 3 with process defects), rendered once per session."""
    root = tmp_path_factory.mktemp("line")
    summary = sl.simulate_line(smoke_profile, root, workers=1, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def built(tiny_line, smoke_profile):
    """The tiny line's dataset: extraction, synthetic defects and the manifest."""
    from lib.dataset import assemble

    root, _ = tiny_line
    plan, crops, scores, timing = assemble.extract(smoke_profile, root, 0, progress=False, force=True)
    synth = assemble.make_synthetics(root, smoke_profile.scale, progress=False)
    manifest = assemble.build_manifest(root)
    return root, plan, crops, scores, synth, manifest
