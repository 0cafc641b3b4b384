"""``data_manifest.csv``: one row per image, the single contract between stages.

Paths are relative to the data root and must stay inside it. ``read_manifest`` validates and
fails with a message naming the file, row (1-based data row, as a spreadsheet shows it minus the
header) and column. Viewpoints come from the known set (front/center/back) unless the data
declares its own in ``data_manifest.json`` beside the manifest (imported data does).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pandas as pd

from lib.config import VIEWPOINTS
from lib.fileio import sha256_file, write_csv, write_json

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
PATH_COLUMNS = ("image_path", "mask_path", "roi_path")
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


def image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of an image file, from the PNG header when it is one (no decoding), else OpenCV."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return int(h), int(w)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return None if img is None else img.shape[:2]


def _outside_root(rel: str) -> bool:
    p = PurePosixPath(rel.replace("\\", "/"))
    return p.is_absolute() or Path(rel).is_absolute() or os.path.normpath(str(p)).startswith("..")


def declared_viewpoints(path: Path | str) -> tuple[str, ...] | None:
    """The viewpoints ``data_manifest.json`` (beside the manifest) declares, if it exists."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        views = json.loads(side.read_text())["viewpoints"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ManifestError(f'{side}: expected {{"viewpoints": [...]}}: {exc}') from None
    if not isinstance(views, list) or not views or not all(isinstance(v, str) and v for v in views):
        raise ManifestError(f"{side}: 'viewpoints' must be a non-empty list of names, got {views!r}")
    return tuple(views)


def declare_viewpoints(path: Path | str, viewpoints) -> Path:
    """Write ``data_manifest.json`` declaring the viewpoints of imported data."""
    return write_json(Path(path).with_suffix(".json"), {"viewpoints": sorted(set(viewpoints))})


def validate(
    df: pd.DataFrame,
    path="data_manifest.csv",
    data_root=None,
    check_files: bool = False,
    verify: bool = False,
    viewpoints=None,
) -> pd.DataFrame:
    """Check columns, values and paths; with ``check_files`` the files and their sizes, with
    ``verify`` also each image's SHA-256. Returns the frame unchanged."""
    known = tuple(viewpoints) if viewpoints is not None else VIEWPOINTS
    root = Path(data_root) if data_root is not None else Path(path).parent
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
        if r.viewpoint not in known:
            _fail(
                path,
                i,
                "viewpoint",
                f"unknown viewpoint {r.viewpoint!r}; expected one of {'/'.join(known)}"
                + (
                    ""
                    if viewpoints is not None
                    else " (imported data declares its own in data_manifest.json)"
                ),
            )
        for col in PATH_COLUMNS:
            rel = str(getattr(r, col))
            if rel and _outside_root(rel):
                _fail(path, i, col, f"path {rel!r} leaves the data root; paths are relative to {root}")
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
        if check_files or verify:
            _check_row_files(path, i, r, root, verify)
    leak = df.groupby("underbody_id").split.nunique()
    leak = leak[leak > 1]
    if len(leak):
        first = leak.index[0]
        i = int(df.index[df.underbody_id == first][0]) + 1
        _fail(path, i, "split", f"underbody {first!r} appears in several splits (leakage)")
    return df


def _check_row_files(path, i: int, r, root: Path, verify: bool) -> None:
    resolved_root = root.resolve()
    sizes = {}
    for col in PATH_COLUMNS:
        rel = str(getattr(r, col))
        if not rel:
            continue
        f = root / rel
        if not f.is_file():
            _fail(path, i, col, f"file not found: {f}")
        if not f.resolve().is_relative_to(resolved_root):
            _fail(path, i, col, f"{f} resolves to {f.resolve()}, outside the data root {resolved_root}")
        sizes[col] = image_size(f)
        if sizes[col] is None:
            _fail(path, i, col, f"not a readable image: {f}")
    for col in ("mask_path", "roi_path"):
        if col in sizes and sizes[col] != sizes["image_path"]:
            what = "mask" if col == "mask_path" else "ROI mask"
            _fail(path, i, col, f"{what} size {sizes[col]} differs from image size {sizes['image_path']}")
    if verify:
        digest = sha256_file(root / r.image_path)
        if digest != str(r.sha256):
            _fail(
                path,
                i,
                "sha256",
                f"{root / r.image_path} has SHA-256 {digest[:12]}..., the manifest says {str(r.sha256)[:12]}...",
            )


def read_manifest(
    path: Path | str, data_root=None, check_files: bool = False, verify: bool = False, viewpoints=None
) -> pd.DataFrame:
    """Read and validate a manifest: ``check_files`` checks every file exists inside the data root
    with matching image/mask/ROI sizes; ``verify`` also checks each image's SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    df = pd.read_csv(path, keep_default_na=False, dtype={"region": str, "defect_type": str})
    if viewpoints is None:
        viewpoints = declared_viewpoints(path)
    return validate(df, path, data_root, check_files, verify, viewpoints)


def write_manifest(path: Path | str, df: pd.DataFrame, viewpoints=None) -> Path:
    validate(df, path, viewpoints=viewpoints if viewpoints is not None else declared_viewpoints(path))
    ordered = df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]
    return write_csv(path, ordered)


def area_ratio(mask: np.ndarray | None) -> float:
    """Eq. 14: share of the image's pixels that are defective (non-zero)."""
    if mask is None:
        return 0.0
    return float((mask > 0).sum()) / float(mask.shape[0] * mask.shape[1])
