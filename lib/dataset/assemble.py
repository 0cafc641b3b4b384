"""From videos to ``data_manifest.csv``: splits, extraction, synthetic defects, review, manifest.

Table 2 rules: train = normal only (5 frames per underbody); validation = normal + synthetic;
test = normal + synthetic + the line's process ("real") defects; synthetic defects split evenly
between validation and test; no underbody in two splits. Synthetic defects are made on frames
of *other* underbodies of the same split (each underbody serves one viewpoint's normal set, and
its other viewpoints are the raw material for synthetic defects), so counts per viewpoint are
unique underbodies as in Table 2, and no image is both a normal sample and a defect's source.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.acquire import sealant_line as sl
from lib.config import VIEWPOINTS, Profile
from lib.dataset import manifest as mf
from lib.dataset.splits import TRAIN_FRAMES_PER_UNDERBODY, assign_splits
from lib.defects import synthetic as syn
from lib.defects.decisions import read_review
from lib.fileio import read_image, sha256_file, write_csv, write_image, write_json
from lib.masking import write_roi_masks

DEFAULT_THRESHOLD = 0.5
DEFAULT_ROI_MARGIN = 15.0  # paper px


def synthetic_plan(profile: Profile, seed: int) -> pd.DataFrame:
    """Every synthetic defect to make: viewpoint, split (alternating val/test), type, region, size."""
    rows = []
    for view in VIEWPOINTS:
        specs = syn.plan_specs(view, profile.synthetic_fraction, seed)
        for k, s in enumerate(specs):
            rows.append(
                {
                    "synthetic_id": f"syn_{view}_{k:03d}",
                    "viewpoint": view,
                    "split": ("val", "test")[k % 2],
                    "defect_type": s.defect_type,
                    "region": s.region,
                    "length": round(s.length, 3),
                    "strength": round(s.strength, 4),
                    "seed": s.seed,
                }
            )
    return pd.DataFrame(rows)


def frames_needed(plan: pd.DataFrame, synth: pd.DataFrame) -> dict:
    """{pass_id: {viewpoint: n_frames}}: own viewpoint, plus bases for other viewpoints' synthetics."""
    need = {}
    for _, r in plan.iterrows():
        n_own = TRAIN_FRAMES_PER_UNDERBODY if r.split == "train" else 1
        need[int(r.pass_id)] = {r.viewpoint: n_own}
    normal_eval = plan[(plan.defective == 0) & plan.split.isin(["val", "test"])]
    for (view, split), group in synth.groupby(["viewpoint", "split"]):
        donors = normal_eval[(normal_eval.split == split) & (normal_eval.viewpoint != view)]
        if donors.empty:
            raise ValueError(f"no {split} underbodies outside viewpoint {view!r} to host synthetic defects")
        per_donor = math.ceil(len(group) / len(donors)) + 1  # +1: a spare when a frame has no site
        for pid in donors.pass_id:
            need[int(pid)][view] = per_donor
    return need


class DefectMasks:
    """``(pass_id, frame_index) -> GT mask`` of a defective pass's frame, None for a normal pass
    (a picklable callable, so extraction workers can draw the masks themselves)."""

    def __init__(self, root, poses, passes, defective: set):
        self.root, self.poses, self.passes, self.defective = Path(root), poses, passes, defective

    def __call__(self, pass_id: int, frame_index: int):
        if int(pass_id) not in self.defective:
            return None
        return sl.frame_defect_mask(self.root, pass_id, frame_index, poses=self.poses, passes=self.passes)


