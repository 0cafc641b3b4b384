"""A small MVTec-style folder of *real* photographs with pasted defects, built offline.

For checking the models on real images (``benchmarks/real_images.py``) and in tests. The normal
images are random crops of photographs that ship inside packages and that no model uses as a
training aid (EfficientAD's penalty images and MemSeg's anomaly textures are other photographs):
scikit-image's ``cell`` (microscopy, grey) and ``retina`` (fundus, colour). Defects, each with an
exact ground-truth mask:

- ``patch``: a disc of another real photograph (matplotlib's ``grace_hopper``, scikit-image's
  ``clock``) blended in with a soft edge;
- ``scratch``: a thin curved stroke, darker or brighter than its surroundings;
- ``smudge``: a local blur with a small brightness change (low contrast).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lib.fileio import write_image

CATEGORIES = ("cell", "retina")
DEFECT_KINDS = ("patch", "scratch", "smudge")


def source_photo(name: str) -> np.ndarray:
    """A BGR uint8 photograph shipped inside a package (no download)."""
    from skimage import data

    if name == "grace_hopper":
        import matplotlib.cbook as cbook

        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            buf = np.frombuffer(fh.read(), np.uint8)
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    img = getattr(data, name)()
    if name == "retina":  # the fundus only, not the black surround
        img = img[350:1050, 350:1050]
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img[..., ::-1].copy()


def random_crop(photo: np.ndarray, size: int, rng, zoom: float = 1.0) -> np.ndarray:
    """A size x size crop (of a (size * zoom)^2 window, resized), randomly flipped."""
    win = int(min(size * zoom, *photo.shape[:2]))
    y = int(rng.integers(0, photo.shape[0] - win + 1))
    x = int(rng.integers(0, photo.shape[1] - win + 1))
    crop = cv2.resize(photo[y : y + win, x : x + win], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    return np.ascontiguousarray(crop)


def add_defect(image: np.ndarray, kind: str, rng, foreign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(defective image, GT mask uint8 {0,255}) for one defect of ``kind``."""
    h, w = image.shape[:2]
    img = image.astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    cy, cx = int(rng.integers(h // 5, 4 * h // 5)), int(rng.integers(w // 5, 4 * w // 5))
    if kind == "patch":
        r = int(rng.integers(max(3, h // 16), max(4, h // 8)))
        cv2.circle(mask, (cx, cy), r, 255, -1)
        other = random_crop(foreign, h, rng).astype(np.float32)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.0)[..., None]
        out = img * (1 - alpha) + other * alpha
    elif kind == "scratch":
        pts = np.array(
            [
                [cx + int(rng.integers(-w // 4, w // 4)), cy + int(rng.integers(-h // 4, h // 4))]
                for _ in range(3)
            ]
        )
        cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 255, max(1, h // 96))
        delta = rng.choice([-1.0, 1.0]) * rng.uniform(50, 90)
        out = img + delta * (mask[..., None] / 255.0)
    elif kind == "smudge":
        r = int(rng.integers(max(3, h // 14), max(4, h // 7)))
        cv2.circle(mask, (cx, cy), r, 255, -1)
        blurred = cv2.GaussianBlur(img, (0, 0), 4) * rng.uniform(0.75, 0.85)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.5)[..., None]
        out = img * (1 - alpha) + blurred * alpha
    else:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8), mask


def make_photo_texture_folder(
    root,
    categories=CATEGORIES,
    size: int = 256,
    n_train: int = 40,
    n_good: int = 10,
    n_defect: int = 10,
    seed: int = 0,
    zoom: float = 1.0,
) -> list[Path]:
    """Write one MVTec-style folder per category under ``root``; returns the category folders."""
    foreign = [source_photo("grace_hopper"), source_photo("clock")]
    out = []
    for k, cat in enumerate(categories):
        photo = source_photo(cat)
        rng = np.random.default_rng([seed, k])
        base = Path(root) / cat
        for i in range(n_train):
            write_image(base / "train" / "good" / f"{i:03d}.png", random_crop(photo, size, rng, zoom))
        for i in range(n_good):
            write_image(base / "test" / "good" / f"{i:03d}.png", random_crop(photo, size, rng, zoom))
        for i in range(n_defect):
            kind = DEFECT_KINDS[i % len(DEFECT_KINDS)]
            img, mask = add_defect(random_crop(photo, size, rng, zoom), kind, rng, foreign[i % 2])
            write_image(base / "test" / kind / f"{i:03d}.png", img)
            write_image(base / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
        out.append(base)
    return out
