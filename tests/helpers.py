"""Small generated data shared by tests."""

import numpy as np


def toy_images(n, seed=0, defect=False):
    """Aligned 'crops': a fixed pattern plus noise; a defect is a bright square at (20, 30)."""
    rng = np.random.default_rng(seed)
    base = (np.indices((48, 64)).sum(axis=0) % 16 * 8).astype(np.float32)
    out = np.empty((n, 48, 64, 3), np.uint8)
    for i in range(n):
        img = base[..., None] + rng.normal(0, 3, (48, 64, 3))
        if defect:
            img[20:26, 30:36] += 90
        out[i] = np.clip(img, 0, 255)
    return out