def extract(
    profile: Profile, data_root, seed: int, threshold: float = DEFAULT_THRESHOLD, progress=True, force=False
):
    """Assign splits and extract every crop the dataset needs; writes extraction/*.csv.

    Reuses a finished extraction with the same seed, threshold and simulated scene unless ``force``.
    """
    from lib.extract import template_matching as tm

    root = Path(data_root)
    params = {
        "seed": int(seed),
        "threshold": float(threshold),
        "profile": profile.name,
        "normals_per_view": profile.normals_per_view,
        "synthetic_fraction": profile.synthetic_fraction,
    }
    sim = root / "simulation.json"  # a re-rendered line (another scene) is extracted anew
    if sim.is_file():
        params["scene"] = json.loads(sim.read_text()).get("scene")
    done = root / "extraction" / "params.json"
    if not force and done.is_file() and json.loads(done.read_text()) == params:
        read = lambda name: pd.read_csv(root / "extraction" / name, keep_default_na=False)  # noqa: E731
        timing = json.loads((root / "extraction" / "timing.json").read_text())
        return read("plan.csv"), read("crops.csv"), read("scores.csv"), {**timing, "reused": True}
    passes = sl.read_passes(root)
    plan = assign_splits(passes, seed, profile.normals_per_view)
    synth = synthetic_plan(profile, seed)
    need = frames_needed(plan, synth)
    poses = sl.read_poses(root) if (root / "poses.csv").is_file() else None
    gt_for = None
    if poses is not None:
        gt_for = DefectMasks(
            root, poses, passes, set(plan.pass_id[plan.defective.astype(int) == 1].astype(int))
        )
    crops, scores, timing = tm.extract_crops(
        root, plan, threshold, lambda r: need[int(r.pass_id)], gt_mask_for=gt_for, progress=progress
    )
    write_csv(root / "extraction" / "plan.csv", plan)
    write_csv(root / "extraction" / "synthetic_plan.csv", synth)
    tm.save_extraction(root, crops, scores)
    write_json(root / "extraction" / "timing.json", timing)
    write_json(done, params)  # written last: marks the extraction as complete
    return plan, crops, scores, timing


def make_synthetics(data_root, scale: float, progress=True) -> pd.DataFrame:
    """Make every planned synthetic defect on donor crops; writes synthetic/defects.csv."""
    root = Path(data_root)
    plan = pd.read_csv(root / "extraction" / "plan.csv", keep_default_na=False)
    crops = pd.read_csv(root / "extraction" / "crops.csv", keep_default_na=False)
    synth = pd.read_csv(root / "extraction" / "synthetic_plan.csv", keep_default_na=False)
    own_view = dict(zip(plan.pass_id, plan.viewpoint, strict=True))
    split_of = dict(zip(plan.pass_id, plan.split, strict=True))
    templates = {}
    rows = []
    for (view, split), group in synth.groupby(["viewpoint", "split"], sort=True):
        if view not in templates:
            tdir = root / "templates"
            templates[view] = (
                read_image(tdir / f"{view}_trajectory.png", cv2.IMREAD_GRAYSCALE),
                read_image(tdir / f"{view}_regions.png", cv2.IMREAD_GRAYSCALE),
            )
        traj, regions = templates[view]
        donors = crops[
            (crops.viewpoint == view)
            & (crops.pass_id.map(split_of) == split)
            & (crops.pass_id.map(own_view) != view)
            & (crops.mask_path == "")
        ].sort_values(["rank", "pass_id"], kind="stable")
        donor_list = list(donors.itertuples(index=False))
        used, used_pass = set(), set()
        for spec_row in tqdm(
            list(group.itertuples(index=False)),
            desc=f"synthetic {view}/{split}",
            disable=not progress,
            leave=False,
        ):
            spec = syn.SyntheticSpec(
                spec_row.defect_type,
                int(spec_row.region),
                spec_row.length,
                spec_row.strength,
                int(spec_row.seed),
            )
            made = False
            # each defect on an underbody of its own while there are enough; then other frames of used ones
            fresh = [d for d in donor_list if d.pass_id not in used_pass]
            for d in fresh + [d for d in donor_list if d.pass_id in used_pass]:
                if d.image_path in used:
                    continue
                base = read_image(root / d.image_path, cv2.IMREAD_COLOR)
                try:
                    image, gt = syn.make_defect(base, traj, regions, spec, scale)
                except LookupError:
                    continue
                used.add(d.image_path)
                used_pass.add(d.pass_id)
                ipath = f"synthetic/{view}/{spec_row.synthetic_id}.png"
                mpath = f"synthetic/{view}/{spec_row.synthetic_id}_mask.png"
                write_image(root / ipath, image)
                write_image(root / mpath, gt)
                rows.append(
                    {
                        **spec_row._asdict(),
                        "underbody_id": d.underbody_id,
                        "pass_id": d.pass_id,
                        "frame_index": d.frame_index,
                        "source_image": d.image_path,
                        "image_path": ipath,
                        "mask_path": mpath,
                    }
                )
                made = True
                break
            if not made:
                raise RuntimeError(f"no donor crop could host {spec_row.synthetic_id} ({spec.defect_type})")
    out = pd.DataFrame(rows)
    write_csv(root / "synthetic" / "defects.csv", out)
    return out


