"""Region-centric synthetic sealant defects on normal crops (paper sections 4.2, 4.3; Table 1).

The paper edits normal frames with GIMP's Resynthesizer (inpainting and resynthesis). Here the
same idea with OpenCV: the bead is removed from a local window by inpainting from the paint
around it (plus matched grain, since inpainting is smooth), and each defect is an alpha composite
of the original, that bead-free background and shifted copies of the bead:

- missing: the background over a bead segment;
- hole: the background over a small disc on the bead, with a soft darker rim;
- narrowing: the background over the bead's outer band along a segment;
- misalignment: the segment's bead moved sideways, the gap filled with background;
- bifurcation: two thinner copies of the segment's bead, pushed apart.

Alpha edges are feathered, so nothing changes beyond a small blending band around the GT mask,
which covers exactly the changed sealant pixels (removed or added bead).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

DEFECT_TYPES = ("bifurcation", "missing", "narrowing", "misalignment", "hole")
#: Table 1: per-region count of each type per viewpoint (regions: front 4, center 8, back 5).
TABLE1_PER_REGION = {
    "front": {"bifurcation": 2, "missing": 6, "narrowing": 1, "misalignment": 3, "hole": 2},
    "center": {"bifurcation": 1, "missing": 4, "narrowing": 1, "misalignment": 1, "hole": 1},
    "back": {"bifurcation": 1, "missing": 6, "narrowing": 1, "misalignment": 3, "hole": 1},
}
N_REGIONS = {"front": 4, "center": 8, "back": 5}
BEAD_WIDTH = 14.0  # nominal bead width at paper scale (px)
FEATHER_PX = 1.2  # Gaussian sigma of the alpha edges, in pixels at paper scale x scale


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """One synthetic defect to make: where (region), what and how big (paper px)."""

    defect_type: str
    region: int
    length: float  # along the bead (hole: diameter), paper px
    strength: float  # narrowing: width factor; misalignment: shift in bead widths; bifurcation: offset
    seed: int


def table1_counts(fraction: float = 1.0) -> dict:
    """Synthetic defects per viewpoint and type: Table 1 (fraction 1) or scaled down (>= 1 each)."""
    out = {}
    for view, per in TABLE1_PER_REGION.items():
        out[view] = {t: max(1, int(round(c * N_REGIONS[view] * fraction))) for t, c in per.items()}
    return out


def plan_specs(view: str, fraction: float, seed: int) -> list[SyntheticSpec]:
    """Specs for one viewpoint; regions assigned round-robin so every region gets its series."""
    rng = np.random.default_rng([seed, 41, N_REGIONS[view]])
    specs = []
    k = 0
    for kind, n in table1_counts(fraction)[view].items():
        for _ in range(n):
            region = k % N_REGIONS[view] + 1
            k += 1
            if kind == "hole":
                length, strength = rng.uniform(8, 18), 0.0
            elif kind == "missing":
                length, strength = rng.uniform(20, 140), 0.0
            elif kind == "narrowing":
                length, strength = rng.uniform(40, 150), rng.uniform(0.3, 0.6)
            elif kind == "misalignment":
                length, strength = rng.uniform(60, 180), rng.uniform(0.6, 1.1)
            else:
                length, strength = rng.uniform(50, 150), rng.uniform(0.5, 0.8)
            specs.append(
                SyntheticSpec(kind, region, float(length), float(strength), int(rng.integers(2**31)))
            )
    return specs


def _feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(0.5, sigma))


def _bead_axis(traj: np.ndarray, point, radius: int):
    """Unit direction of the bead near ``point`` (PCA of trajectory pixels) and its anisotropy."""
    y, x = point
    h, w = traj.shape
    y0, y1, x0, x1 = max(0, y - radius), min(h, y + radius + 1), max(0, x - radius), min(w, x + radius + 1)
    ys, xs = np.nonzero(traj[y0:y1, x0:x1])
    if len(xs) < 5:
        return None, 0.0
    pts = np.stack([xs + x0 - x, ys + y0 - y], axis=1).astype(np.float64)
    cov = np.cov(pts.T)
    evals, evecs = np.linalg.eigh(cov)
    return evecs[:, 1], float(evals[1] / max(evals[0], 1e-6))


def pick_site(traj: np.ndarray, regions: np.ndarray, region: int, scale: float, rng) -> tuple | None:
    """A point on the trajectory inside ``region`` where the bead runs straight (no crossing)."""
    ys, xs = np.nonzero((traj > 0) & (regions == region))
    if len(xs) == 0:
        return None
    radius = int(max(6, 4 * BEAD_WIDTH * scale))  # a few bead widths: sees a crossing bead
    for idx in rng.permutation(len(xs))[:200]:
        p = (int(ys[idx]), int(xs[idx]))
        axis, aniso = _bead_axis(traj > 0, p, radius)
        if axis is not None and aniso > 6:
            return p, axis
    return None


def bead_free_background(image: np.ndarray, bead: np.ndarray, seed: int) -> np.ndarray:
    """The image with the bead inpainted away and the paint's grain put back."""
    grow = cv2.dilate(bead.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
    filled = cv2.inpaint(image, grow * 255, 5, cv2.INPAINT_TELEA)
    paint = (grow == 0).astype(np.uint8)
    hp = image.astype(np.float32) - cv2.GaussianBlur(image, (0, 0), 2).astype(np.float32)
    # robust grain estimate (MAD): edges of holes and welds must not count as grain
    grain = float(1.4826 * np.median(np.abs(hp[paint > 0]))) if paint.any() else 1.0
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, image.shape[:2]).astype(np.float32), (0, 0), 0.7)
    noise = (noise * (grain / max(float(noise.std()), 1e-6)))[..., None]
    out = filled.astype(np.float32) + noise * grow[..., None]
    return np.clip(out, 0, 255)


