"""The simulated sealant line: conveyor videos of underbody passes seen from a floor camera.

It plays the plant (paper section 3) so that everything downstream has data:
each pass draws one underbody once (``underbody.draw_underbody``) and synthesizes its
frames by warping that drawing along the conveyor with per-pass pose jitter, speed,
illumination drift, lamp reflections, motion blur, sensor noise and video compression.
Some passes carry a robot process defect (the paper's "real" defects) with an exact
per-frame ground-truth mask (the canvas mask warped by the frame's pose).

Layout written under a data root (all writes atomic)::

    videos/pass_0000.mp4          one video per underbody pass (OpenCV-readable)
    passes.csv                    ground-truth table: one row per pass
    poses.csv                     per-frame canvas->frame pose (for per-frame GT masks)
    defects/pass_0007.png         canvas-coordinate GT mask of a defective pass
    templates/<view>.png          the three viewpoint templates (lower front/center/back)
    templates/<view>_trajectory.png, <view>_roi.png, <view>_regions.png
    templates/templates.json      sizes, margins, region partition
    simulation.json               profile, seed, counts, render speed and data size
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.acquire import underbody as ub
from lib.config import VIEWPOINTS, Profile
from lib.fileio import atomic_path, ensure_writable_dir, write_csv, write_image, write_json
from lib.parallel import default_workers, ordered_map

#: Margin (paper px) added around the sealant trajectory for the default ROI mask (section 4.4).
DEFAULT_ROI_MARGIN = 15.0
TEMPLATE_CAR_SEED = 999_983
EXPOSURE_FRACTION = 0.05  # share of a frame interval the shutter is open (motion blur)

_SIZE_RANGES = {
    # type: {size_class: ((length lo, hi) paper px, (strength lo, hi))}
    "missing": {"small": ((14, 24), (0, 0)), "medium": ((30, 60), (0, 0)), "large": ((80, 160), (0, 0))},
    "hole": {"small": ((6, 9), (0, 0)), "medium": ((10, 14), (0, 0)), "large": ((15, 20), (0, 0))},
    "narrowing": {
        "small": ((25, 40), (0.62, 0.7)),
        "medium": ((50, 90), (0.45, 0.55)),
        "large": ((100, 180), (0.3, 0.4)),
    },
    "misalignment": {
        "small": ((40, 60), (1.2, 1.6)),
        "medium": ((70, 110), (1.8, 2.4)),
        "large": ((120, 200), (2.6, 3.4)),
    },
    "bifurcation": {
        "small": ((30, 50), (0.9, 1.1)),
        "medium": ((60, 100), (1.2, 1.5)),
        "large": ((110, 170), (1.6, 2.0)),
    },
}


@dataclasses.dataclass(frozen=True)
class PassPlan:
    """Everything random about one pass, drawn up front so passes render independently."""

    pass_id: int
    car_seed: int
    speed: float  # profile px per frame
    gain: float
    gain_drift: float
    gamma: float
    colour_temp: float  # blue-against-red tilt (a share: 0.05 = +5 % blue, -5 % red)
    noise_sigma: float
    pose_dy: float  # paper px
    pose_angle: float  # degrees
    pose_scale: float
    defect: ub.ProcessDefect | None
    defect_viewpoint: str
    glare: tuple = (0.0, 0.5, 0.5)  # (strength, x, y as frame fractions) of a specular spot
    shadow: tuple = (0.0, 0.5)  # (depth, x as a frame fraction) of a soft shadow band

    @property
    def video_name(self) -> str:
        return f"videos/pass_{self.pass_id:04d}.mp4"


def draw_process_defect(rng: np.random.Generator, viewpoint: str, k: int) -> ub.ProcessDefect:
    """The k-th real defect of the run: types and sizes cycle so every kind and size appears."""
    seams = [s for s in ub.model_seams() if s.viewpoint == viewpoint]
    kind = ub.DEFECT_TYPES[k % len(ub.DEFECT_TYPES)]
    size = ub.SIZE_CLASSES[(k // len(ub.DEFECT_TYPES) + k) % len(ub.SIZE_CLASSES)]
    (l0, l1), (s0, s1) = _SIZE_RANGES[kind][size]
    seam = seams[int(rng.integers(len(seams)))]
    return ub.ProcessDefect(
        defect_type=kind,
        seam=seam.name,
        position=float(rng.uniform(0.15, 0.85)),
        length=float(rng.uniform(l0, l1)),
        strength=float(rng.uniform(s0, s1)) if s1 > 0 else 0.0,
        size_class=size,
    )


def draw_pass_plan(
    pass_id: int, car_seed: int, rng: np.random.Generator, profile: Profile, defect, view: str
) -> PassPlan:
    """One pass's conveyor speed, lighting and pose, drawn from ``rng`` in a fixed order (the training
    line and the inspection stream draw them alike). Every draw happens whatever the scene, and the
    scene's settings only scale them, so turning a photometric shift on changes nothing else."""
    scene = profile.scene_config
    speed = float(profile.conveyor_px_per_frame * profile.scale * rng.uniform(0.85, 1.15))
    u_gain, u_drift, u_gamma, u_colour = rng.uniform(-1, 1, 4)
    noise_sigma = float(rng.uniform(1.5, 4.0))
    pose = (float(rng.normal(0, 6)), float(rng.normal(0, 0.35)), float(rng.uniform(0.99, 1.01)))
    u_glare, u_shadow = rng.random(4), rng.random(2)
    return PassPlan(
        pass_id=pass_id,
        car_seed=car_seed,
        speed=speed,
        gain=float(1 + (scene.lamp_drift + scene.lamp_intensity) * u_gain),
        gain_drift=float(scene.lamp_drift * u_drift),
        gamma=float(1 + 0.5 * scene.lamp_intensity * u_gamma),
        colour_temp=float(scene.colour_temperature * u_colour),
        noise_sigma=noise_sigma,
        pose_dy=pose[0],
        pose_angle=pose[1],
        pose_scale=pose[2],
        defect=defect,
        defect_viewpoint=view,
        glare=(float(scene.glare * (0.5 + 0.5 * u_glare[0])), float(u_glare[1]), float(u_glare[2])),
        shadow=(float(scene.shadow * (0.5 + 0.5 * u_shadow[0])), float(u_shadow[1])),
    )


