"""EfficientAD's training images besides the normals: offline photographs for the penalty term and
the teacher's distillation, random crops of them, and the autoencoder's colour jitter."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from lib.models.data import resize_image


@lru_cache(maxsize=1)
def offline_photos() -> tuple:
    """Real photographs that ship inside packages (no download): scikit-image and scikit-learn."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"):
        out.append(getattr(data, name)()[..., ::-1].copy())
    for name in ("camera", "moon", "coins", "page", "brick", "grass", "gravel"):
        out.append(cv2.cvtColor(getattr(data, name)(), cv2.COLOR_GRAY2BGR))
    out += [img[..., ::-1].copy() for img in load_sample_images().images]
    return tuple(out)


def random_crop(img: np.ndarray, size, rng) -> np.ndarray:
    w, h = size
    s = rng.uniform(0.3, 1.0)
    ch, cw = max(8, int(img.shape[0] * s)), max(8, int(img.shape[1] * s))
    y, x = int(rng.integers(0, img.shape[0] - ch + 1)), int(rng.integers(0, img.shape[1] - cw + 1))
    out = resize_image(img[y : y + ch, x : x + cw], (w, h))
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def colour_jitter(img: np.ndarray, rng) -> np.ndarray:
    """The original's autoencoder augmentation: ONE of brightness, contrast or saturation (chosen at
    random), factor uniform in [0.8, 1.2], with torchvision's definitions (contrast blends with the
    mean grey level, saturation with the grey image)."""
    x = img.astype(np.float32)
    f = rng.uniform(0.8, 1.2)
    kind = int(rng.integers(3))
    grey = (0.114 * x[..., 0] + 0.587 * x[..., 1] + 0.299 * x[..., 2])[..., None]  # BGR
    if kind == 0:
        x = x * f
    elif kind == 1:
        x = (x - grey.mean()) * f + grey.mean()
    else:
        x = (x - grey) * f + grey
    return np.clip(x, 0, 255).astype(np.uint8)
