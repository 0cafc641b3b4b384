"""Drawing one car underbody, seen from below, once; frames are later warped from it.

The car model fixes the cross members, tunnel, holes and their plugs, the clips, the robot's
seams and the joints operators seal by hand (paper section 3); each car varies within
tolerances (bead position and width, paint tone, texture, how the operator's hand varied at
the manual sites, rare stray marks, a rare missing plug or clip: ``scene.variation_table``). Everything is drawn at the
profile's scale from paper-scale coordinates (a viewpoint crop is 848x480 at scale 1).

The surface is a height map plus an albedo map; one shading pass gives a diffuse image
and a specular (gloss) layer that the frame synthesizer lights with the fixed lamps.
Robot beads are rendered from centrelines with a per-vertex radius, so the five process
defects (missing, misalignment, bifurcation, narrowing, hole) are edits of the
centrelines, and their ground truth is exact: where the sealant differs from nominal.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import cv2
import numpy as np

from lib.acquire import scene as scene_mod

DEFECT_TYPES = ("missing", "misalignment", "bifurcation", "narrowing", "hole")
SIZE_CLASSES = ("small", "medium", "large")

#: Canvas (one underbody) at paper scale: length along the conveyor x height.
CANVAS_SIZE = (2850, 600)
#: Viewpoint sections: canvas x of the crop's left edge; all crops span rows CROP_Y0..CROP_Y0+480.
SECTION_X0 = {"front": 80, "center": 1000, "back": 1920}
CROP_Y0 = 60
CROP_W, CROP_H = 848, 480
#: Region grid per viewpoint (columns, rows): 4, 8 and 5 regions as in paper section 4.3.
REGION_GRID = {"front": (2, 2), "center": (4, 2), "back": (5, 1)}
BEAD_RADIUS = 7.0  # paper px: a 14 px wide bead in an 848 px crop
HEIGHT_SCALE = 0.9  # bead height relative to its radius
#: Cross members (canvas x of their right edge): their flanges are the joints operators seal by hand.
BAND_X = (SECTION_X0["front"] + 430, 1210, 1630, 1960, 2520, 2660)
#: Brackets (top-left corner, paper px); whether each carries a clip is the car model's.
BRACKETS = ((700, 560), (1450, 80), (2300, 80), (2150, 560), (300, 60))
#: Drain-hole states of a car model, and the share of holes in each.
HOLE_STATES = ("open", "plugged", "taped")
HOLE_STATE_SHARES = (0.55, 0.35, 0.10)


@dataclasses.dataclass(frozen=True)
class Seam:
    """A robot seam: a polyline in paper-scale canvas coordinates, inside one section."""

    name: str
    viewpoint: str
    points: np.ndarray  # (N, 2) float, paper scale canvas coords


@dataclasses.dataclass(frozen=True)
class ManualSite:
    """Operators' sealant at one joint (paper-scale canvas coordinates): a dab or a brushed run."""

    viewpoint: str  # the section it lies in ("" for a stray mark)
    kind: str  # "dab" (an ellipse) or "run" (a brushed stroke)
    x: float
    y: float
    length: float  # dab: long semi-axis; run: stroke length
    width: float  # dab: short semi-axis; run: stroke width
    angle: float  # degrees
    thickness: float = 1.0  # height relative to the nominal dab


@dataclasses.dataclass(frozen=True)
class ProcessDefect:
    """A robot-made defect on one seam (paper-scale lengths)."""

    defect_type: str
    seam: str
    position: float  # arc-length fraction of the seam, 0..1, at the defect's centre
    length: float  # paper px along the seam (hole: diameter)
    strength: float  # type-specific: shift in radii, width factor, branch offset
    size_class: str


def _curve(x0, x1, y, amp=0.0, periods=0.5, phase=0.0, n=80):
    x = np.linspace(x0, x1, n)
    t = np.linspace(0, 1, n)
    return np.stack([x, y + amp * np.sin(2 * np.pi * periods * t + phase)], axis=1)