def plan_passes(profile: Profile, seed: int | None = None) -> list[PassPlan]:
    """Draw the plan of every pass: which cars are defective, speeds, lighting, poses."""
    seed = profile.seed if seed is None else int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, 11])
    defect_views = [v for v in VIEWPOINTS for _ in range(int(profile.defective_underbodies.get(v, 0)))]
    n = profile.n_passes
    # spread defective passes over the run (not all at the end), deterministically
    slots = sorted(rng.choice(n, size=len(defect_views), replace=False).tolist()) if n else []
    view_of_slot = dict(
        zip(slots, rng.permutation(defect_views).tolist() if defect_views else [], strict=True)
    )
    n_defects = 0
    plans = []
    for pid in range(n):
        prng = np.random.default_rng([seed, 13, pid])
        view = view_of_slot.get(pid, "")
        defect = None
        if view:
            defect = draw_process_defect(prng, view, n_defects)
            n_defects += 1
        car_seed = int(np.random.SeedSequence([seed, 17, pid]).generate_state(1)[0])
        plans.append(draw_pass_plan(pid, car_seed, prng, profile, defect, view))
    return plans


def pose_matrix(
    offset_x: float, dy: float, angle: float, scale: float, canvas_shape, frame_size
) -> np.ndarray:
    """Canvas -> frame affine: canvas centre to (offset + Wc/2, Hf/2 + dy), rotated and scaled."""
    hc, wc = canvas_shape
    wf, hf = frame_size
    m = cv2.getRotationMatrix2D((wc / 2.0, hc / 2.0), angle, scale)
    m[0, 2] += offset_x
    m[1, 2] += (hf - hc) / 2.0 + dy
    return m


