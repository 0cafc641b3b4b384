"""The paper's scene beside the simulator's, for notebook 00's realism section.

The paper describes its plant in words (sections 3, 4.1, 4.4); each row of ``REALISM`` quotes that
description and says what the simulator draws for it, with the code that draws it. The figures are
made from the same drawing code the line renders with, at the ``paper`` profile's size.
"""

from __future__ import annotations

import numpy as np

from lib.acquire import scene as scene_mod
from lib.acquire import sealant_line as sl
from lib.acquire import underbody as ub

#: (aspect, the paper says (section), the simulator draws, where)
REALISM = (
    (
        "perforations",
        "underbodies exhibit perforations (4.4)",
        "34 drain holes per car model, each open, plugged or taped as the model has it (a rare car "
        "deviates); three rows of small perforations",
        "underbody.model_layout, car_fixtures",
    ),
    (
        "manual sealant patterns",
        "operators manually apply the sealant to specific joints and seams of the car body ... "
        "based on each car model's geometry (3); manually applied sealant patterns (4.4)",
        f"{scene_mod.SITES_PER_VIEW} sites per viewpoint fixed by the car model (dabs and brushed runs at the "
        "cross members' flanges and panel joints); per car the hand varies amount, extent, thickness, "
        "angle and place; rare stray marks",
        "underbody.model_layout, car_sites, stray_marks",
    ),
    (
        "structural characteristics",
        "unique structural characteristics (4.4); ribs, welds and specular reflections introduce high "
        "intra-class variance (7.3)",
        "tunnel, cross members, stamped ribs, spot-weld rows, brackets with bolts and clips, panel tones "
        "(primer panels give low sealant contrast), shading from a height map",
        "underbody._draw_structure, draw_underbody",
    ),
    (
        "background noise",
        "substantial background noise (4.4); varying lighting conditions, ambient noise (1)",
        "value-noise paint texture per car, two fixed lamps whose reflections move over the car, sensor "
        "noise, MPEG-4 compression; lamp intensity, colour temperature, glare and shadows as settings "
        "(off by default: one imaging protocol)",
        "sealant_line.FrameSynth, scene.SceneConfig",
    ),
    (
        "conveyor motion",
        "the vehicle moves on the conveyor ... motion on the conveyor can vary across passes (4.1, 8.4)",
        "speed +-15 % per pass with a 3 % wobble within it, pose jitter (shift, rotation, scale), motion "
        "blur",
        "sealant_line.draw_pass_plan, frame_offsets",
    ),
    (
        "one camera",
        "a camera on the ground, aligned with the conveyor and pointing upward ... a fixed viewpoint (3)",
        "one fixed floor camera; lower front, center and back are best visible one after the other in "
        "each pass (Figure 2)",
        "sealant_line.pass_frames, peak_frame",
    ),
)


def realism_table():
    """``REALISM`` as a DataFrame (aspect, the paper says, the simulator draws, code)."""
    import pandas as pd

    return pd.DataFrame(
        REALISM, columns=["aspect", "the paper says (section)", "the simulator draws", "code"]
    )


def neutral_image(drawing: ub.UnderbodyDrawing, lamp_level: float = 0.5) -> np.ndarray:
    """A drawing lit evenly (``sealant_line.neutral_image``; half the lamps' full reflection)."""
    return sl.neutral_image(drawing, lamp_level)


def view_crops(car_seed: int, scale: float = 1.0, scene=None) -> dict:
    """The three viewpoint crops of one car at ``scale`` (1.0: the ``paper`` profile's 848x480)."""
    drawing = ub.draw_underbody(car_seed, scale, scene=scene)
    lit = neutral_image(drawing)
    out = {}
    for view, x0 in ub.SECTION_X0.items():
        x, y = int(round(x0 * scale)), int(round(ub.CROP_Y0 * scale))
        w, h = int(round(ub.CROP_W * scale)), int(round(ub.CROP_H * scale))
        out[view] = lit[y : y + h, x : x + w]
    return out


def site_strip(car_seeds, site: int = 0, scale: float = 1.0, half: int = 60, scene=None) -> list:
    """One manual-seal site of the car model, cut from several cars: how the operator's hand varies.

    Returns ``(patch, title)`` pairs; each patch is ``2 * half`` paper px square around the site's
    nominal centre."""
    sites = ub.model_layout(7, scale)["sites"]
    if not 0 <= site < len(sites):
        raise ValueError(f"site must lie in [0, {len(sites)}), got {site}")
    s = sites[site]
    r = int(round(half * scale))
    cx, cy = int(round(s.x * scale)), int(round(s.y * scale))
    out = []
    for car in car_seeds:
        img = neutral_image(ub.draw_underbody(int(car), scale, scene=scene))
        patch = img[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r]
        out.append((patch, f"car {car}"))
    return out


def describe_site(site: int = 0, scale: float = 1.0) -> str:
    s = ub.model_layout(7, scale)["sites"][site]
    return f"site {site}: a {s.kind} in the lower {s.viewpoint} view at paper px ({s.x:.0f}, {s.y:.0f})"