def make_defect(
    image: np.ndarray, trajectory: np.ndarray, regions: np.ndarray, spec: SyntheticSpec, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one synthetic defect to a normal crop. Returns (defect image, GT mask uint8 {0,255}).

    Raises LookupError when the region has no straight stretch of bead to edit.
    """
    if image.shape[:2] != trajectory.shape or trajectory.shape != regions.shape:
        raise ValueError(
            f"image {image.shape[:2]}, trajectory {trajectory.shape} and regions {regions.shape} must have the same size"
        )
    if spec.defect_type not in DEFECT_TYPES:
        raise ValueError(
            f"unknown synthetic defect type {spec.defect_type!r}; expected one of {DEFECT_TYPES}"
        )
    rng = np.random.default_rng(spec.seed)
    length = max(3.0, spec.length * scale)
    site = pick_site(trajectory, regions, spec.region, scale, rng)
    if site is None:
        raise LookupError(f"region {spec.region} has no straight stretch of sealant for a {spec.defect_type}")
    (py, px), axis = site
    h, w = trajectory.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along = (xx - px) * axis[0] + (yy - py) * axis[1]
    across = -(xx - px) * axis[1] + (yy - py) * axis[0]
    bead = trajectory > 0
    half_w = _local_half_width(bead, (py, px), axis)
    seg = (np.abs(along) <= length / 2) & (np.abs(across) <= 3 * half_w + 2)
    bead_seg = bead & seg
    background = bead_free_background(image, bead & (np.abs(across) <= 4 * half_w + 4), spec.seed)
    img = image.astype(np.float32)
    sig = FEATHER_PX * max(scale, 0.5)
    kind = spec.defect_type
    added = np.zeros_like(bead)
    if kind == "missing":
        removed = bead_seg
        out = _blend(img, background, _feather(removed, sig))
    elif kind == "hole":
        r = max(1.0, length / 2)
        removed = bead & ((along**2 + across**2) <= r * r)
        a = _feather(removed, sig)
        out = _blend(img, background * 0.85, a)
    elif kind == "narrowing":
        keep = max(0.5, half_w * spec.strength)
        removed = bead_seg & (np.abs(across - _centre_offset(bead_seg, across)) > keep)
        out = _blend(img, background, _feather(removed, sig))
    elif kind == "misalignment":
        shift = spec.strength * 2 * half_w
        sx, sy = -axis[1] * shift, axis[0] * shift
        moved, moved_mask = _shifted(img, bead_seg, sx, sy)
        removed = bead_seg
        base = _blend(img, background, _feather(removed, sig))
        added = moved_mask
        out = _blend(base, moved, _feather(moved_mask, sig))
    else:  # bifurcation: two thinner copies pushed apart
        off = max(1.0, spec.strength * 2 * half_w)
        thin = bead_seg & (np.abs(across - _centre_offset(bead_seg, across)) <= max(0.5, half_w * 0.55))
        out = _blend(img, background, _feather(bead_seg, sig))
        added = np.zeros_like(bead)
        for sign in (-1, 1):
            sx, sy = -axis[1] * off * sign, axis[0] * off * sign
            moved, moved_mask = _shifted(img, thin, sx, sy)
            out = _blend(out, moved, _feather(moved_mask, sig))
            added |= moved_mask
        removed = bead_seg
    gt = (removed | added).astype(np.uint8) * 255
    if not gt.any():
        raise LookupError(f"{kind} at region {spec.region} changed no sealant pixel")
    return np.clip(np.round(out), 0, 255).astype(np.uint8), gt


def _local_half_width(bead: np.ndarray, point, axis) -> float:
    """Half of the bead's width measured across the axis at ``point`` (in pixels)."""
    py, px = point
    n = np.array([-axis[1], axis[0]])
    h, w = bead.shape
    width = 0
    for t in np.arange(-30, 30.5, 0.5):
        x, y = int(round(px + n[0] * t)), int(round(py + n[1] * t))
        if 0 <= x < w and 0 <= y < h and bead[y, x]:
            width += 1
    return max(0.75, width * 0.5 / 2.0)


def _centre_offset(mask: np.ndarray, across: np.ndarray) -> float:
    return float(across[mask].mean()) if mask.any() else 0.0


def _shifted(img: np.ndarray, mask: np.ndarray, sx: float, sy: float):
    m = np.float32([[1, 0, sx], [0, 1, sy]])
    h, w = mask.shape
    moved = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    moved_mask = cv2.warpAffine(mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    return moved, moved_mask


def _blend(base: np.ndarray, top: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = np.clip(alpha, 0, 1)[..., None]
    return base * (1 - a) + top * a
