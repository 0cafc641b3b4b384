"""ROI binary masking with a margin (paper section 4.4).

The ROI is the template's sealant trajectory grown by a margin, so small misalignments do
not cut sealant off. Every crop is cut at its matched location, so the viewpoint's ROI
applies to it unchanged; on a full frame it is placed at the matched offset.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from lib.fileio import read_image, write_image


def roi_from_trajectory(trajectory: np.ndarray, margin_px: float) -> np.ndarray:
    """Trajectory mask dilated by ``margin_px`` (elliptical), uint8 {0,255}."""
    if margin_px < 0:
        raise ValueError(f"margin must be >= 0, got {margin_px}")
    m = (trajectory > 0).astype(np.uint8) * 255
    k = int(round(margin_px))
    if k == 0:
        return m
    return cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))


def write_roi_masks(
    data_root: Path | str, margin_paper_px: float, viewpoints=("front", "center", "back")
) -> dict:
    """Write ``roi/<view>.png`` from each template's trajectory with the margin (paper px x scale)."""
    root = Path(data_root)
    meta = json.loads((root / "templates" / "templates.json").read_text())
    scale = meta.get("scale") or 1.0
    out = {}
    for view in viewpoints:
        traj = read_image(root / "templates" / f"{view}_trajectory.png", cv2.IMREAD_GRAYSCALE)
        roi = roi_from_trajectory(traj, margin_paper_px * scale)
        rel = f"roi/{view}.png"
        write_image(root / rel, roi)
        out[view] = rel
    return out


def apply_roi(image: np.ndarray, roi: np.ndarray, fill: int | float = 0) -> np.ndarray:
    """Keep the ROI, set everything else to ``fill`` (images and anomaly maps alike)."""
    if image.shape[:2] != roi.shape[:2]:
        raise ValueError(f"ROI size {roi.shape[:2]} differs from image size {image.shape[:2]}")
    keep = roi > 0
    out = np.full_like(image, fill)
    out[keep] = image[keep]
    return out


def place_in_frame(roi: np.ndarray, frame_shape, x: int, y: int) -> np.ndarray:
    """The ROI placed at a matched offset (x, y) of a full frame; parts outside are cut."""
    fh, fw = frame_shape[:2]
    out = np.zeros((fh, fw), np.uint8)
    h, w = roi.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(fw, x + w), min(fh, y + h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = roi[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


def kept_fraction(roi: np.ndarray) -> float:
    return float((roi > 0).mean())


def gt_outside_roi(mask: np.ndarray, roi: np.ndarray) -> int:
    """Number of ground-truth defect pixels the ROI would cut away."""
    if mask.shape != roi.shape:
        raise ValueError(f"mask size {mask.shape} differs from ROI size {roi.shape}")
    return int(((mask > 0) & (roi == 0)).sum())