def _vline(x, y0, y1, amp=0.0, n=60):
    y = np.linspace(y0, y1, n)
    t = np.linspace(0, 1, n)
    return np.stack([x + amp * np.sin(np.pi * t), y], axis=1)


def _arc(cx, cy, r, a0, a1, n=80):
    a = np.linspace(np.deg2rad(a0), np.deg2rad(a1), n)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def model_seams() -> list[Seam]:
    """The car model's robot seams (same for every car), in paper-scale canvas coords."""
    seams = []
    fx, cx, bx, y0 = SECTION_X0["front"], SECTION_X0["center"], SECTION_X0["back"], CROP_Y0
    # front: two long seams along the floor-pan flanges and one along a cross member
    seams.append(Seam("front_upper", "front", _curve(fx + 40, fx + 800, y0 + 115, 10, 0.7)))
    seams.append(Seam("front_lower", "front", _curve(fx + 60, fx + 790, y0 + 365, 8, 0.6, 1.0)))
    seams.append(Seam("front_cross", "front", _vline(fx + 430, y0 + 50, y0 + 430, 12)))
    seams.append(Seam("front_arch", "front", _arc(fx + 180, y0 + 240, 95, -70, 70)))
    # center: tunnel flanges, two cross-member flanges, a sill seam
    seams.append(Seam("center_tunnel_l", "center", _curve(cx + 25, cx + 825, y0 + 165, 4, 1.0)))
    seams.append(Seam("center_tunnel_r", "center", _curve(cx + 25, cx + 825, y0 + 315, 4, 1.0, 2.0)))
    seams.append(Seam("center_cross_a", "center", _vline(cx + 210, y0 + 40, y0 + 440, 6)))
    seams.append(Seam("center_cross_b", "center", _vline(cx + 630, y0 + 40, y0 + 440, -6)))
    seams.append(Seam("center_sill", "center", _curve(cx + 60, cx + 790, y0 + 52, 6, 1.5)))
    seams.append(Seam("center_sill_r", "center", _curve(cx + 60, cx + 790, y0 + 428, 6, 1.5, 1.0)))
    # back: one long wavy seam, spare-wheel-well arc, three short flanges
    seams.append(Seam("back_main", "back", _curve(bx + 25, bx + 825, y0 + 240, 22, 1.2)))
    seams.append(Seam("back_well", "back", _arc(bx + 420, y0 + 240, 150, 200, 340)))
    for i, x in enumerate((170, 600, 740)):
        seams.append(Seam(f"back_flange_{i}", "back", _vline(bx + x, y0 + 60, y0 + 420, 8)))
    return seams


def resample(points: np.ndarray, step: float) -> np.ndarray:
    """Resample a polyline to (about) constant arc-length spacing ``step``."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(np.ceil(s[-1] / step)) + 1)
    t = np.linspace(0, s[-1], n)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], axis=1)


def _normals(points: np.ndarray) -> np.ndarray:
    d = np.gradient(points, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    return np.stack([-d[:, 1], d[:, 0]], axis=1)


def apply_defect(points: np.ndarray, radius: np.ndarray, defect: ProcessDefect | None):
    """Edit one seam's centreline. Returns a list of strokes [(points, radius)] and a hole list."""
    if defect is None:
        return [(points, radius)], []

    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    centre = defect.position * s[-1]
    half = defect.length / 2.0
    kind = defect.defect_type
    if kind == "hole":
        idx = int(np.argmin(np.abs(s - centre)))
        return [(points, radius)], [(points[idx].copy(), half)]
    if kind == "missing":
        strokes = []
        before, after = s < centre - half, s > centre + half
        if before.sum() >= 2:
            strokes.append((points[before], radius[before]))
        if after.sum() >= 2:
            strokes.append((points[after], radius[after]))
        return strokes, []
    if kind == "narrowing":
        # smooth taper into the narrow section (nozzle partially blocked)
        w = np.clip((half - np.abs(s - centre)) / max(half * 0.25, 1e-6), 0, 1)
        return [(points, radius * (1 - w * (1 - defect.strength)))], []
    if kind == "misalignment":
        w = np.clip((half - np.abs(s - centre)) / max(half * 0.3, 1e-6), 0, 1)
        shift = defect.strength * radius * w
        return [(points + _normals(points) * shift[:, None], radius)], []
    if kind == "bifurcation":
        w = np.clip((half - np.abs(s - centre)) / max(half * 0.35, 1e-6), 0, 1)
        nrm = _normals(points)
        off = defect.strength * radius * w
        thin = radius * (1 - 0.45 * w)
        a = points + nrm * off[:, None]
        b = points - nrm * off[:, None]
        strokes = [(a, thin), (b, thin)]
        return strokes, []
    raise ValueError(f"unknown defect type {kind!r}; expected one of {DEFECT_TYPES}")