def _region_at(regions: np.ndarray, mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return ""
    return str(int(regions[int(np.median(ys)), int(np.median(xs))]))


def _row(root, image_id, r, split, source, defect_type, region, mask, roi_path, match_score) -> dict:
    """One manifest row; ``r`` carries underbody_id, viewpoint, frame_index, image_path, mask_path."""
    return {
        "image_id": image_id,
        "underbody_id": r.underbody_id,
        "viewpoint": r.viewpoint,
        "split": split,
        "label": "normal" if source == "none" else "anomalous",
        "source": source,
        "defect_type": defect_type,
        "region": region,
        "frame_index": int(r.frame_index),
        "image_path": r.image_path,
        "mask_path": r.mask_path,
        "roi_path": roi_path,
        "area_ratio": round(mf.area_ratio(mask), 8),
        "sha256": sha256_file(root / r.image_path),
        "match_score": match_score,
    }


def build_manifest(data_root, roi_margin: float = DEFAULT_ROI_MARGIN) -> pd.DataFrame:
    """Assemble and write ``data_manifest.csv`` under the data root (review decisions honoured)."""
    root = Path(data_root)
    plan = pd.read_csv(root / "extraction" / "plan.csv", keep_default_na=False)
    crops = pd.read_csv(root / "extraction" / "crops.csv", keep_default_na=False)
    synth = pd.read_csv(root / "synthetic" / "defects.csv", keep_default_na=False)
    review = read_review(root)
    rois = write_roi_masks(root, roi_margin)
    regions = {
        v: read_image(root / "templates" / f"{v}_regions.png", cv2.IMREAD_GRAYSCALE) for v in VIEWPOINTS
    }
    p = plan.set_index("pass_id")
    rows = []
    own = crops[crops.viewpoint == crops.pass_id.map(p.viewpoint)]
    for r in own.itertuples(index=False):
        split = p.loc[r.pass_id, "split"]
        if split != "train" and r.rank != 0:
            continue
        real = bool(p.loc[r.pass_id, "defective"])
        if real and not r.mask_path:
            continue  # the defect is not visible in this crop: not a usable test image
        mask = read_image(root / r.mask_path, cv2.IMREAD_GRAYSCALE) if r.mask_path else None
        rows.append(
            _row(
                root,
                f"{r.viewpoint}/{split}/{r.underbody_id}_f{r.frame_index:03d}",
                r,
                split,
                "real" if real else "none",
                p.loc[r.pass_id, "defect_type"] if real else "",
                _region_at(regions[r.viewpoint], mask) if mask is not None else "",
                mask,
                rois[r.viewpoint],
                r.match_score,
            )
        )
    for s in synth.itertuples(index=False):
        if review.get(s.synthetic_id, "accept") == "reject":
            continue
        mask = read_image(root / s.mask_path, cv2.IMREAD_GRAYSCALE)
        score = crops.loc[crops.image_path == s.source_image, "match_score"]
        score = float(score.iloc[0]) if len(score) else float("nan")
        image_id = f"{s.viewpoint}/{s.split}/{s.synthetic_id}"
        rows.append(
            _row(
                root,
                image_id,
                s,
                s.split,
                "synthetic",
                s.defect_type,
                str(s.region),
                mask,
                rois[s.viewpoint],
                score,
            )
        )
    df = (
        pd.DataFrame(rows)
        .sort_values(["viewpoint", "split", "image_id"], kind="stable")
        .reset_index(drop=True)
    )
    mf.write_manifest(root / "data_manifest.csv", df)
    return df


def table1(manifest: pd.DataFrame) -> pd.DataFrame:
    """Synthetic defects per type and viewpoint (Table 1's totals)."""
    s = manifest[manifest.source == "synthetic"]
    t = pd.crosstab(s.defect_type, s.viewpoint).reindex(columns=list(VIEWPOINTS), fill_value=0)
    t.loc["Total"] = t.sum()
    return t


def table2(manifest: pd.DataFrame) -> pd.DataFrame:
    """Unique underbodies (frames) per viewpoint and split: normal, real, synthetic (Table 2)."""
    out = []
    for view in VIEWPOINTS:
        for split in ("train", "val", "test"):
            m = manifest[(manifest.viewpoint == view) & (manifest.split == split)]
            row = {"viewpoint": view, "split": split}
            for name, sel in (
                ("normal", m.source == "none"),
                ("real", m.source == "real"),
                ("synthetic", m.source == "synthetic"),
            ):
                row[name] = f"{m[sel].underbody_id.nunique()} ({int(sel.sum())})"
            out.append(row)
    return pd.DataFrame(out)