class FrameSynth:
    """Fixed frame-space parts of the scene: the background and the lamps' reflection pattern."""

    def __init__(self, frame_size, seed: int):
        wf, hf = frame_size
        rng = np.random.default_rng([seed, 19])
        yy, xx = np.mgrid[0:hf, 0:wf].astype(np.float32)
        # background above the conveyor: dark ceiling, a lit beam, hangers
        bg = 28 + 10 * np.exp(-(((yy - hf * 0.3) / (hf * 0.2)) ** 2))
        bg = np.repeat(bg[..., None], 3, axis=2)
        for x in rng.uniform(0, wf, 4):
            cv2.rectangle(bg, (int(x), 0), (int(x + wf * 0.02), hf), (45, 45, 48), -1)
        self.background = np.clip(bg + rng.normal(0, 2, bg.shape), 0, 255).astype(np.uint8)
        # two lamp reflections that stay fixed in the frame while the car moves under them
        lamp = np.exp(-(((xx - wf * 0.33) / (wf * 0.09)) ** 2) - (((yy - hf * 0.45) / (hf * 0.5)) ** 2))
        lamp += 0.8 * np.exp(
            -(((xx - wf * 0.72) / (wf * 0.07)) ** 2) - (((yy - hf * 0.55) / (hf * 0.45)) ** 2)
        )
        self.lamp = np.clip(70 + 185 * lamp, 0, 255).astype(np.uint8)

    def pass_lighting(self, plan: PassPlan):
        """(lamp, glare, shade) of one pass: the lamps' reflection pattern (brighter at a glare spot),
        the veil of direct glare and the multiplicative shadow (None where the scene has them off)."""
        wf, hf = self.lamp.shape[1], self.lamp.shape[0]
        lamp, glare, shade = self.lamp, None, None
        yy, xx = np.mgrid[0:hf, 0:wf].astype(np.float32)
        strength, gx, gy = plan.glare
        if strength > 0:
            spot = np.exp(-(((xx - gx * wf) / (wf * 0.05)) ** 2) - (((yy - gy * hf) / (hf * 0.12)) ** 2))
            lamp = np.clip(lamp.astype(np.float32) + 255.0 * strength * 3.0 * spot, 0, 255).astype(np.uint8)
            glare = np.clip(120.0 * strength * spot, 0, 255).astype(np.uint8)
            glare = cv2.merge([glare, glare, glare])
        depth, sx = plan.shadow
        if depth > 0:
            band = np.exp(-(((xx - sx * wf) / (wf * 0.08)) ** 2))
            shade = np.clip(255.0 * (1 - depth * band), 0, 255).astype(np.uint8)
            shade = cv2.merge([shade, shade, shade])
        return lamp, glare, shade

    def render(
        self,
        drawing: ub.UnderbodyDrawing,
        matrix,
        lut,
        blur_px: int,
        noise_pos,
        noise_neg,
        lighting=None,
    ):
        wf, hf = self.lamp.shape[1], self.lamp.shape[0]
        lamp, glare, shade = lighting if lighting is not None else (self.lamp, None, None)
        frame = self.background.copy()
        cv2.warpAffine(
            drawing.diffuse,
            matrix,
            (wf, hf),
            dst=frame,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        gloss = cv2.warpAffine(drawing.gloss, matrix, (wf, hf), flags=cv2.INTER_LINEAR, borderValue=0)
        highlight = cv2.multiply(gloss, lamp, scale=1.0 / 255.0)
        if shade is not None:
            frame = cv2.multiply(frame, shade, scale=1.0 / 255.0)
        frame = cv2.LUT(frame, lut)
        frame = cv2.add(frame, cv2.merge([highlight, highlight, highlight]))
        if glare is not None:
            frame = cv2.add(frame, glare)
        if blur_px > 1:
            frame = cv2.blur(frame, (blur_px, 1))
        frame = cv2.add(frame, noise_pos)
        return cv2.subtract(frame, noise_neg)


def illumination_lut(gain: float, gamma: float, colour_temp: float) -> np.ndarray:
    """Per-channel 256-entry LUT (BGR): gain, gamma and a colour-temperature tilt (a share)."""
    x = np.arange(256, dtype=np.float32) / 255.0
    tilt = np.array([1 + colour_temp, 1.0, 1 - colour_temp], np.float32)
    lut = np.stack([255.0 * np.clip(gain * t * x, 0, 1) ** gamma for t in tilt], axis=1)
    return np.clip(np.round(lut), 0, 255).astype(np.uint8).reshape(256, 1, 3)


def frame_offsets(plan: PassPlan, canvas_w: int, frame_w: int) -> np.ndarray:
    """Canvas left-edge x in the frame, one per frame: from off-screen right to off-screen left."""
    lead = 2 * plan.speed
    xs, x, k = [], frame_w + lead, 0
    while x > -canvas_w - lead:
        xs.append(x)
        x -= plan.speed * (1 + 0.03 * np.sin(0.4 * k + plan.pass_id))
        k += 1
    return np.array(xs, np.float64)


def pass_frames(
    plan: PassPlan, profile: Profile, synth: FrameSynth, drawing: ub.UnderbodyDrawing, wanted=None
):
    """Yield ``(k, frame, matrix)`` for the frames of one pass (all, or the indices in ``wanted``).

    The per-frame random draws happen for every frame, wanted or not, so a frame's pixels do not
    depend on which others are rendered (a stream's chunks can be rendered independently).
    """
    frame_size = profile.frame_size
    canvas_shape = drawing.gloss.shape
    offsets = frame_offsets(plan, canvas_shape[1], frame_size[0])
    rng = np.random.default_rng([plan.car_seed, 23])
    wf, hf = frame_size
    noise = rng.normal(0, plan.noise_sigma, (2, hf + 16, wf + 16, 3)).round().clip(-40, 40)
    noise_pos = np.clip(noise, 0, None).astype(np.uint8)
    noise_neg = np.clip(-noise, 0, None).astype(np.uint8)
    blur_px = max(1, int(round(plan.speed * EXPOSURE_FRACTION)))
    lighting = synth.pass_lighting(plan)
    n = len(offsets)
    for k, off in enumerate(offsets):
        t = k / max(1, n - 1)
        angle = plan.pose_angle * (1 + 0.2 * np.sin(3 * t))
        dy = plan.pose_dy * profile.scale
        m = pose_matrix(off, dy, angle, plan.pose_scale, canvas_shape, frame_size)
        oy, ox = int(rng.integers(0, 16)), int(rng.integers(0, 16))
        if wanted is not None and k not in wanted:
            continue
        lut = illumination_lut(plan.gain * (1 + plan.gain_drift * t), plan.gamma, plan.colour_temp)
        b = k % 2
        frame = synth.render(
            drawing,
            m,
            lut,
            blur_px,
            noise_pos[b, oy : oy + hf, ox : ox + wf],
            noise_neg[b, oy : oy + hf, ox : ox + wf],
            lighting,
        )
        yield k, frame, m


def pass_length(plan: PassPlan, profile: Profile) -> int:
    """Frames of a pass (from its plan alone, without drawing the car)."""
    canvas_w = int(round(ub.CANVAS_SIZE[0] * profile.scale))
    return len(frame_offsets(plan, canvas_w, profile.frame_size[0]))


def render_pass(plan: PassPlan, profile: Profile, data_root: Path, synth: FrameSynth | None = None) -> dict:
    """Render one pass to ``videos/pass_XXXX.mp4`` (atomic); return its GT row, poses and timings."""
    t0 = time.perf_counter()
    cv2.setNumThreads(1)
    frame_size = profile.frame_size
    synth = synth or FrameSynth(frame_size, profile.seed)
    drawing = ub.draw_underbody(plan.car_seed, profile.scale, plan.defect, scene=profile.scene_config)
    t_draw = time.perf_counter() - t0
    pose_rows = []
    out = Path(data_root) / plan.video_name
    with atomic_path(out) as tmp:
        writer = open_video_writer(tmp, profile, out)
        t1 = time.perf_counter()
        for k, frame, m in pass_frames(plan, profile, synth, drawing):
            writer.write(frame)
            pose_rows.append((plan.pass_id, k, *m.ravel().tolist()))
        writer.release()
        t_frames = time.perf_counter() - t1
    if plan.defect is not None:
        write_image(Path(data_root) / "defects" / f"pass_{plan.pass_id:04d}.png", drawing.defect_mask)
    return {
        "row": _gt_row(plan, drawing, profile, len(pose_rows)),
        "poses": pose_rows,
        "t_draw": t_draw,
        "t_frames": t_frames,
        "n_frames": len(pose_rows),
    }


def open_video_writer(tmp: Path, profile: Profile, name: Path) -> cv2.VideoWriter:
    """A writer for ``tmp`` with the profile's codec, fps and frame size (clear error naming ``name``)."""
    writer = cv2.VideoWriter(
        str(tmp), cv2.VideoWriter_fourcc(*profile.video_codec), profile.video_fps, profile.frame_size
    )
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write video {name} with codec {profile.video_codec!r}")
    return writer


def _gt_row(plan: PassPlan, drawing: ub.UnderbodyDrawing, profile: Profile, n_frames: int) -> dict:
    d = plan.defect
    row = {
        "pass_id": plan.pass_id,
        "underbody_id": f"ub{plan.pass_id:04d}",
        "video_path": plan.video_name,
        "n_frames": n_frames,
        "speed_px_per_frame": round(plan.speed, 4),
        "defective": int(d is not None),
        "defect_viewpoint": plan.defect_viewpoint,
        "defect_type": d.defect_type if d else "",
        "seam": d.seam if d else "",
        "size_class": d.size_class if d else "",
        "defect_length_px": round(d.length * profile.scale, 3) if d else 0.0,
        "defect_area_px": int((drawing.defect_mask > 0).sum()),
        "defect_mask_path": f"defects/pass_{plan.pass_id:04d}.png" if d else "",
        "crop_bbox": "",
    }
    if d is not None:
        x0, y0, w, h = template_box(plan.defect_viewpoint, profile.scale)
        ys, xs = np.nonzero(drawing.defect_mask[y0 : y0 + h, x0 : x0 + w])
        if len(xs):
            row["crop_bbox"] = f"{xs.min()} {ys.min()} {xs.max() + 1} {ys.max() + 1}"
    return row


def template_box(viewpoint: str, scale: float) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) of a viewpoint crop in canvas coordinates at ``scale``."""
    if viewpoint not in ub.SECTION_X0:
        raise ValueError(f"unknown viewpoint {viewpoint!r}; expected one of {VIEWPOINTS}")
    return (
        int(round(ub.SECTION_X0[viewpoint] * scale)),
        int(round(ub.CROP_Y0 * scale)),
        int(round(ub.CROP_W * scale)),
        int(round(ub.CROP_H * scale)),
    )


def region_labels(viewpoint: str, crop_size) -> np.ndarray:
    """Grid partition of a viewpoint crop into its regions (front 4, center 8, back 5), labels 1..K."""
    cols, rows = ub.REGION_GRID[viewpoint]
    w, h = crop_size
    xs = np.minimum((np.arange(w) * cols) // w, cols - 1)
    ys = np.minimum((np.arange(h) * rows) // h, rows - 1)
    return (ys[:, None] * cols + xs[None, :] + 1).astype(np.uint8)


def neutral_image(drawing: ub.UnderbodyDrawing, lamp_level: float) -> np.ndarray:
    """A drawing lit evenly: the lamps' reflections at one level (``lamp_level`` of full), no noise, no
    blur. Templates use the lamps' mean; notebook 00's realism figures use the same rendering."""
    gloss = (drawing.gloss * float(lamp_level)).astype(np.uint8)
    return cv2.add(drawing.diffuse, cv2.merge([gloss, gloss, gloss]))


def write_templates(profile: Profile, data_root: Path, roi_margin: float = DEFAULT_ROI_MARGIN) -> dict:
    """Render the reference car, cut the three viewpoint templates and their masks."""
    drawing = ub.draw_underbody(TEMPLATE_CAR_SEED, profile.scale, scene=profile.scene_config)
    synth = FrameSynth(profile.frame_size, profile.seed)
    seams = ub.model_seams()
    shape = drawing.gloss.shape
    traj = ub.trajectory_mask(seams, profile.scale, shape)
    roi = ub.trajectory_mask(seams, profile.scale, shape, extra_radius=roi_margin)
    # a neutral frame-like rendering: lamps' reflections averaged, no noise, no blur
    lit = neutral_image(drawing, float(synth.lamp.mean()) / 255.0)
    meta = {"roi_margin_paper_px": roi_margin, "scale": profile.scale, "viewpoints": {}}
    tdir = Path(data_root) / "templates"
    for view in VIEWPOINTS:
        x0, y0, w, h = template_box(view, profile.scale)
        crop = np.s_[y0 : y0 + h, x0 : x0 + w]
        write_image(tdir / f"{view}.png", lit[crop])
        write_image(tdir / f"{view}_trajectory.png", traj[crop])
        write_image(tdir / f"{view}_roi.png", roi[crop])
        write_image(tdir / f"{view}_regions.png", region_labels(view, (w, h)))
        meta["viewpoints"][view] = {
            "template": f"templates/{view}.png",
            "trajectory_mask": f"templates/{view}_trajectory.png",
            "roi_mask": f"templates/{view}_roi.png",
            "regions": f"templates/{view}_regions.png",
            "n_regions": int(np.prod(ub.REGION_GRID[view])),
            "region_grid": list(ub.REGION_GRID[view]),
            "canvas_box": [x0, y0, w, h],
            "seams": [s.name for s in seams if s.viewpoint == view],
        }
    write_json(tdir / "templates.json", meta)
    return meta


def _render_job(args):
    plan, profile, root = args
    return render_pass(plan, profile, Path(root))


def simulate_line(
    profile: Profile,
    data_root: Path | str,
    seed: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    max_passes: int | None = None,
) -> dict:
    """Render the whole line for ``profile`` under ``data_root``; return the run summary.

    Same profile, seed and environment give identical bytes (each pass has its own seed,
    so the number of workers does not change the output).
    """
    root = ensure_writable_dir(data_root, "data root")
    if max_passes is not None and max_passes < 0:
        raise ValueError(f"max_passes must be >= 0, got {max_passes}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    plans = plan_passes(profile, seed)
    if max_passes is not None:
        plans = plans[:max_passes]
    workers = workers or default_workers()
    t0 = time.perf_counter()
    templates = write_templates(profile, root)
    jobs = [(p, profile, str(root)) for p in plans]
    results = ordered_map(_render_job, jobs, workers, f"simulating {profile.name} line", "pass", progress)
    wall = time.perf_counter() - t0
    passes = pd.DataFrame([r["row"] for r in results])
    write_csv(root / "passes.csv", passes)
    pose_cols = ["pass_id", "frame_index", "m00", "m01", "m02", "m10", "m11", "m12"]
    poses = pd.DataFrame([p for r in results for p in r["poses"]], columns=pose_cols)
    write_text_poses(root / "poses.csv", poses)
    n_frames = int(sum(r["n_frames"] for r in results))
    t_frames = float(sum(r["t_frames"] for r in results))
    t_draw = float(sum(r["t_draw"] for r in results))
    video_bytes = sum((root / p).stat().st_size for p in passes["video_path"]) if len(passes) else 0
    summary = {
        "profile": profile.name,
        "seed": profile.seed if seed is None else int(seed),
        "frame_size": list(profile.frame_size),
        "crop_size": list(profile.crop_size),
        "n_passes": len(plans),
        "n_defective": int(passes["defective"].sum()) if len(passes) else 0,
        "n_frames": n_frames,
        "scene": profile.scene_config.identity(),
        "templates": templates["viewpoints"],
        # timings vary run to run; they are reported, never part of the byte-identical outputs
        "timing": {
            "wall_s": round(wall, 2),
            "workers": workers,
            "draw_s_per_underbody": round(t_draw / max(1, len(plans)), 4),
            "frames_per_s_one_core": round(n_frames / max(t_frames, 1e-9), 1),
            "frames_per_s_wall": round(n_frames / max(wall, 1e-9), 1),
        },
        "data_bytes": int(video_bytes),
    }
    write_json(root / "simulation.json", summary)
    return summary


def write_text_poses(path: Path, poses: pd.DataFrame) -> None:
    """Poses need full float precision (a GT mask warped with rounded poses would drift)."""
    from lib.fileio import write_text

    write_text(path, poses.to_csv(index=False, lineterminator="\n", float_format="%.9g"))


def read_passes(data_root: Path | str) -> pd.DataFrame:
    path = Path(data_root) / "passes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no passes table at {path}; run the acquisition (notebook 00) first")
    return pd.read_csv(path, keep_default_na=False)


def read_poses(data_root: Path | str) -> pd.DataFrame:
    path = Path(data_root) / "poses.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no poses table at {path}; run the acquisition (notebook 00) first")
    return pd.read_csv(path)


def frame_pose(poses: pd.DataFrame, pass_id: int, frame_index: int) -> np.ndarray:
    row = poses[(poses.pass_id == pass_id) & (poses.frame_index == frame_index)]
    if row.empty:
        raise KeyError(f"no pose for pass {pass_id} frame {frame_index}")
    return row[["m00", "m01", "m02", "m10", "m11", "m12"]].to_numpy(np.float64).reshape(2, 3)


def frame_defect_mask(data_root: Path | str, pass_id: int, frame_index: int, poses=None, passes=None):
    """The exact GT mask (uint8 {0,255}) of a frame: the pass's canvas mask warped by its pose."""
    root = Path(data_root)
    passes = read_passes(root) if passes is None else passes
    poses = read_poses(root) if poses is None else poses
    row = passes[passes.pass_id == pass_id]
    if row.empty:
        raise KeyError(f"pass {pass_id} not in {root / 'passes.csv'}")
    meta = json.loads((root / "simulation.json").read_text())
    wf, hf = meta["frame_size"]
    mask_path = row.iloc[0]["defect_mask_path"]
    if not mask_path:
        return np.zeros((hf, wf), np.uint8)
    canvas = cv2.imread(str(root / mask_path), cv2.IMREAD_GRAYSCALE)
    m = frame_pose(poses, pass_id, frame_index)
    warped = cv2.warpAffine(canvas, m, (wf, hf), flags=cv2.INTER_NEAREST, borderValue=0)
    return warped