def render_beads(strokes, holes, shape, scale: float):
    """Height map (float32, px) and footprint of sealant beads drawn from centrelines.

    Each centreline pixel carries its radius; a distance transform with labels gives
    every pixel its distance to, and the radius of, the nearest centreline pixel.
    """
    h, w = shape
    rad = np.zeros((h, w), np.float32)
    for pts, r in strokes:
        p = np.round(pts * scale).astype(np.int32)
        rs = (r * scale).astype(np.float32)
        for i in range(len(p) - 1):
            cv2.line(rad, tuple(map(int, p[i])), tuple(map(int, p[i + 1])), float(rs[i]), 1)
    centre = rad > 0
    if not centre.any():
        return np.zeros((h, w), np.float32), np.zeros((h, w), bool)
    src = np.where(centre, 0, 255).astype(np.uint8)
    dist, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(labels.max() + 1, np.float32)
    lut[labels[centre]] = rad[centre]
    r = lut[labels]
    r_safe = np.maximum(r, 1e-3)
    prof = np.clip(1.0 - (dist / r_safe) ** 2, 0.0, 1.0)
    height = (np.sqrt(prof) * r * HEIGHT_SCALE).astype(np.float32)
    for (cx, cy), hr in holes:
        hole = np.zeros((h, w), np.float32)
        cv2.circle(
            hole, (int(round(cx * scale)), int(round(cy * scale))), max(1, int(round(hr * scale))), 1.0, -1
        )
        hole = cv2.GaussianBlur(hole, (0, 0), max(0.5, 0.6 * scale * 2))
        height *= 1.0 - np.clip(hole * 1.3, 0, 1)
    return height, height > 0.08 * scale * BEAD_RADIUS * HEIGHT_SCALE


def _value_noise(rng, shape, cells, octaves=3, persistence=0.5):
    """Smooth multi-octave value noise in [-1, 1] (cubic upsampling of random grids)."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(2, int(cells * 2**o))
        grid = rng.uniform(-1, 1, (max(2, c * h // w + 1), c + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    return out / total


@dataclasses.dataclass
class UnderbodyDrawing:
    """One car's drawing in canvas coordinates (profile scale)."""

    diffuse: np.ndarray  # HxWx3 uint8 (BGR), lit by the ambient + key light
    gloss: np.ndarray  # HxW uint8, specular strength for the lamps' reflections
    defect_mask: np.ndarray  # HxW uint8 {0,255}: exact GT of the process defect (empty if normal)
    bead_mask: np.ndarray  # HxW bool: this car's sealant bead footprint
    manual_mask: np.ndarray | None = None  # HxW bool: operators' sealant (manual sites and stray marks)


@dataclasses.dataclass(frozen=True)
class CarVariation:
    """Per-car random draws (tolerances and clutter), all from one seed."""

    seed: int
    bead_shift: dict  # seam -> (dx, dy) paper px
    bead_radius: dict  # seam -> radius paper px
    paint_bgr: tuple
    sealant_bgr: tuple


