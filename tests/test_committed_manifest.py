"""The committed data_manifest.csv: the `paper` profile's default dataset."""

import os
from pathlib import Path

import pytest

from lib.config import REPO_ROOT
from lib.dataset import assemble
from lib.dataset.manifest import read_manifest

COMMITTED = REPO_ROOT / "data_manifest.csv"


def test_committed_manifest_is_valid_and_follows_tables_1_and_2():
    df = read_manifest(COMMITTED)  # schema, values, no leakage
    assert df.groupby("underbody_id").split.nunique().max() == 1
    t2 = assemble.table2(df).set_index(["viewpoint", "split"])
    # Table 2's real defects: 3 front, 6 center, 6 back, test split only
    real = df[df.source == "real"].groupby("viewpoint").size().to_dict()
    assert real == {"front": 3, "center": 6, "back": 6}
    assert t2.loc[("front", "train"), "normal"].startswith(("69 (345)", "68 (340)"))
    t1 = assemble.table1(df)
    assert t1.loc["Total"].to_dict() == {"front": 56, "center": 64, "back": 60}


@pytest.mark.slow
def test_regenerating_paper_manifest_reproduces_it(tmp_path):
    """Regenerate the paper dataset from its seed (about 20 minutes on 2 cores): `pytest -m slow`."""
    from lib.acquire.sealant_line import simulate_line
    from lib.config import load_profile

    prof = load_profile("paper")
    root = Path(os.environ.get("SEALANT_PAPER_ROOT", tmp_path))
    if not (root / "simulation.json").is_file():
        simulate_line(prof, root, progress=False)
    assemble.extract(prof, root, prof.seed, force=True, progress=False)
    assemble.make_synthetics(root, prof.scale, progress=False)
    assemble.build_manifest(root)
    assert (root / "data_manifest.csv").read_bytes() == COMMITTED.read_bytes()
