"""MemSeg's anomaly simulation (paper section 5.2): Perlin-noise masks, texture and structure sources.

Texture sources exist offline: scikit-image's texture photographs (brick, grass, gravel) and
procedural noise textures. Structural anomalies rearrange the image's own grid cells (grid 8).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import cv2
import numpy as np


def perlin_noise(shape, res, rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise in about [-1, 1]; ``res`` periods along (y, x)."""
    h, w = shape
    ry, rx = res
    gy, gx = int(np.ceil(h / ry)) * ry, int(np.ceil(w / rx)) * rx
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    yy, xx = np.mgrid[0:gy, 0:gx]
    fy, fx = yy * ry / gy, xx * rx / gx
    iy, ix = fy.astype(int), fx.astype(int)
    ty, tx = fy - iy, fx - ix

    def dot(oy, ox):
        g = grads[iy + oy, ix + ox]
        return g[..., 0] * (tx - ox) + g[..., 1] * (ty - oy)

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    u, v = fade(tx), fade(ty)
    n0 = dot(0, 0) * (1 - u) + dot(0, 1) * u
    n1 = dot(1, 0) * (1 - u) + dot(1, 1) * u
    return (np.sqrt(2) * (n0 * (1 - v) + n1 * v))[:h, :w]


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    perlin_scale: int = 5  # periods drawn as 2**U{min_scale..scale-1}
    min_perlin_scale: int = 3
    perlin_threshold: float = 0.5
    anomaly_probability: float = 0.9
    transparency_range: tuple = (0.8, 1.0)
    structure_grid: int = 8
    texture_probability: float = 0.5  # texture vs structure source


def perlin_mask(shape, cfg: SynthesisConfig, rng, foreground: np.ndarray | None = None) -> np.ndarray:
    """Binary Perlin mask (float32 {0,1}) restricted to the foreground; retried until non-empty."""
    for _ in range(20):
        sy = 2 ** int(rng.integers(cfg.min_perlin_scale, cfg.perlin_scale))
        sx = 2 ** int(rng.integers(cfg.min_perlin_scale, cfg.perlin_scale))
        noise = perlin_noise(shape, (sy, sx), rng)
        angle = rng.uniform(-90, 90)
        m = cv2.getRotationMatrix2D((shape[1] / 2, shape[0] / 2), angle, 1.0)
        noise = cv2.warpAffine(
            noise.astype(np.float32), m, (shape[1], shape[0]), borderMode=cv2.BORDER_REFLECT
        )
        mask = (noise > cfg.perlin_threshold).astype(np.float32)
        if foreground is not None:
            mask *= (foreground > 0).astype(np.float32)
        if mask.sum() > 0:
            return mask
    return np.zeros(shape, np.float32)


@lru_cache(maxsize=1)
def _texture_photos() -> tuple:
    from skimage import data

    out = []
    for name in ("brick", "grass", "gravel"):
        img = getattr(data, name)()
        out.append(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img[..., ::-1].copy())
    return tuple(out)


def texture_source(shape, rng) -> np.ndarray:
    """A random offline texture (photo crop or procedural noise), BGR uint8, resized to ``shape``."""
    h, w = shape
    photos = _texture_photos()
    if rng.random() < 0.7:
        img = photos[int(rng.integers(len(photos)))]
        s = int(rng.integers(min(img.shape[:2]) // 3, min(img.shape[:2])))
        y, x = int(rng.integers(0, img.shape[0] - s + 1)), int(rng.integers(0, img.shape[1] - s + 1))
        tex = cv2.resize(img[y : y + s, x : x + s], (w, h))
        tint = rng.uniform(0.6, 1.4, 3)
        return np.clip(tex * tint, 0, 255).astype(np.uint8)
    noise = perlin_noise((h, w), (int(rng.integers(2, 16)), int(rng.integers(2, 16))), rng)
    colour = rng.uniform(0, 255, 3)
    return np.clip(colour[None, None] * (0.6 + 0.4 * noise[..., None]), 0, 255).astype(np.uint8)


def structure_source(image: np.ndarray, grid: int, rng) -> np.ndarray:
    """The image cut into grid x grid cells, shuffled and randomly flipped (MemSeg's structural anomaly)."""
    h, w = image.shape[:2]
    ch, cw = h // grid, w // grid
    base = cv2.resize(image, (cw * grid, ch * grid))
    cells = [base[i * ch : (i + 1) * ch, j * cw : (j + 1) * cw] for i in range(grid) for j in range(grid)]
    order = rng.permutation(len(cells))
    rows = []
    for i in range(grid):
        row = []
        for j in range(grid):
            c = cells[order[i * grid + j]]
            if rng.random() < 0.5:
                c = c[::-1]
            if rng.random() < 0.5:
                c = c[:, ::-1]
            row.append(c)
        rows.append(np.concatenate(row, axis=1))
    return cv2.resize(np.concatenate(rows, axis=0), (w, h))


def synthesize(
    image: np.ndarray, cfg: SynthesisConfig, rng, foreground=None
) -> tuple[np.ndarray, np.ndarray]:
    """(anomalous image, mask): with probability 0.9 a Perlin-shaped patch of texture or structure."""
    h, w = image.shape[:2]
    if rng.random() >= cfg.anomaly_probability:
        return image, np.zeros((h, w), np.float32)
    mask = perlin_mask((h, w), cfg, rng, foreground)
    if rng.random() < cfg.texture_probability:
        src = texture_source((h, w), rng)
    else:
        src = structure_source(image, cfg.structure_grid, rng)
    beta = rng.uniform(*cfg.transparency_range)
    m = mask[..., None]
    out = image * (1 - m) + (beta * src + (1 - beta) * image) * m
    return np.clip(out, 0, 255).astype(np.uint8), mask
