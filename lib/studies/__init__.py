"""Beyond the paper (its section 8.4 "future work"), on the run's own trained cells:

- ``operating_points``: size-aware operating points, a threshold per region-area class that meets a
  false-alarm budget while keeping the most small defects (8.4, "size-dependent threshold tuning");
- ``diagnosis``: the type of a detected region (missing, misalignment, bifurcation, narrowing,
  hole) from its own evidence (8.4, "lack of defect classification");
- ``photometric``: every trained model under graded lighting shifts, and one mitigation
  (8.4, "lighting variability").

Each reuses the stored maps and checkpoints and adds inference only (the mitigation retrains one
model, PatchCore, whose fit takes seconds).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import pandas as pd


@contextmanager
def timed(data_root, part: str):
    """Time a study's block of a notebook into the ``study_times`` table, which the index's "where
    the time went" shows (a part timed again replaces its row)."""
    from lib.evaluate import tables as T

    t0 = time.perf_counter()
    yield
    seconds = round(time.perf_counter() - t0, 1)
    old = T.read(data_root, "study_times", missing_ok=True)
    rows = old[old.part != part] if old is not None else pd.DataFrame(columns=["part", "seconds"])
    T.write(data_root, "study_times", pd.concat([rows, pd.DataFrame([{"part": part, "seconds": seconds}])]))
    print(f"{part}: {seconds} s")


def cell_evidence(data_root, store_root, manifest, cells, diagnose=(), extractor=None, progress=True):
    """One pass over ``cells``' stored outputs for both map studies: the size policy's per-image class
    peaks of every cell, and the diagnosis regions (with features) of the cells in ``diagnose``
    (each crop's backbone features computed once). Returns (peaks table, regions table or None)."""
    from tqdm.auto import tqdm

    from lib.evaluate.evaluate import load_outputs
    from lib.studies import diagnosis as D
    from lib.studies import operating_points as OP

    peaks, regions, cache = [], [], {}
    diagnose = set(diagnose)
    if diagnose and extractor is None:
        extractor = D.make_extractor()
    for cell in tqdm(list(cells), desc="maps -> regions", unit="cell", disable=not progress):
        out = load_outputs(data_root, store_root, cell, manifest)
        seg = OP.val_pixel_threshold(out)  # once per cell, for both studies
        peaks.append(OP.cell_peak_table(out, cell, seg))
        if cell in diagnose:
            regions.append(D.defect_regions(data_root, out, cell, extractor, cache, seg))
    return pd.concat(peaks, ignore_index=True), (pd.concat(regions, ignore_index=True) if regions else None)
