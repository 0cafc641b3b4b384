"""``data_manifest.csv``: one row per image, the single contract between stages.

Paths are relative to the data root. ``read_manifest`` validates and fails with a message
naming the file, row (1-based data row, as a spreadsheet shows it minus the header) and column.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.config import VIEWPOINTS
from lib.fileio import write_csv

COLUMNS = (
    "image_id",
    "underbody_id",
    "viewpoint",
    "split",
    "label",
    "source",
    "defect_type",
    "region",
    "frame_index",
    "image_path",
    "mask_path",
    "roi_path",
    "area_ratio",
    "sha256",
)
ALLOWED = {
    "split": ("train", "val", "test"),
    "label": ("normal", "anomalous"),
    "source": ("real", "synthetic", "none"),
}


class ManifestError(ValueError):
    """A manifest problem, with the file, row and column in the message."""


def _fail(path, row: int | None, column: str | None, msg: str):
    where = f"{path}"
    if row is not None:
        where += f" row {row}"
    if column is not None:
        where += f", column {column!r}"
    raise ManifestError(f"{where}: {msg}")


def validate(
    df: pd.DataFrame, path="data_manifest.csv", data_root=None, check_files: bool = False
) -> pd.DataFrame:
    """Check columns, values and (optionally) the files; return the frame unchanged."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        _fail(path, None, None, f"missing columns {missing}")
    dup = df.image_id[df.image_id.duplicated()]
    if len(dup):
        _fail(path, int(dup.index[0]) + 1, "image_id", f"duplicate image_id {dup.iloc[0]!r}")
    for i, r in enumerate(df.itertuples(index=False), start=1):
        for col, allowed in ALLOWED.items():
            if getattr(r, col) not in allowed:
                _fail(path, i, col, f"unknown value {getattr(r, col)!r}; expected one of {'/'.join(allowed)}")
        if r.viewpoint not in VIEWPOINTS and not str(r.viewpoint):
            _fail(path, i, "viewpoint", "empty viewpoint")
        if r.label == "anomalous" and not str(r.mask_path):
            _fail(path, i, "mask_path", "an anomalous image needs a ground-truth mask")
        if r.label == "normal" and r.source != "none":
            _fail(path, i, "source", f"a normal image has source 'none', got {r.source!r}")
        if r.label == "anomalous" and r.source == "none":
            _fail(path, i, "source", "an anomalous image needs source 'real' or 'synthetic'")
        if r.split == "train" and r.label != "normal":
            _fail(path, i, "label", "the train split holds normal images only")
        try:
            ar = float(r.area_ratio)
        except (TypeError, ValueError):
            _fail(path, i, "area_ratio", f"not a number: {r.area_ratio!r}")
        if not 0.0 <= ar <= 1.0:
            _fail(path, i, "area_ratio", f"must lie in [0, 1], got {ar}")
        if check_files:
            root = Path(data_root) if data_root is not None else Path(path).parent
            for col in ("image_path", "mask_path", "roi_path"):
                rel = str(getattr(r, col))
                if rel and not (root / rel).is_file():
                    _fail(path, i, col, f"file not found: {root / rel}")
            if str(r.mask_path):
                img = cv2.imread(str(root / r.image_path), cv2.IMREAD_UNCHANGED)
                msk = cv2.imread(str(root / r.mask_path), cv2.IMREAD_UNCHANGED)
                if img is None or msk is None or img.shape[:2] != msk.shape[:2]:
                    shape_i = None if img is None else img.shape[:2]
                    shape_m = None if msk is None else msk.shape[:2]
                    _fail(path, i, "mask_path", f"mask size {shape_m} differs from image size {shape_i}")
    leak = df.groupby("underbody_id").split.nunique()
    leak = leak[leak > 1]
    if len(leak):
        first = leak.index[0]
        i = int(df.index[df.underbody_id == first][0]) + 1
        _fail(path, i, "split", f"underbody {first!r} appears in several splits (leakage)")
    return df


def read_manifest(path: Path | str, data_root=None, check_files: bool = False) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    df = pd.read_csv(path, keep_default_na=False, dtype={"region": str, "defect_type": str})
    return validate(df, path, data_root, check_files)


def write_manifest(path: Path | str, df: pd.DataFrame) -> Path:
    validate(df, path)
    ordered = df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]
    return write_csv(path, ordered)


def area_ratio(mask: np.ndarray | None) -> float:
    """Eq. 14: share of the image's pixels that are defective (non-zero)."""
    if mask is None:
        return 0.0
    return float((mask > 0).sum()) / float(mask.shape[0] * mask.shape[1])
