"""Calibrating the simulated line's one knob on one number: raw PatchCore's validation image AUROC.

It lives with the claims because its target is one of the paper's figures about a named model.

The paper reports raw PatchCore at 86.8 +- 0.9 image AUROC on its validation split (Table 4, averaged
over the three viewpoints). The simulator's ``scene.nuisance`` scales how much a car differs from the
next outside the robot's beads; for each candidate value this renders the profile's line, extracts and
builds its dataset exactly as notebooks 00-02 do, fits raw (unmasked) PatchCore, seed 0, per viewpoint,
and reads the **validation** image AUROC (validation normals + synthetic validation defects). Test
outputs are written by the cells but never read here: everything else stays out of sample.

PatchCore needs no training beyond its memory bank and is deterministic, so one curve is one
measurement, not a tuning loop. ``benchmarks/calibrate_scene.py`` runs it and writes the curve that
notebook 00 plots.
"""

from __future__ import annotations

import time
from pathlib import Path

from lib.config import VIEWPOINTS, Profile

#: The figure the knob is set on: raw PatchCore's validation image AUROC in Table 4, and the band the
#: default must land in.
PAPER_RAW_PATCHCORE_VAL_AUROC = 0.868
ACCEPT_BAND = (0.80, 0.92)


def prepare_dataset(profile: Profile, data_root, workers: int | None = None, progress: bool = False) -> None:
    """Notebooks 00-02 without the figures: render the line, extract the crops, make the synthetic
    defects (the automatic review) and write the manifest."""
    from lib.acquire import views
    from lib.dataset import assemble

    root = Path(data_root)
    views.load_or_simulate(profile, root, workers=workers)
    assemble.extract(profile, root, profile.seed, progress=progress)
    assemble.make_synthetics(root, profile.scale, progress=progress)
    assemble.build_manifest(root)


def raw_patchcore_validation(profile: Profile, data_root, store_root) -> dict:
    """Raw PatchCore (seed 0) per viewpoint: ``{view: validation image AUROC}`` and their mean."""
    from lib.dataset.manifest import read_manifest
    from lib.evaluate.evaluate import evaluate_outputs, load_outputs
    from lib.models import make_model
    from lib.models.train import run_cell
    from lib.store import Cell

    root = Path(data_root)
    manifest = read_manifest(root / "data_manifest.csv")
    out = {}
    for view in VIEWPOINTS:
        cell = Cell("patchcore", view, False, 0)
        run_cell(make_model("patchcore", profile), root, manifest, cell, store_root, progress=False)
        m = evaluate_outputs(cell, load_outputs(root, store_root, cell, manifest))
        m = m[(m.subset == "val") & (m.policy == "oracle") & (m.level == "image")]
        out[view] = round(float(m.auroc.iloc[0]), 4)
    out["mean"] = round(sum(out[v] for v in VIEWPOINTS) / len(VIEWPOINTS), 4)
    return out


def calibration_point(profile: Profile, nuisance: float, work_dir, workers: int | None = None) -> dict:
    """One point of the curve: the profile's line at ``nuisance``, its raw PatchCore validation AUROC."""
    prof = profile.with_overrides(scene={**profile.scene, "nuisance": float(nuisance)})
    root = Path(work_dir) / f"nuisance_{nuisance:g}"
    t0 = time.perf_counter()
    prepare_dataset(prof, root / "data", workers=workers)
    t_data = time.perf_counter() - t0
    auroc = raw_patchcore_validation(prof, root / "data", root / "store")
    return {
        "nuisance": float(nuisance),
        **{f"val_auroc_{k}": v for k, v in auroc.items()},
        "data_s": round(t_data, 1),
        "patchcore_s": round(time.perf_counter() - t0 - t_data, 1),
    }


def choose(points: list[dict], target: float = PAPER_RAW_PATCHCORE_VAL_AUROC) -> dict:
    """The candidate whose mean validation AUROC is nearest the paper's (ties: the smaller nuisance),
    among the admissible ones: nuisance > 0, because the plant's cars do differ at the manual sites
    (issue 26). Nuisance 0 is measured as the curve's anchor only. (This admissibility was written down
    after the first curve was seen, where 0 came nearest by 0.0008 against 0.5's 0.0093, a gap far
    below the validation split's sampling error; docs/simulator.md says so.)"""
    admissible = [p for p in points if p["nuisance"] > 0]
    if not admissible:
        raise ValueError("no admissible calibration point (nuisance > 0) to choose from")
    return min(admissible, key=lambda p: (abs(p["val_auroc_mean"] - target), p["nuisance"]))


def run_check(metrics, seed: int = 0) -> dict:
    """The calibrated figure as a finished run measured it: raw PatchCore's validation image AUROC per
    view and its mean, against the paper's value and the accepted band (notebook 08 prints it).

    ``metrics`` is the evaluation table (one row per cell, subset, level and policy). Raises when the
    run has no raw PatchCore cells of ``seed`` in all three views (say so rather than guess)."""
    sel = metrics[
        (metrics.model == "patchcore")
        & (~metrics.masked.astype(bool))
        & (metrics.seed == seed)
        & (metrics.subset == "val")
        & (metrics.level == "image")
        & (metrics.policy == "oracle")
    ]
    per_view = {
        v: float(sel[sel.viewpoint == v].auroc.iloc[0]) for v in VIEWPOINTS if (sel.viewpoint == v).any()
    }
    if len(per_view) != len(VIEWPOINTS):
        raise ValueError(
            f"raw PatchCore (seed {seed}) has validation results for {sorted(per_view)} only; the "
            f"calibration check needs all of {list(VIEWPOINTS)}"
        )
    mean = sum(per_view.values()) / len(per_view)
    lo, hi = ACCEPT_BAND
    return {
        **{v: round(a, 4) for v, a in per_view.items()},
        "mean": round(mean, 4),
        "paper": PAPER_RAW_PATCHCORE_VAL_AUROC,
        "band": ACCEPT_BAND,
        "in_band": bool(lo <= mean <= hi),
    }
