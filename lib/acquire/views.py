"""Looking at the simulated line: reuse-or-render, viewpoint crops at known poses, difficulty stats.

Crops here use the simulator's own poses (ground truth); notebook 01 finds them by
template matching instead, as the paper does.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.acquire import sealant_line as sl
from lib.config import Profile
from lib.fileio import read_image


def load_or_simulate(
    profile: Profile, data_root: Path | str, seed: int | None = None, force: bool = False, workers=None
) -> dict:
    """Reuse a finished simulation of the same profile, seed and scene under ``data_root``, else render
    it (a root rendered by older simulator code or another scene is rendered anew)."""
    root = Path(data_root)
    meta_path = root / "simulation.json"
    want_seed = profile.seed if seed is None else int(seed)
    if meta_path.is_file() and not force:
        meta = json.loads(meta_path.read_text())
        if (
            meta.get("profile") == profile.name
            and meta.get("seed") == want_seed
            and meta.get("scene") == profile.scene_config.identity()
        ):
            meta["reused"] = True
            return meta
    meta = sl.simulate_line(profile, root, seed=want_seed, workers=workers)
    meta["reused"] = False
    return meta


def crop_at_pose(frame: np.ndarray, matrix: np.ndarray, viewpoint: str, profile: Profile) -> np.ndarray:
    """Cut the viewpoint crop where the pose puts it (rounded to whole pixels)."""
    x, y = sl.viewpoint_origin_in_frame(matrix, viewpoint, profile.scale)
    w, h = profile.crop_size
    x, y = int(round(x)), int(round(y))
    fh, fw = frame.shape[:2]
    if x < 0 or y < 0 or x + w > fw or y + h > fh:
        raise ValueError(f"viewpoint {viewpoint!r} is not fully inside the frame at this pose ({x}, {y})")
    return frame[y : y + h, x : x + w]


def peak_crop(
    data_root, pass_id: int, viewpoint: str, profile: Profile, poses=None, passes=None, frame_index=None
):
    """(crop, gt_crop, frame_index) of a pass at the frame where the viewpoint is best visible."""
    root = Path(data_root)
    poses = sl.read_poses(root) if poses is None else poses
    passes = sl.read_passes(root) if passes is None else passes
    k = sl.peak_frame(poses, pass_id, viewpoint, profile) if frame_index is None else int(frame_index)
    video = root / passes.loc[passes.pass_id == pass_id, "video_path"].iloc[0]
    frame = sl.read_frame(video, k)
    m = sl.frame_pose(poses, pass_id, k)
    gt = sl.frame_defect_mask(root, pass_id, k, poses=poses, passes=passes)
    return crop_at_pose(frame, m, viewpoint, profile), crop_at_pose(gt, m, viewpoint, profile), k


def clutter_variation(crops: list[np.ndarray], roi_mask: np.ndarray) -> dict:
    """Per-pixel std of (per-image standardised) grey level across normal cars, inside vs outside the ROI.

    High variation outside the ROI (manual sealant, plugs, clips) is what the masking
    study removes; the ratio says how much of the car-to-car change lies outside.
    """
    if len(crops) < 2:
        raise ValueError("clutter_variation needs at least two crops")
    grey = np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2GRAY).astype(np.float32) for c in crops])
    # remove each car's global gain/offset (illumination drift) so the map shows content changes
    grey = (grey - grey.mean(axis=(1, 2), keepdims=True)) / (grey.std(axis=(1, 2), keepdims=True) + 1e-6)
    grey = grey * 40.0 + 128.0  # back to grey-level-like units (std 40 per image)
    std = grey.std(axis=0)
    roi = roi_mask > 0
    if roi.shape != std.shape:
        raise ValueError(f"ROI mask shape {roi.shape} differs from crop shape {std.shape}")
    return {
        "std_map": std,
        "mean_std_inside_roi": float(std[roi].mean()) if roi.any() else float("nan"),
        "mean_std_outside_roi": float(std[~roi].mean()) if (~roi).any() else float("nan"),
        "roi_fraction": float(roi.mean()),
    }


def defect_contrast(crop: np.ndarray, gt: np.ndarray, trajectory: np.ndarray) -> dict:
    """How visible a defect is: its area ratio (eq. 14) and grey-level contrast of sealant vs paint nearby."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    m = gt > 0
    ring = cv2.dilate(m.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    bead = ring & (trajectory > 0) & ~m
    paint = ring & (trajectory == 0)
    contrast = float(grey[bead].mean() - grey[paint].mean()) if bead.any() and paint.any() else float("nan")
    return {"area_ratio": float(m.mean()), "sealant_minus_paint": contrast}


def read_template_set(data_root, viewpoint: str) -> dict:
    """Template, trajectory, ROI and region images of one viewpoint."""
    tdir = Path(data_root) / "templates"
    return {
        "template": read_image(tdir / f"{viewpoint}.png", cv2.IMREAD_COLOR),
        "trajectory": read_image(tdir / f"{viewpoint}_trajectory.png", cv2.IMREAD_GRAYSCALE),
        "roi": read_image(tdir / f"{viewpoint}_roi.png", cv2.IMREAD_GRAYSCALE),
        "regions": read_image(tdir / f"{viewpoint}_regions.png", cv2.IMREAD_GRAYSCALE),
    }


def data_size_bytes(data_root) -> int:
    return int(sum(p.stat().st_size for p in Path(data_root).rglob("*") if p.is_file()))


def defective_passes(passes: pd.DataFrame) -> pd.DataFrame:
    return passes[passes.defective == 1].reset_index(drop=True)
