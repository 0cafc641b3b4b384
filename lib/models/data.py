"""Images for the models, read through the manifest: resized, optionally ROI-masked (the † variant)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.fileio import read_image
from lib.masking import apply_roi


def load_images(
    data_root, rows: pd.DataFrame, size: tuple[int, int], masked: bool, progress=False
) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR at ``size`` (width, height); masked: ROI applied before resizing."""
    root = Path(data_root)
    out = np.empty((len(rows), size[1], size[0], 3), np.uint8)
    rois = {}
    for i, r in enumerate(
        tqdm(list(rows.itertuples(index=False)), desc="loading", disable=not progress, leave=False)
    ):
        img = read_image(root / r.image_path, cv2.IMREAD_COLOR)
        if masked:
            if not r.roi_path:
                raise ValueError(f"image {r.image_id} has no roi_path: the masked variant needs one")
            if r.roi_path not in rois:
                rois[r.roi_path] = read_image(root / r.roi_path, cv2.IMREAD_GRAYSCALE)
            img = apply_roi(img, rois[r.roi_path])
        out[i] = resize_image(img, size)
    return out


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size`` (width, height) with the interpolation that suits the direction.

    Area averaging when shrinking in both directions (no aliasing); bilinear as soon as either
    direction enlarges, where OpenCV's INTER_AREA degenerates to nearest-neighbour-like blocks.
    """
    h, w = img.shape[:2]
    shrinking = size[0] <= w and size[1] <= h
    return cv2.resize(img, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def select(manifest: pd.DataFrame, viewpoint: str, split: str, label: str | None = None) -> pd.DataFrame:
    sel = (manifest.viewpoint == viewpoint) & (manifest.split == split)
    if label is not None:
        sel &= manifest.label == label
    rows = manifest[sel].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"no {label or ''} images for viewpoint {viewpoint!r} in split {split!r}")
    return rows
