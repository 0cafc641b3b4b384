"""Underbody extraction by template matching (paper section 4.1).

``cv2.matchTemplate`` with TM_CCOEFF_NORMED and ``cv2.minMaxLoc``, coarse to fine: the
search runs on frames and templates downscaled by ``coarse``, then refines at full
resolution in a small window around the coarse peak. Videos are streamed frame by frame.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.acquire.sealant_line import read_video_frames
from lib.fileio import read_image, write_csv, write_image


@dataclasses.dataclass(frozen=True)
class Match:
    score: float
    x: int
    y: int


class TemplateMatcher:
    """Coarse-to-fine TM_CCOEFF_NORMED matching of one template (grey)."""

    def __init__(
        self, template: np.ndarray, coarse: int = 4, name: str = "template", refine_above: float = 0.25
    ):
        if coarse < 1:
            raise ValueError(f"coarse must be >= 1, got {coarse}")
        self.name = name
        #: frames whose coarse score is below this skip the (costly) full-resolution refinement
        self.refine_above = refine_above
        self.full = _grey(template)
        self.coarse = coarse
        h, w = self.full.shape
        self.small = cv2.resize(
            self.full, (max(8, w // coarse), max(8, h // coarse)), interpolation=cv2.INTER_AREA
        )

    @property
    def size(self) -> tuple[int, int]:
        return self.full.shape[1], self.full.shape[0]

    def match(self, frame: np.ndarray) -> Match:
        g = _grey(frame)
        fh, fw = g.shape
        tw, th = self.size
        if tw > fw or th > fh:
            raise ValueError(f"{self.name} ({tw}x{th}) is larger than the frame ({fw}x{fh})")
        c = self.coarse
        if c > 1:
            small = cv2.resize(g, (fw // c, fh // c), interpolation=cv2.INTER_AREA)
            if small.shape[0] >= self.small.shape[0] and small.shape[1] >= self.small.shape[1]:
                res = cv2.matchTemplate(small, self.small, cv2.TM_CCOEFF_NORMED)
                _, coarse_score, _, (cx, cy) = cv2.minMaxLoc(res)
                if coarse_score < self.refine_above:
                    return Match(float(coarse_score), int(cx * c), int(cy * c))
                pad = c + 2
                x0, y0 = max(0, cx * c - pad), max(0, cy * c - pad)
                x1, y1 = min(fw, cx * c + pad + tw), min(fh, cy * c + pad + th)
                res = cv2.matchTemplate(g[y0:y1, x0:x1], self.full, cv2.TM_CCOEFF_NORMED)
                _, score, _, (x, y) = cv2.minMaxLoc(res)
                return Match(float(score), int(x + x0), int(y + y0))
        res = cv2.matchTemplate(g, self.full, cv2.TM_CCOEFF_NORMED)
        _, score, _, (x, y) = cv2.minMaxLoc(res)
        return Match(float(score), int(x), int(y))


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def load_matchers(data_root: Path | str, viewpoints, coarse: int = 4) -> dict[str, TemplateMatcher]:
    root = Path(data_root)
    return {
        v: TemplateMatcher(
            read_image(root / "templates" / f"{v}.png", cv2.IMREAD_COLOR), coarse, f"template {v!r}"
        )
        for v in viewpoints
    }


class VideoDecodeError(OSError):
    """A video decoded fewer (or more) frames than ``passes.csv`` says it has."""


def scan_video(
    video: Path | str, matchers: dict[str, TemplateMatcher], keep_frames=None, expected_frames=None
) -> tuple[pd.DataFrame, dict]:
    """Match every template on every frame (streamed). Returns the score table and the frames
    whose indices are in ``keep_frames`` (a callable index -> bool), for cropping later.

    With ``expected_frames`` (from ``passes.csv``), a video that stops decoding early (corrupt or
    truncated) raises ``VideoDecodeError`` naming the file and the frame where decoding stopped,
    instead of passing a partial scan on to the template threshold.
    """
    rows, kept = [], {}
    decoded = 0
    for k, frame in read_video_frames(video):
        decoded = k + 1
        for view, m in matchers.items():
            r = m.match(frame)
            rows.append((k, view, r.score, r.x, r.y))
        if keep_frames is not None and keep_frames(k):
            kept[k] = frame
    if expected_frames is not None and decoded != int(expected_frames):
        raise VideoDecodeError(
            f"video {video}: decoding stopped at frame {decoded} of {int(expected_frames)} "
            f"(passes.csv says {int(expected_frames)} frames); the file is corrupt or truncated"
            if decoded < int(expected_frames)
            else f"video {video}: decoded {decoded} frames, passes.csv says {int(expected_frames)}"
        )
    return pd.DataFrame(rows, columns=["frame_index", "viewpoint", "score", "x", "y"]), kept


def select_frames(scores: pd.DataFrame, viewpoint: str, threshold: float, n: int = 1) -> pd.DataFrame:
    """The peak frame of a viewpoint plus the n-1 best distinct frames near it above ``threshold``.

    Raises a clear error (with the best score seen) when the template never reaches the threshold.
    """
    s = scores[scores.viewpoint == viewpoint]
    if s.empty:
        raise ValueError(f"no scores for viewpoint {viewpoint!r}")
    above = s[s.score >= threshold]
    if above.empty:
        best = s.loc[s.score.idxmax()]
        raise LookupError(
            f"template {viewpoint!r} never reaches the threshold {threshold:.2f}; "
            f"best score seen {best.score:.3f} at frame {int(best.frame_index)}"
        )
    peak = above.loc[above.score.idxmax()]
    # near the peak first, then by score: distinct moments of the same underbody
    cand = above.assign(dist=(above.frame_index - peak.frame_index).abs()).sort_values(
        ["dist", "score"], ascending=[True, False], kind="stable"
    )
    return cand.head(n).drop(columns="dist").sort_values("frame_index").reset_index(drop=True)


def crop(frame: np.ndarray, x: int, y: int, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    fh, fw = frame.shape[:2]
    if x < 0 or y < 0 or x + w > fw or y + h > fh:
        raise ValueError(f"crop ({x}, {y}, {w}x{h}) leaves the frame ({fw}x{fh})")
    return frame[y : y + h, x : x + w].copy()


def _extract_pass(job):
    """Scan one pass and cut its crops (a worker's unit): (crops, scores, rejected, frames, match s)."""
    root, row, wanted, matchers, threshold, out_dir, gt_mask_for = job
    video = Path(row["video_path"])
    video = video if video.is_absolute() else root / video
    t0 = time.perf_counter()
    expected = row.get("n_frames")
    scores, _ = scan_video(video, {v: matchers[v] for v in wanted}, expected_frames=expected)
    t_match = time.perf_counter() - t0
    n_frames = int(scores.frame_index.nunique())
    scores.insert(0, "pass_id", int(row["pass_id"]))
    picks, rejected, crops = [], [], []
    for view, n in wanted.items():
        try:
            sel = select_frames(scores, view, threshold, n)
        except LookupError as exc:
            rejected.append({"pass_id": int(row["pass_id"]), "viewpoint": view, "reason": str(exc)})
            continue
        picks += [(view, r) for _, r in sel.iterrows()]
    need = {int(r.frame_index) for _, r in picks}
    frames = {k: f for k, f in read_video_frames(video) if k in need} if need else {}
    for rank, (view, r) in enumerate(picks):
        k = int(r.frame_index)
        size = matchers[view].size
        image = crop(frames[k], int(r.x), int(r.y), size)
        rel = f"{out_dir}/{view}/{row['underbody_id']}_f{k:03d}.png"
        write_image(root / rel, image)
        rec = {
            "pass_id": int(row["pass_id"]),
            "underbody_id": row["underbody_id"],
            "viewpoint": view,
            "frame_index": k,
            "match_score": round(float(r.score), 6),
            "match_x": int(r.x),
            "match_y": int(r.y),
            "image_path": rel,
            "mask_path": "",
            "rank": rank,
        }
        if gt_mask_for is not None:
            full = gt_mask_for(int(row["pass_id"]), k)
            if full is not None and full.any():
                m = crop(full, int(r.x), int(r.y), size)
                if m.any():
                    mrel = f"{out_dir}/{view}/{row['underbody_id']}_f{k:03d}_mask.png"
                    write_image(root / mrel, m)
                    rec["mask_path"] = mrel
        crops.append(rec)
    return crops, scores, rejected, n_frames, t_match


def extract_crops(
    data_root: Path | str,
    plan: pd.DataFrame,
    threshold: float,
    frames_for,
    coarse: int = 4,
    out_dir: str = "frames",
    gt_mask_for=None,
    progress: bool = True,
    workers: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Scan every pass in ``plan`` and cut the crops it asks for.

    ``frames_for(row) -> {viewpoint: n_frames}`` says which viewpoints and how many frames to take
    from a pass; ``gt_mask_for(pass_id, frame_index)`` (optional, picklable for ``workers`` > 1)
    gives the frame's GT mask, cropped at the same matched location. Passes are scanned by
    ``workers`` processes (default: up to 2 cores); the output does not depend on their number.
    Returns (crops table, all scores, timing). A pass whose template never reaches the threshold
    is recorded as rejected, not fatal.
    """
    from lib.parallel import default_workers, ordered_map

    root = Path(data_root)
    matchers = load_matchers(root, sorted({v for _, r in plan.iterrows() for v in frames_for(r)}), coarse)
    jobs = []
    for _, row in plan.iterrows():
        wanted = frames_for(row)
        jobs.append(
            (root, row.to_dict(), wanted, {v: matchers[v] for v in wanted}, threshold, out_dir, gt_mask_for)
        )
    workers = workers or default_workers()
    results = ordered_map(_extract_pass, jobs, workers, "extracting", "pass", progress, chunksize=4)
    crops = [c for r in results for c in r[0]]
    all_scores = [r[1] for r in results]
    rejected = [x for r in results for x in r[2]]
    n_frames = sum(r[3] for r in results)
    t_match = sum(r[4] for r in results)
    scores = pd.concat(all_scores, ignore_index=True) if all_scores else pd.DataFrame()
    table = pd.DataFrame(crops)
    timing = {
        "frames": n_frames,
        "match_s": round(t_match, 2),
        "fps": round(n_frames / max(t_match, 1e-9), 1),
        "workers": workers,
    }
    if rejected:
        timing["rejected"] = rejected
    return table, scores, timing


def save_extraction(root: Path, crops: pd.DataFrame, scores: pd.DataFrame) -> None:
    write_csv(root / "extraction" / "crops.csv", crops)
    write_csv(root / "extraction" / "scores.csv", scores)
