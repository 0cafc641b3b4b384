"""Bring your own line: register videos and viewpoint templates instead of simulating."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.config import VIEWPOINTS
from lib.fileio import ensure_writable_dir, read_image, write_csv, write_image, write_json


def probe_video(path: Path | str) -> dict:
    """Frame count and size of a video; a clear error naming the file if OpenCV cannot read it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError(f"OpenCV cannot open video file: {path}")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise OSError(f"OpenCV opened but cannot decode a frame of video file: {path}")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return {"n_frames": n, "width": frame.shape[1], "height": frame.shape[0]}
    finally:
        cap.release()


def underbody_ids(videos: list[str | Path], videos_root: str | Path | None = None) -> list[str]:
    """One unique id per video: its path relative to ``videos_root`` without the suffix, ``/`` -> ``__``.

    ``videos_root`` defaults to the videos' common folder, so ``a/pass.mp4`` and ``b/pass.mp4``
    become ``a__pass`` and ``b__pass``, not one underbody twice. Two videos with one id are an error.
    """
    paths = [Path(v).resolve() for v in videos]
    base = (
        Path(videos_root).resolve()
        if videos_root is not None
        else Path(os.path.commonpath([p.parent for p in paths]))
    )
    ids, seen = [], {}
    for v, p in zip(videos, paths, strict=True):
        try:
            rel = p.relative_to(base)
        except ValueError:
            raise ValueError(f"video {v} is not inside videos_root {base}") from None
        uid = rel.with_suffix("").as_posix().replace("/", "__")
        if uid in seen:
            raise ValueError(f"videos {seen[uid]} and {v} both give underbody id {uid!r}; rename one")
        seen[uid] = v
        ids.append(uid)
    return ids


def register_user_videos(
    videos: list[str | Path],
    templates: dict[str, str | Path],
    data_root: str | Path,
    roi_masks: dict[str, str | Path] | None = None,
    videos_root: str | Path | None = None,
) -> pd.DataFrame:
    """Write ``passes.csv`` and ``templates/`` for user videos (one underbody pass per video).

    ``videos`` is a list of video paths (a single string or folder is refused, never iterated
    character by character). ``templates`` maps viewpoint (front/center/back) to an image;
    ``roi_masks`` optionally maps viewpoint to a binary sealant-trajectory mask of the template's
    size (else the whole template is the ROI, and the masking study is meaningless: a warning says
    so). Underbody ids come from ``underbody_ids(videos, videos_root)``.
    """
    if isinstance(videos, str | Path) or not isinstance(videos, list | tuple):
        raise TypeError(
            f"videos must be a list of video paths, got {type(videos).__name__} {videos!r}; "
            "for a folder, pass sorted(Path(folder).glob('*.mp4'))"
        )
    if not videos:
        raise ValueError("videos is an empty list: give at least one video path (None simulates the line)")
    ids = underbody_ids(videos, videos_root)
    root = ensure_writable_dir(data_root, "data root")
    unknown = set(templates) - set(VIEWPOINTS)
    if unknown or not templates:
        raise ValueError(f"templates: keys must be among {VIEWPOINTS}, got {sorted(templates)}")
    infos = [probe_video(v) for v in videos]
    fw, fh = min(i["width"] for i in infos), min(i["height"] for i in infos)
    meta = {"roi_margin_paper_px": 0.0, "scale": None, "viewpoints": {}, "user_data": True}
    for view, tpath in templates.items():
        tpl = read_image(tpath, cv2.IMREAD_COLOR)
        th, tw = tpl.shape[:2]
        if tw > fw or th > fh:
            raise ValueError(
                f"template {tpath} ({tw}x{th}) is larger than the smallest video frame ({fw}x{fh})"
            )
        tdir = root / "templates"
        write_image(tdir / f"{view}.png", tpl)
        if roi_masks and view in roi_masks:
            mask = read_image(roi_masks[view], cv2.IMREAD_GRAYSCALE)
            if mask.shape != (th, tw):
                raise ValueError(
                    f"ROI mask {roi_masks[view]} is {mask.shape[::-1]}, template {tpath} is {(tw, th)}"
                )
            traj = np.where(mask > 0, 255, 0).astype(np.uint8)
        else:
            import warnings

            warnings.warn(
                f"no ROI mask for viewpoint {view!r}: the whole template is used as ROI", stacklevel=2
            )
            traj = np.full((th, tw), 255, np.uint8)
        write_image(tdir / f"{view}_trajectory.png", traj)
        write_image(tdir / f"{view}_roi.png", traj)
        write_image(tdir / f"{view}_regions.png", np.ones((th, tw), np.uint8))
        meta["viewpoints"][view] = {
            "template": f"templates/{view}.png",
            "trajectory_mask": f"templates/{view}_trajectory.png",
            "roi_mask": f"templates/{view}_roi.png",
            "regions": f"templates/{view}_regions.png",
            "n_regions": 1,
        }
    rows = []
    for k, (v, info) in enumerate(zip(videos, infos, strict=True)):
        rows.append(
            {
                "pass_id": k,
                "underbody_id": ids[k],
                "video_path": str(Path(v).resolve()),
                "n_frames": info["n_frames"],
                "defective": 0,
                "defect_viewpoint": "",
                "defect_type": "",
                "defect_mask_path": "",
            }
        )
    passes = pd.DataFrame(rows)
    write_json(root / "templates" / "templates.json", meta)
    write_csv(root / "passes.csv", passes)
    write_json(root / "simulation.json", {"profile": "user", "frame_size": [fw, fh], "n_passes": len(rows)})
    return passes