def read_video_frames(path: Path | str, start: int = 0, stop: int | None = None):
    """Stream frames (index, BGR) of a video without loading it whole; clear error if unreadable."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"OpenCV cannot open video file: {path}")
    try:
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        k = start
        while stop is None or k < stop:
            ok, frame = cap.read()
            if not ok:
                break
            yield k, frame
            k += 1
    finally:
        cap.release()


def viewpoint_origin_in_frame(matrix: np.ndarray, viewpoint: str, scale: float) -> tuple[float, float]:
    """Where a viewpoint crop's top-left corner lands in a frame with this pose."""
    x0, y0, _, _ = template_box(viewpoint, scale)
    return tuple((matrix @ np.array([x0, y0, 1.0])).tolist())


def peak_frame(poses: pd.DataFrame, pass_id: int, viewpoint: str, profile: Profile) -> int:
    """The frame in which a viewpoint is best visible: fully inside and closest to the centre."""
    wf, hf = profile.frame_size
    w, h = profile.crop_size
    rows = poses[poses.pass_id == pass_id]
    best, best_d = -1, np.inf
    for _, r in rows.iterrows():
        m = r[["m00", "m01", "m02", "m10", "m11", "m12"]].to_numpy(np.float64).reshape(2, 3)
        x, y = viewpoint_origin_in_frame(m, viewpoint, profile.scale)
        if x < 0 or y < 0 or x + w > wf or y + h > hf:
            continue
        d = abs(x + w / 2 - wf / 2)
        if d < best_d:
            best, best_d = int(r.frame_index), d
    if best < 0:
        raise ValueError(f"viewpoint {viewpoint!r} is never fully visible in pass {pass_id}")
    return best


def read_frame(path: Path | str, index: int) -> np.ndarray:
    """One frame of a video (sequential decode up to it; fine for figures, not for loops)."""
    for k, frame in read_video_frames(path, 0, index + 1):
        if k == index:
            return frame
    raise IndexError(f"video {path} has no frame {index}")