def draw_car_variation(seed: int, seams: list[Seam]) -> CarVariation:
    rng = np.random.default_rng([seed, 1])
    shift = {s.name: tuple(rng.normal(0, 1.0, 2)) for s in seams}
    radius = {s.name: float(BEAD_RADIUS * rng.uniform(0.88, 1.12)) for s in seams}
    base = rng.uniform(84, 100)
    paint = (base + rng.normal(0, 2), base + 2 + rng.normal(0, 2), base + 4 + rng.normal(0, 2))
    seal = rng.uniform(150, 175)
    sealant = (seal - 6 + rng.normal(0, 3), seal + rng.normal(0, 3), seal + 4 + rng.normal(0, 3))
    return CarVariation(seed, shift, radius, tuple(paint), tuple(sealant))


def nominal_bead_strokes(seams: list[Seam], variation: CarVariation | None):
    """Per-seam (points, radius) with this car's tolerances (nominal when variation is None)."""
    out = {}
    for seam in seams:
        pts = resample(seam.points, 2.0)
        if variation is not None:
            dx, dy = variation.bead_shift[seam.name]
            rng = np.random.default_rng([variation.seed, 2, zlib.crc32(seam.name.encode())])
            wob = (
                _normals(pts)
                * (1.0 * np.sin(np.linspace(0, rng.uniform(2, 6), len(pts)) + rng.uniform(0, 6)))[:, None]
            )
            pts = pts + np.array([dx, dy]) + wob
            r = np.full(len(pts), variation.bead_radius[seam.name])
        else:
            r = np.full(len(pts), BEAD_RADIUS)
        out[seam.name] = (pts, r)
    return out


def _draw_structure(model_seed, car_seed, height, albedo_shift, scale, scene):
    """Cross members, tunnel, ribs, welds, holes, brackets (the model's), with rare per-car deviations."""
    H, W = height.shape

    def P(x):
        return int(round(x * scale))

    # tunnel along the centre section and cross members (raised smooth bands)
    tunnel = np.zeros_like(height)
    cv2.rectangle(tunnel, (P(960), P(CROP_Y0 + 185)), (P(1890), P(CROP_Y0 + 295)), 1.0, -1)
    height += cv2.GaussianBlur(tunnel, (0, 0), max(1.0, 18 * scale)) * 14 * scale
    band = np.zeros_like(height)
    for x in BAND_X:
        cv2.rectangle(band, (P(x - 38), 0), (P(x - 14), H), 1.0, -1)
    height += cv2.GaussianBlur(band, (0, 0), max(1.0, 6 * scale)) * 10 * scale
    # stamped ribs in the floor pans
    rib = np.zeros_like(height)
    for x0, x1, y in (
        (150, 880, 200),
        (150, 880, 420),
        (2000, 2700, 150),
        (2000, 2700, 470),
        (1050, 1800, 110),
    ):
        for k in range(3):
            cv2.line(
                rib, (P(x0), P(CROP_Y0 + y + 14 * k)), (P(x1), P(CROP_Y0 + y + 14 * k)), 1.0, max(1, P(4))
            )
    height += cv2.GaussianBlur(rib, (0, 0), max(0.7, 2.5 * scale)) * 3 * scale
    # spot welds along the cross-member flanges (small dimples)
    for x in (SECTION_X0["front"] + 430, 1210, 1630, 2520):
        for y in np.arange(20, 600, 24):
            cv2.circle(height, (P(x - 44), P(y)), max(1, P(3)), float(-1.2 * scale), -1)
    # brackets with bolts (model); each bracket's clip is the model's, rarely missing on a car
    for x, y in BRACKETS:
        cv2.rectangle(height, (P(x), P(y)), (P(x + 46), P(y + 28)), float(6 * scale), -1)
        cv2.circle(height, (P(x + 23), P(y + 14)), max(1, P(6)), float(9 * scale), -1)
    layout = model_layout(model_seed, scale)
    hole_states, clips = car_fixtures(car_seed, layout, scene)
    for (x, y), has_clip in zip(BRACKETS, clips, strict=True):
        if has_clip:
            cv2.rectangle(albedo_shift, (P(x + 4), P(y + 4)), (P(x + 16), P(y + 24)), (-40, -40, -40), -1)
    # drain holes: place, size and state (open, plugged, taped) are the model's; a car rarely deviates
    for (x, y, r, _), state in zip(layout["holes"], hole_states, strict=True):
        if state == "open":  # dark, deep
            cv2.circle(albedo_shift, (P(x), P(y)), max(1, P(r)), (-75, -75, -75), -1, cv2.LINE_AA)
            cv2.circle(height, (P(x), P(y)), max(1, P(r + 3)), float(-3 * scale), max(1, P(2)))
        elif state == "plugged":  # black rubber plug, slightly raised
            cv2.circle(albedo_shift, (P(x), P(y)), max(1, P(r + 2)), (-60, -58, -55), -1, cv2.LINE_AA)
            cv2.circle(height, (P(x), P(y)), max(1, P(r + 2)), float(2.5 * scale), -1)
        # taped over: paint colour, flat
    for x0, y0 in ((560, 480), (1350, 500), (2400, 300)):
        for i in range(6):
            for j in range(2):
                cv2.circle(albedo_shift, (P(x0 + 22 * i), P(y0 + 22 * j)), max(1, P(4)), (-70, -70, -70), -1)


