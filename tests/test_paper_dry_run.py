"""The reduced dry run of the paper profile (issue 28), as CI runs it: Table 3's sizes, one view, one raw cell of
each kind of model (memory bank, synthetic anomalies, student-teacher, discriminator), then 08-09 and the
index (10 bundles all three views of a model: the full dry run runs it). It proves that the paper's shapes
go through every stage; its numbers mean nothing and say so."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

from lib.config import REPO_ROOT

KINDS = "patchcore,memseg,efficientad_s,simplenet"


def test_reduced_paper_dry_run(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    cmd = [sys.executable, "-m", "lib", "run", "--profile", "paper", "--dry-run", "--views", "center"]
    cmd += ["--variants", "raw", "--models", KINDS, "--no-resource-plan", "--data-root", str(data)]
    cmd += ["--runs-dir", str(runs), "--skip", "10,11", "--executor", "auto"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    cells = sorted(p.name for p in (runs / "cells").iterdir() if p.name.endswith("_seed0"))
    assert cells == sorted(f"{m}_center_raw_seed0" for m in KINDS.split(",")), cells
    # full geometry: the paper's 848x480 viewpoint crops
    import cv2

    crop = next(p for p in (data / "frames" / "center").glob("*.png") if "mask" not in p.name)
    assert cv2.imread(str(crop)).shape[:2] == (480, 848), crop
    index = (runs / "index.html").read_text()
    assert "DRY RUN" in index and "Claims of the paper, tested on this run" not in index
    assert (runs / "results.md").read_text().count("DRY RUN") >= 1
    headline = pd.read_csv(data / "tables" / "headline.csv")
    random = headline[headline.label.str.startswith(("patchcore", "simplenet"))]
    assert len(random) == 2 and random.label.str.contains("random backbone").all()
    claims = pd.read_csv(data / "tables" / "claims.csv", keep_default_na=False)
    assert not claims.verdict.isin(["reproduced", "contradicted", "inconclusive"]).any()
    for nb in ("00_acquire", "08_evaluate", "09_error_analysis"):
        assert "DRY RUN" in Path(runs / f"{nb}.html").read_text(), nb
    assert not (runs / "10_inspection.html").exists()
