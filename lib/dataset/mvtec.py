"""Import an MVTec-AD-style folder as a manifest, so the models and metrics run on data you have.

Layout: ``train/good/*.png``, ``test/good/*.png``, ``test/<type>/*.png`` and
``ground_truth/<type>/<name>_mask.png``. MVTec has no validation split: test images are split
evenly (seeded) into validation and test, normal and anomalous alike, per defect type.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.dataset import manifest as mf
from lib.fileio import read_image, sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def import_mvtec(folder, viewpoint: str = "mvtec", seed: int = 0, write: bool = True) -> pd.DataFrame:
    """Build (and by default write ``<folder>/data_manifest.csv``) a manifest for an MVTec-style folder."""
    root = Path(folder)
    train_dir = root / "train" / "good"
    test_dir = root / "test"
    if not train_dir.is_dir():
        raise FileNotFoundError(f"MVTec layout: no folder {train_dir}")
    if not test_dir.is_dir():
        raise FileNotFoundError(f"MVTec layout: no folder {test_dir}")
    rng = np.random.default_rng([seed, 53])
    rows = []

    def add(path: Path, split: str, defect: str, mask: Path | None):
        rel = path.relative_to(root).as_posix()
        m = None
        if mask is not None:
            m = read_image(mask, cv2.IMREAD_GRAYSCALE)
            img = read_image(path, cv2.IMREAD_UNCHANGED)
            if m.shape[:2] != img.shape[:2]:
                raise ValueError(
                    f"mask {mask} is {m.shape[1]}x{m.shape[0]}, image {path} is {img.shape[1]}x{img.shape[0]}"
                )
        uid = rel.rsplit(".", 1)[0].replace("/", "_")
        rows.append(
            {
                "image_id": f"{viewpoint}/{split}/{uid}",
                "underbody_id": uid,
                "viewpoint": viewpoint,
                "split": split,
                "label": "anomalous" if mask is not None else "normal",
                "source": "real" if mask is not None else "none",
                "defect_type": defect,
                "region": "",
                "frame_index": 0,
                "image_path": rel,
                "mask_path": mask.relative_to(root).as_posix() if mask is not None else "",
                "roi_path": "",
                "area_ratio": round(mf.area_ratio(m), 8),
                "sha256": sha256_file(path),
            }
        )

    for p in _images(train_dir):
        add(p, "train", "", None)
    for type_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
        files = _images(type_dir)
        order = rng.permutation(len(files))
        for rank, idx in enumerate(order):
            p = files[idx]
            split = ("val", "test")[rank % 2]
            if type_dir.name == "good":
                add(p, split, "", None)
            else:
                mask = root / "ground_truth" / type_dir.name / f"{p.stem}_mask.png"
                if not mask.is_file():
                    raise FileNotFoundError(f"no ground-truth mask for {p}: expected {mask}")
                add(p, split, type_dir.name, mask)
    df = pd.DataFrame(rows)
    if df.empty or not (df.split == "train").any():
        raise ValueError(f"no training images found under {train_dir}")
    mf.validate(df, root / "data_manifest.csv", viewpoints=[viewpoint])
    if write:
        mf.declare_viewpoints(root / "data_manifest.csv", [viewpoint])
        mf.write_manifest(root / "data_manifest.csv", df, viewpoints=[viewpoint])
    return df