def model_layout(model_seed: int, scale: float) -> dict:
    """The car model's fixed layout outside the robot seams, drawn once per model (paper coordinates):
    drain holes ``(x, y, radius, state)``, which brackets carry a clip, and the manual-seal sites."""
    return _model_layout(int(model_seed), float(scale))


@functools.lru_cache(maxsize=8)
def _model_layout(model_seed: int, scale: float) -> dict:
    H, W = int(round(CANVAS_SIZE[1] * scale)), int(round(CANVAS_SIZE[0] * scale))
    keepout = trajectory_mask(model_seams(), scale, (H, W), extra_radius=22.0) > 0

    def free(x, y):
        return not keepout[min(H - 1, max(0, int(y * scale))), min(W - 1, max(0, int(x * scale)))]

    rng = np.random.default_rng([model_seed, 0])
    holes = []
    for _ in range(34):
        for _try in range(20):
            x, y = rng.uniform(30, CANVAS_SIZE[0] - 30), rng.uniform(20, CANVAS_SIZE[1] - 20)
            if free(x, y):
                holes.append((x, y, rng.uniform(6, 16)))
                break
    rng_state = np.random.default_rng([model_seed, 4])
    states = rng_state.choice(HOLE_STATES, size=len(holes), p=HOLE_STATE_SHARES)
    holes = [(x, y, r, str(st)) for (x, y, r), st in zip(holes, states, strict=True)]
    clips = (rng_state.random(len(BRACKETS)) < 0.6).tolist()
    sites = []
    rng_site = np.random.default_rng([model_seed, 5])
    for view, x0 in SECTION_X0.items():
        bands = [bx for bx in BAND_X if x0 + 40 <= bx <= x0 + CROP_W - 20]
        placed = 0
        for _try in range(400):
            if placed == scene_mod.SITES_PER_VIEW:
                break
            at_joint = bool(bands) and rng_site.random() < 0.5
            if at_joint:  # a dab or a vertical run along a cross member's flange
                bx = bands[int(rng_site.integers(len(bands)))]
                x = bx + (-44.0 if rng_site.random() < 0.5 else -8.0) + rng_site.uniform(-3, 3)
                y = rng_site.uniform(CROP_Y0 + 30, CROP_Y0 + CROP_H - 30)
                kind = "dab" if rng_site.random() < 0.5 else "run"
                angle = 90.0 + rng_site.uniform(-8, 8)
            else:  # a dab at a panel joint or a short run along a stamped flange
                x = rng_site.uniform(x0 + 30, x0 + CROP_W - 30)
                y = rng_site.uniform(CROP_Y0 + 25, CROP_Y0 + CROP_H - 25)
                kind = "dab" if rng_site.random() < 0.5 else "run"
                angle = rng_site.uniform(-25, 25)
            if kind == "dab":
                length, width = rng_site.uniform(10, 22), rng_site.uniform(6, 12)
            else:
                length, width = rng_site.uniform(30, 80), rng_site.uniform(4, 8)
            # the whole site, with room for the operator's hand (offsets, a longer or wider stroke), lies
            # outside the robot ROI: its outline, grown by 10 paper px, is checked
            reach = (length if kind == "dab" else length / 2) + 10
            across = width + 10
            ca, sa = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
            outline = [
                (x + a * reach * ca - b * across * sa, y + a * reach * sa + b * across * ca)
                for a in (-1, -0.5, 0, 0.5, 1)
                for b in (-1, 0, 1)
            ]
            if all(free(px, py) for px, py in outline):
                sites.append(ManualSite(view, kind, x, y, length, width, angle))
                placed += 1
    return {"holes": holes, "clips": clips, "sites": tuple(sites)}


