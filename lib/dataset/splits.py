"""Which underbody goes to which viewpoint and split (paper Table 2), decided before extraction.

Each underbody serves one viewpoint dataset (Table 2's per-view counts add up to the 345 normal
and 15 real defective underbodies). Train underbodies give 5 frames, validation and test ones one
frame; real defects go to test only. No underbody is in two splits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.config import VIEWPOINTS

#: Table 2, normal underbodies per viewpoint and split.
TABLE2_NORMAL = {
    "front": {"train": 69, "val": 23, "test": 23},
    "center": {"train": 67, "val": 23, "test": 24},
    "back": {"train": 70, "val": 23, "test": 23},
}
SPLITS = ("train", "val", "test")
TRAIN_FRAMES_PER_UNDERBODY = 5


def normal_counts(n_normal: int) -> dict:
    """Table 2's normal counts scaled to ``n_normal`` underbodies (largest remainder, >= 1 per cell)."""
    total = sum(sum(r.values()) for r in TABLE2_NORMAL.values())
    cells = [(v, s) for v in VIEWPOINTS for s in SPLITS]
    if n_normal < len(cells):
        raise ValueError(
            f"need at least {len(cells)} normal underbodies (one per viewpoint and split), got {n_normal}"
        )
    exact = np.array([TABLE2_NORMAL[v][s] * n_normal / total for v, s in cells])
    base = np.maximum(1, np.floor(exact)).astype(int)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    k = 0
    while base.sum() < n_normal:
        base[order[k % len(order)]] += 1
        k += 1
    while base.sum() > n_normal:  # only when the >=1 floor overshoots
        i = int(np.argmax(base))
        base[i] -= 1
    out = {v: {} for v in VIEWPOINTS}
    for (v, s), c in zip(cells, base, strict=True):
        out[v][s] = int(c)
    return out


def assign_splits(passes: pd.DataFrame, seed: int, per_view: dict | None = None) -> pd.DataFrame:
    """Add ``viewpoint`` and ``split`` columns: normal passes shuffled into Table 2's cells (or
    ``per_view`` = {split: count}, the same for every viewpoint), defective passes to the test
    split of their defect's viewpoint."""
    normal = passes[passes.defective == 0].pass_id.to_numpy()
    if per_view is None:
        counts = normal_counts(len(normal))
    else:
        counts = {v: {s: int(per_view[s]) for s in SPLITS} for v in VIEWPOINTS}
        need = sum(sum(c.values()) for c in counts.values())
        if need != len(normal):
            raise ValueError(
                f"normals_per_view asks for {need} normal underbodies, the line has {len(normal)}"
            )
    rng = np.random.default_rng([seed, 31])
    order = rng.permutation(normal)
    view_of, split_of = {}, {}
    k = 0
    for v in VIEWPOINTS:
        for s in SPLITS:
            for pid in order[k : k + counts[v][s]]:
                view_of[int(pid)], split_of[int(pid)] = v, s
            k += counts[v][s]
    out = passes.copy()
    out["viewpoint"] = [view_of.get(int(p), "") for p in out.pass_id]
    out["split"] = [split_of.get(int(p), "") for p in out.pass_id]
    bad = out.defective == 1
    out.loc[bad, "viewpoint"] = out.loc[bad, "defect_viewpoint"]
    out.loc[bad, "split"] = "test"
    if (out.viewpoint == "").any():
        raise ValueError("some passes got no viewpoint: defective passes need a defect_viewpoint")
    return out
