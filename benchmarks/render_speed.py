"""Render speed of the simulated line at a given frame size, one core, in one run.

    .venv/bin/python benchmarks/render_speed.py --width 960 --height 540 --passes 6

Prints frames per second of frame synthesis (warp, lighting, blur, noise, MPEG-4 encoding),
the per-underbody drawing time, and the ratio to the 50 frames/s target.
"""

from __future__ import annotations

import argparse
import tempfile

from lib.acquire.sealant_line import simulate_line
from lib.config import load_profile

TARGET_FPS = 50.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=540)
    ap.add_argument("--passes", type=int, default=6)
    args = ap.parse_args()
    prof = load_profile("paper").with_overrides(frame_width=args.width, frame_height=args.height)
    with tempfile.TemporaryDirectory() as tmp:
        s = simulate_line(prof, tmp, workers=1, max_passes=args.passes, progress=False)
    t = s["timing"]
    fps = t["frames_per_s_one_core"]
    print(
        f"frame {s['frame_size'][0]}x{s['frame_size'][1]}, {s['n_frames']} frames from {s['n_passes']} passes"
    )
    print(f"frame synthesis: {fps} frames/s on one core (target {TARGET_FPS}: ratio {fps / TARGET_FPS:.2f}x)")
    print(
        f"drawing: {t['draw_s_per_underbody']} s per underbody; end to end {t['frames_per_s_wall']} frames/s"
    )


if __name__ == "__main__":
    main()