def _site_ends(x, y, length, angle):
    dx, dy = np.cos(np.deg2rad(angle)) * length / 2, np.sin(np.deg2rad(angle)) * length / 2
    return [(x - dx, y - dy), (x + dx, y + dy)]


def car_sites(car_seed: int, sites, nuisance: float) -> list[ManualSite]:
    """This car's version of the model's manual-seal sites: the operator's hand varies amount, extent,
    thickness, angle and place by ``nuisance`` x the ranges of ``scene.SITE_VARIATION``, and rarely
    skips a site. The draws are fixed per car, so the knob scales the same variation (common random
    numbers: a calibration curve over ``nuisance`` is smooth)."""
    var = {k: v[2] * nuisance for k, v in scene_mod.SITE_VARIATION.items()}
    u = np.random.default_rng([car_seed, 5]).uniform(-1, 1, (len(sites), 3))
    z = np.random.default_rng([car_seed, 6]).standard_normal((len(sites), 3))
    skip = np.random.default_rng([car_seed, 7]).random(len(sites))
    out = []
    for site, (ua, ue, ut), (za, zx, zy), sk in zip(sites, u, z, skip, strict=True):
        if sk < var["skipped"]:
            continue
        out.append(
            dataclasses.replace(
                site,
                x=site.x + var["offset"] * zx,
                y=site.y + var["offset"] * zy,
                length=site.length * (1 + var["extent"] * ue),
                width=site.width * (1 + var["amount"] * ua),
                angle=site.angle + var["angle"] * za,
                thickness=1 + var["thickness"] * ut,
            )
        )
    return out


def car_fixtures(car_seed: int, layout: dict, scene: scene_mod.SceneConfig) -> tuple[list, list]:
    """This car's drain-hole states and clips: the model's, except that each hole deviates (a missing
    plug or tape leaves it open, an open one is plugged) with probability ``scene.hole_deviation_rate``
    and each clip is missing with probability ``scene.clip_missing_rate``."""
    rng = np.random.default_rng([car_seed, 9])
    u_hole, u_clip = rng.random(len(layout["holes"])), rng.random(len(layout["clips"]))
    states = [
        ("plugged" if st == "open" else "open") if u < scene.hole_deviation_rate else st
        for (_, _, _, st), u in zip(layout["holes"], u_hole, strict=True)
    ]
    clips = [bool(c) and u >= scene.clip_missing_rate for c, u in zip(layout["clips"], u_clip, strict=True)]
    return states, clips


