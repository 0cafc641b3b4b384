"""A fresh conveyor stream for the inspection loop (paper 8.2-8.4): cars never used for training or
calibration, a nozzle-drift episode on one robot's seam, and scattered single defects.

The stream is cut into fixed-length video chunks (``chunk_00000.mp4``, ...), as a line recorder
rotates its files: chunk boundaries fall anywhere, also inside a car, so an inspector must find
the cars from the template-matching scores, not from files. Chunks render in parallel; each frame
is drawn with the same per-frame random draws as in a one-file rendering, so the bytes do not
depend on the number of workers.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib.acquire import sealant_line as sl
from lib.acquire import underbody as ub
from lib.config import VIEWPOINTS, Profile
from lib.fileio import atomic_path, ensure_writable_dir, write_csv, write_json
from lib.parallel import default_workers, ordered_map

#: which robot lays which seam (the simulated cell: seven robots, one to three seams each)
SEAM_ROBOT = {
    "front_upper": "R1",
    "front_lower": "R1",
    "front_cross": "R2",
    "front_arch": "R2",
    "center_tunnel_l": "R3",
    "center_tunnel_r": "R3",
    "center_cross_a": "R4",
    "center_cross_b": "R4",
    "center_sill": "R5",
    "center_sill_r": "R5",
    "back_main": "R6",
    "back_well": "R6",
    "back_flange_0": "R7",
    "back_flange_1": "R7",
    "back_flange_2": "R7",
}
#: the stream's cars are drawn from their own seed namespace (training passes use 17)
STREAM_NAMESPACE = 97


@dataclasses.dataclass(frozen=True)
class DriftEpisode:
    """A robot's nozzle drifting over consecutive cars: its seam's bead shifts sideways, more each car."""

    seam: str = "center_tunnel_l"
    onset: int = 40  # index of the first drifting car in the stream
    cars: int = 15  # drifting cars (the drift is then corrected)
    start_strength: float = 0.8  # sideways shift at onset, in bead radii
    end_strength: float = 3.2  # at the last drifting car
    length: float = 260.0  # paper px of the seam affected
    position: float = 0.5

    def __post_init__(self):
        if self.seam not in SEAM_ROBOT:
            raise ValueError(f"drift seam {self.seam!r} is not a robot seam; one of {sorted(SEAM_ROBOT)}")
        if self.onset < 0 or self.cars < 1:
            raise ValueError(f"drift needs onset >= 0 and cars >= 1, got {self.onset}, {self.cars}")

    def strength(self, car: int) -> float | None:
        """The shift of car ``car`` (None outside the episode)."""
        i = car - self.onset
        if not 0 <= i < self.cars:
            return None
        return self.start_strength + (self.end_strength - self.start_strength) * i / max(1, self.cars - 1)


def seam_viewpoint(seam: str) -> str:
    return next(s.viewpoint for s in ub.model_seams() if s.name == seam)


def plan_stream(
    profile: Profile, n_cars: int, seed: int = 0, drift: DriftEpisode | None = None, defect_rate: float = 0.04
) -> list[sl.PassPlan]:
    """Plans of ``n_cars`` fresh cars: the drift episode's cars plus single defects at ``defect_rate``."""
    if n_cars < 1:
        raise ValueError(f"n_cars must be >= 1, got {n_cars}")
    if not 0 <= defect_rate <= 1:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    plans = []
    n_defects = 0
    for k in range(n_cars):
        rng = np.random.default_rng([seed, STREAM_NAMESPACE, k])
        defect, view = None, ""
        strength = drift.strength(k) if drift else None
        if strength is not None:
            view = seam_viewpoint(drift.seam)
            defect = ub.ProcessDefect(
                "misalignment", drift.seam, drift.position, drift.length, strength, "drift"
            )
        elif rng.random() < defect_rate:
            view = VIEWPOINTS[int(rng.integers(len(VIEWPOINTS)))]
            defect = sl.draw_process_defect(rng, view, n_defects)
            n_defects += 1
        car_seed = int(np.random.SeedSequence([seed, STREAM_NAMESPACE, 1, k]).generate_state(1)[0])
        plans.append(sl.draw_pass_plan(k, car_seed, rng, profile, defect, view))
    return plans