def stray_marks(car_seed: int, nuisance: float, keepout, scale: float) -> list[ManualSite]:
    """Rare sealant marks anywhere outside the robot ROI: each of ``STRAY_CANDIDATES`` is laid with
    probability ``STRAY_MEAN * nuisance / STRAY_CANDIDATES`` (binomial, mean ``STRAY_MEAN * nuisance``),
    at the first of four drawn places outside the ROI (all four inside: dropped, p < 0.01)."""
    p = scene_mod.STRAY_MEAN * nuisance / scene_mod.STRAY_CANDIDATES
    d = np.random.default_rng([car_seed, 8]).random((scene_mod.STRAY_CANDIDATES, 13))
    H, W = keepout.shape
    out = []
    for u, kind, ul, uw, ua, *places in d:
        if u >= p:
            continue
        free = [
            (20 + ux * (CANVAS_SIZE[0] - 40), 15 + uy * (CANVAS_SIZE[1] - 30))
            for ux, uy in zip(places[0::2], places[1::2], strict=True)
        ]
        free = [
            (x, y) for x, y in free if not keepout[min(H - 1, int(y * scale)), min(W - 1, int(x * scale))]
        ]
        if not free:
            continue
        x, y = free[0]
        if kind < 0.5:
            site = ManualSite("", "dab", x, y, 6 + 20 * ul, 5 + 11 * uw, 180 * ua)
        else:
            site = ManualSite("", "run", x, y, 25 + 65 * ul, 4 + 6 * uw, 180 * ua)
        out.append(site)
    return out


def _manual_sealant(sites, height, albedo_mask, scale, keepout):
    """Draw operators' sealant (the car's manual sites and stray marks) outside the robot ROI."""
    layer = np.zeros_like(height)
    for s in sites:
        centre = (int(round(s.x * scale)), int(round(s.y * scale)))
        if s.kind == "dab":
            axes = (max(1, int(round(s.length * scale))), max(1, int(round(s.width * scale))))
            cv2.ellipse(layer, centre, axes, s.angle, 0, 360, float(s.thickness), -1, cv2.LINE_AA)
        else:
            (xa, ya), (xb, yb) = _site_ends(s.x, s.y, s.length, s.angle)
            p0 = (int(round(xa * scale)), int(round(ya * scale)))
            p1 = (int(round(xb * scale)), int(round(yb * scale)))
            cv2.line(layer, p0, p1, float(s.thickness), max(1, int(round(s.width * scale))), cv2.LINE_AA)
    layer[keepout] = 0.0
    soft = cv2.GaussianBlur(layer, (0, 0), max(0.6, 2.0 * scale))
    height += soft * 5 * scale
    albedo_mask[:] = np.maximum(albedo_mask, np.clip(soft * 1.4, 0, 1))


def trajectory_mask(seams: list[Seam], scale: float, shape, extra_radius: float = 0.0) -> np.ndarray:
    """Nominal bead footprint (+ extra_radius paper px), uint8 {0,255}, canvas coords."""
    mask = np.zeros(shape, np.uint8)
    for seam in seams:
        pts = np.round(resample(seam.points, 2.0) * scale).astype(np.int32)
        thick = max(1, int(round(2 * (BEAD_RADIUS + extra_radius) * scale)))
        cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, 255, thick, cv2.LINE_8)
    return mask


def draw_underbody(
    car_seed: int,
    scale: float,
    defect: ProcessDefect | None = None,
    model_seed: int = 7,
    scene: scene_mod.SceneConfig | None = None,
) -> UnderbodyDrawing:
    """Draw one car's underbody (and its process defect, if any) at ``scale``."""
    scene = scene or scene_mod.SceneConfig()
    seams = model_seams()
    H, W = int(round(CANVAS_SIZE[1] * scale)), int(round(CANVAS_SIZE[0] * scale))
    rng_car = np.random.default_rng([car_seed, 3])
    variation = draw_car_variation(car_seed, seams)
    keepout = trajectory_mask(seams, scale, (H, W), extra_radius=22.0) > 0

    height = np.zeros((H, W), np.float32)
    albedo_shift = np.zeros((H, W, 3), np.float32)
    _draw_structure(model_seed, car_seed, height, albedo_shift, scale, scene)
    manual = np.zeros((H, W), np.float32)
    sites = car_sites(car_seed, model_layout(model_seed, scale)["sites"], scene.nuisance)
    _manual_sealant(
        sites + stray_marks(car_seed, scene.nuisance, keepout, scale), height, manual, scale, keepout
    )

    strokes_by_seam = nominal_bead_strokes(seams, variation)
    strokes, holes = [], []
    for name, (pts, r) in strokes_by_seam.items():
        d = defect if defect is not None and defect.seam == name else None
        st, ho = apply_defect(pts, r, d)
        strokes += st
        holes += ho
    bead_h, bead_fp = render_beads(strokes, holes, (H, W), scale)
    defect_mask = np.zeros((H, W), np.uint8)
    if defect is not None:
        nom_h, nom_fp = render_beads(list(strokes_by_seam.values()), [], (H, W), scale)
        changed = (np.abs(nom_h - bead_h) > 0.08 * BEAD_RADIUS * scale).astype(np.uint8)
        k = max(1, int(round(BEAD_RADIUS * scale)))
        changed = cv2.dilate(changed, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
        defect_mask = ((changed > 0) & (nom_fp | bead_fp)).astype(np.uint8) * 255
    height += bead_h

    # albedo: paint + panel tones (some panels light: low bead contrast) + texture + sealant
    paint = np.array(variation.paint_bgr, np.float32)
    tone = np.zeros((H, W), np.float32)
    for x0, y0, x1, y1, dv in (
        (960, 0, 1900, CROP_Y0 + 150, 20.0),  # left floor pan of the centre section
        (2380, 250, 2850, 600, 48.0),  # primer-coated panel: low contrast with the sealant
        (500, 350, 930, 600, 38.0),
    ):
        cv2.rectangle(tone, (int(x0 * scale), int(y0 * scale)), (int(x1 * scale), int(y1 * scale)), dv, -1)
    tone = cv2.GaussianBlur(tone, (0, 0), max(1.0, 8 * scale))
    texture = _value_noise(rng_car, (H, W), 12, 4) * 7 + _value_noise(rng_car, (H, W), 120, 2) * 3
    albedo = paint[None, None, :] + (tone + texture)[..., None] + albedo_shift
    sealant = np.array(variation.sealant_bgr, np.float32)
    seal_tex = sealant[None, None, :] + (_value_noise(rng_car, (H, W), 60, 2) * 6)[..., None]
    bead_alpha = np.clip(bead_h / max(0.25 * BEAD_RADIUS * scale, 1e-3), 0, 1)[..., None]
    alpha = np.maximum(bead_alpha, manual[..., None])
    albedo = albedo * (1 - alpha) + seal_tex * alpha

    # shading: normals from the height map, a key light, ambient occlusion, gloss
    gy, gx = np.gradient(cv2.GaussianBlur(height, (0, 0), max(0.5, 0.8 * scale)))
    nz = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny = -gx * nz, -gy * nz
    light = np.array([-0.35, -0.45, 0.82])
    light /= np.linalg.norm(light)
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1) / light[2]
    ao = np.clip(cv2.GaussianBlur(height, (0, 0), max(1.0, 10 * scale)) - height, 0, None)
    shade = (0.35 + 0.65 * lambert) * np.exp(-0.09 * ao / max(scale, 1e-3))
    shift = (int(round(3 * scale)), int(round(4 * scale)))  # cast shadow along the light
    cast = np.roll(height, shift, axis=(1, 0)) - height
    shade *= 1.0 - 0.35 * np.clip(cast / max(3 * scale, 1e-3), 0, 1)
    diffuse = np.clip(albedo * shade[..., None], 0, 255).astype(np.uint8)
    half = light + np.array([0, 0, 1.0])
    half /= np.linalg.norm(half)
    ndoth = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, 1)
    glossiness = 0.25 + 0.75 * alpha[..., 0]  # wet sealant shines more than paint
    gloss = np.clip(255 * glossiness * ndoth**30, 0, 255).astype(np.uint8)
    return UnderbodyDrawing(diffuse, gloss, defect_mask, bead_fp, manual > 0.5)