def _render_chunk(job):
    """Frames [start, stop) of the stream into one video chunk (a worker's unit)."""
    import cv2

    cv2.setNumThreads(1)
    plans, starts, profile, start, stop, path = job
    synth = sl.FrameSynth(profile.frame_size, profile.seed)
    with atomic_path(Path(path)) as tmp:
        writer = sl.open_video_writer(tmp, profile, Path(path))
        for plan, first in zip(plans, starts, strict=True):
            n = sl.pass_length(plan, profile)
            lo, hi = max(start, first), min(stop, first + n)
            if lo >= hi:
                continue
            drawing = ub.draw_underbody(plan.car_seed, profile.scale, plan.defect, scene=profile.scene_config)
            wanted = set(range(lo - first, hi - first))
            for _, frame, _ in sl.pass_frames(plan, profile, synth, drawing, wanted):
                writer.write(frame)
        writer.release()
    return stop - start


def render_stream(
    profile: Profile,
    out_dir,
    n_cars: int,
    seed: int = 0,
    drift: DriftEpisode | None = DriftEpisode(),
    defect_rate: float = 0.04,
    chunk_frames: int = 200,
    workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Render the stream into ``out_dir`` (chunks + ``cars.csv``, the ground truth); return cars.csv.

    ``cars.csv`` has, per car: its first and last frame in the stream, whether it is defective, the
    defect's viewpoint, type, seam and robot, and whether it belongs to the drift episode.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    out = ensure_writable_dir(out_dir, "stream folder")
    t0 = time.perf_counter()
    plans = plan_stream(profile, n_cars, seed, drift, defect_rate)
    lengths = [sl.pass_length(p, profile) for p in plans]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
    total = int(sum(lengths))
    jobs = []
    for c, start in enumerate(range(0, total, chunk_frames)):
        stop = min(total, start + chunk_frames)
        use = [i for i, (s, n) in enumerate(zip(starts, lengths, strict=True)) if s < stop and s + n > start]
        jobs.append(
            (
                [plans[i] for i in use],
                [starts[i] for i in use],
                profile,
                start,
                stop,
                str(out / f"chunk_{c:05d}.mp4"),
            )
        )
    ordered_map(_render_chunk, jobs, workers or default_workers(), "rendering stream", "chunk", progress)
    cars = pd.DataFrame(
        {
            "car": [p.pass_id for p in plans],
            "first_frame": starts,
            "last_frame": [s + n - 1 for s, n in zip(starts, lengths, strict=True)],
            "defective": [int(p.defect is not None) for p in plans],
            "defect_viewpoint": [p.defect_viewpoint for p in plans],
            "defect_type": [p.defect.defect_type if p.defect else "" for p in plans],
            "seam": [p.defect.seam if p.defect else "" for p in plans],
            "robot": [SEAM_ROBOT[p.defect.seam] if p.defect else "" for p in plans],
            "drift": [int(p.defect is not None and p.defect.size_class == "drift") for p in plans],
            "strength": [round(p.defect.strength, 4) if p.defect else 0.0 for p in plans],
        }
    )
    write_csv(out / "cars.csv", cars)
    write_json(
        out / "stream.json",
        {
            "profile": profile.name,
            "seed": seed,
            "n_cars": n_cars,
            "n_frames": total,
            "fps": profile.video_fps,
            "chunk_frames": chunk_frames,
            "drift": dataclasses.asdict(drift) if drift else None,
            "defect_rate": defect_rate,
            "render_s": round(time.perf_counter() - t0, 2),
        },
    )
    return cars
