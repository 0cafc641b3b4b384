"""The inspection loop: frames in, one verdict per underbody out (paper 8.2-8.4).

``Inspector`` loads a verified bundle, segments passes from the template-matching scores
(``segment.PassSegmenter``), scores each viewpoint's peak crop with its model, finds anomaly
regions (connected components above the pixel threshold, with their region, seam and robot),
fuses the views, feeds the per-robot alert rules and returns a JSON-able record per underbody.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import cv2
import numpy as np

from lib.config import VIEWPOINTS
from lib.extract.template_matching import TemplateMatcher
from lib.fileio import read_image, write_image
from lib.inspection.alerts import AlertMonitor, load_alert_config
from lib.inspection.bundle import BundleError, map_to_crop, seam_scores, verify_bundle
from lib.inspection.segment import Pass, PassSegmenter
from lib.masking import apply_roi
from lib.models.base import AnomalyModel
from lib.models.data import resize_image


class StreamError(OSError):
    """A source that cannot be read, or whose frames do not fit the bundle."""


def fuse(z: dict[str, float], fusion: dict) -> dict:
    """Underbody scores from the views' calibrated scores z (>= 0 means anomalous): their max, and
    the logistic fusion fitted on validation (a missing view enters with its validation-normal median)."""
    zmax = max(z.values()) if z else float("nan")
    feats = [z.get(v, fusion["normal_median"][v]) for v in VIEWPOINTS]
    logit = fusion["intercept"] + float(np.dot(fusion["coef"], feats))
    p = 1.0 / (1.0 + np.exp(-logit))
    return {
        "max_z": round(zmax, 4),
        "max_verdict": bool(zmax >= 0),
        "logistic_p": round(float(p), 4),
        "logistic_verdict": bool(p >= fusion["threshold"]),
    }


def overlay(crop: np.ndarray, crop_map: np.ndarray, threshold: float, regions: list[dict]) -> np.ndarray:
    """The crop with the anomaly map as a heat overlay above the threshold and region boxes."""
    lo, hi = float(crop_map.min()), float(crop_map.max())
    norm = np.clip((crop_map - lo) / max(hi - lo, 1e-12), 0, 1)
    heat = cv2.applyColorMap((255 * norm).astype(np.uint8), cv2.COLORMAP_JET)
    out = crop.copy()
    hot = crop_map >= threshold
    out[hot] = (0.5 * crop[hot] + 0.5 * heat[hot]).astype(np.uint8)
    for r in regions:
        x0, y0, x1, y1 = r["bbox"]
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 0, 255), 2)
    return out


class Inspector:
    """One bundle, ready to inspect frames; ``push``/``finish`` return underbody records."""

    def __init__(
        self,
        bundle_dir,
        out_dir=None,
        overlays: str = "all",
        alerts_config=None,
        max_gap=None,
        backend: str = "torch",
        threads: int | None = None,
        precision: str | None = None,
    ):
        """``backend="onnxruntime"``: each view's model is exported to ONNX (into a temporary folder; the
        bundle is never modified) and run under ONNX Runtime -- faster at the quick sizes on this CPU.
        ``precision`` (torch backend): None runs each model at the precision it was trained and
        calibrated at (its checkpoint's); fp32 | bf16 | auto overrides the inference precision."""
        if overlays not in ("all", "anomalous", "none"):
            raise ValueError(f"overlays must be 'all', 'anomalous' or 'none', got {overlays!r}")
        d = Path(bundle_dir)
        self.info = verify_bundle(d)
        self.dir = d
        self.out = Path(out_dir) if out_dir else None
        self.overlays = overlays
        self.frame_size = tuple(self.info["frame_size"])
        self.crop_size = tuple(self.info["crop_size"])
        self.views = {}
        for v in VIEWPOINTS:
            if v not in self.info["views"]:
                raise BundleError(f"{d / 'bundle.json'}: no entry for viewpoint {v!r}")
            meta = self.info["views"][v]
            roi = read_image(d / v / "roi.png", cv2.IMREAD_GRAYSCALE)
            template = read_image(d / v / "template.png", cv2.IMREAD_COLOR)
            if template.shape[1::-1] != self.crop_size:
                raise BundleError(
                    f"{d / v / 'template.png'}: size {template.shape[1::-1]}, bundle says {self.crop_size}"
                )
            model = AnomalyModel.load(d / v / "model")
            if precision is not None and hasattr(model, "net"):
                from lib.precision import resolve, set_module_precision

                chosen = resolve(
                    precision, str(getattr(model, "device", "cpu")), model_allows=type(model).auto_bf16
                )
                set_module_precision(model.net, chosen)
            if backend != "torch":
                import tempfile

                from lib.models.export import predictor

                self._onnx_dir = getattr(self, "_onnx_dir", None) or Path(tempfile.mkdtemp(prefix="onnx-"))
                model = predictor(model, backend, self._onnx_dir / f"{v}.onnx", threads)
            self.views[v] = {
                **meta,
                "model": model,
                "matcher": TemplateMatcher(template, 4, f"template {v!r}"),
                "roi": roi,
                "regions": read_image(d / v / "regions.png", cv2.IMREAD_GRAYSCALE),
                "seam_map": read_image(d / v / "seams.png", cv2.IMREAD_GRAYSCALE),
                "seam_names": [s["name"] for s in meta["seams"]],
                "robots": {s["name"]: s["robot"] for s in meta["seams"]},
            }
        fps = float(self.info.get("fps", 10.0))
        self.segmenter = PassSegmenter(
            {v: self.views[v]["matcher"] for v in VIEWPOINTS},
            float(self.info["match_threshold"]),
            int(max_gap or round(3 * fps)),
        )
        cfg = load_alert_config(Path(alerts_config) if alerts_config else d / "alerts.toml")
        seams = {
            n: {"robot": self.views[v]["robots"][n], **self.views[v]["seam_baseline"][n]}
            for v in VIEWPOINTS
            for n in self.views[v]["seam_baseline"]
        }
        self.monitor = AlertMonitor(cfg, seams)
        self.frames_seen = 0

    def check_frame(self, k: int, frame: np.ndarray, source: str) -> None:
        size = (frame.shape[1], frame.shape[0])
        if size != self.frame_size:
            raise StreamError(
                f"{source}: frame {k} is {size[0]}x{size[1]}, the bundle's templates were cut from "
                f"{self.frame_size[0]}x{self.frame_size[1]} frames ({self.dir / 'bundle.json'})"
            )

    def score_view(self, view: str, crop: np.ndarray) -> dict:
        """Score one peak crop: image score, calibrated z, verdict, regions and seam scores."""
        meta = self.views[view]
        model = meta["model"]
        t0 = time.perf_counter()
        x = apply_roi(crop, meta["roi"]) if self.info["masked"] else crop
        x = resize_image(x, model.input_size)[None]
        t1 = time.perf_counter()
        scores, maps = model.predict(x)
        t2 = time.perf_counter()
        cmap = map_to_crop(maps[0], self.crop_size, meta["roi"] if self.info["masked"] else None)
        score = float(scores[0])
        z = (score - meta["image_threshold"]) / meta["score_spread"]
        verdict = z >= 0
        hot = (cmap >= meta["pixel_threshold"]).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
        regions = []
        for j in range(1, n):
            x0, y0, w, h, area = (int(v) for v in stats[j])
            sel = lab == j
            reg = np.bincount(meta["regions"][sel], minlength=2)[1:]
            seams = np.bincount(meta["seam_map"][sel], minlength=len(meta["seam_names"]) + 1)[1:]
            seam = meta["seam_names"][int(np.argmax(seams))] if seams.any() else ""
            regions.append(
                {
                    "bbox": [x0, y0, x0 + w, y0 + h],
                    "area": area,
                    "peak": round(float(cmap[sel].max()), 6),
                    "region": int(np.argmax(reg)) + 1,
                    "seam": seam,
                    "robot": meta["robots"].get(seam, ""),
                }
            )
        regions.sort(key=lambda r: -r["peak"])
        sscores = seam_scores(cmap, meta["seam_map"], meta["seam_names"])
        t3 = time.perf_counter()
        return {
            "score": round(score, 6),
            "z": round(float(z), 4),
            "verdict": "anomalous" if verdict else "normal",
            "regions": regions,
            "seam_scores": {k: round(v, 6) for k, v in sscores.items()},
            # an anomalous view flags the seam its strongest region lies on (one seam per view)
            "flagged_seams": [regions[0]["seam"]] if verdict and regions and regions[0]["seam"] else [],
            "_map": cmap,
            "_ms": {"preprocess": 1e3 * (t1 - t0), "model": 1e3 * (t2 - t1), "regions": 1e3 * (t3 - t2)},
        }

    def inspect_pass(self, p: Pass) -> tuple[dict, list[dict]]:
        """The underbody record of a closed pass, and the alerts it raised."""
        views, ms = {}, {"match": p.match_ms, "preprocess": 0.0, "model": 0.0, "regions": 0.0}
        for v in VIEWPOINTS:
            if v not in p.views:
                continue
            r = self.score_view(v, p.views[v].crop)
            for key, val in r.pop("_ms").items():
                ms[key] += val
            r["frame"] = p.views[v].frame_index
            r["match_score"] = round(p.views[v].score, 4)
            views[v] = r
        t0 = time.perf_counter()
        fused = fuse({v: r["z"] for v, r in views.items()}, self.info["fusion"])
        scores = {s: val for r in views.values() for s, val in r["seam_scores"].items()}
        flagged = {s for r in views.values() for s in r["flagged_seams"]}
        alerts = self.monitor.update(p.index, scores, flagged)
        ms["fuse_alerts"] = 1e3 * (time.perf_counter() - t0)
        anomalous = fused["logistic_verdict"]
        path = None
        t0 = time.perf_counter()
        if self.out is not None and (self.overlays == "all" or (self.overlays == "anomalous" and anomalous)):
            tiles = []
            for v in VIEWPOINTS:
                if v in views:
                    r = views[v]
                    tile = overlay(p.views[v].crop, r["_map"], self.views[v]["pixel_threshold"], r["regions"])
                else:
                    tile = np.zeros((self.crop_size[1], self.crop_size[0], 3), np.uint8)
                cv2.putText(
                    tile,
                    f"{v}: {views[v]['verdict'] if v in views else 'missing'}",
                    (8, 24),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.7,
                    (255, 255, 255),
                    2,
                )
                tiles.append(tile)
            path = self.out / "overlays" / f"pass_{p.index:05d}.png"
            write_image(path, np.concatenate(tiles, axis=1))
            ms["overlay"] = 1e3 * (time.perf_counter() - t0)
        for r in views.values():
            r.pop("_map")
        record = {
            "pass": p.index,
            "time": dt.datetime.fromtimestamp(p.started_at, dt.UTC).isoformat(timespec="milliseconds"),
            "first_frame": p.first_frame,
            "last_frame": p.last_frame,
            "complete": p.complete,
            "closed_by": p.reason,
            "missing_views": [v for v in VIEWPOINTS if v not in views],
            "views": views,
            "fused": fused,
            "verdict": "anomalous" if anomalous else "normal",
            "overlay": str(path) if path else None,
            "latency_ms": {k: round(v, 2) for k, v in ms.items()},
            "alerts": len(alerts),
        }
        return record, alerts


def open_frames(source: str, follow: bool = False, poll_s: float = 0.5, idle_timeout: float | None = None):
    """Yield ``(name, k, frame)`` with a running frame index over everything the source gives.

    SOURCE: a video file; a folder of videos (taken in name order as one continuous stream;
    ``follow`` waits for new files, which must appear complete, e.g. renamed into place, and stops
    after ``idle_timeout`` seconds without one); or anything ``cv2.VideoCapture`` opens (a device
    index such as ``0``, an RTSP URL).
    """
    p = Path(source)
    k = 0

    def read(name, cap):
        nonlocal k
        if not cap.isOpened():
            raise StreamError(f"cannot open video source {name}: OpenCV could not read it")
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield str(name), k, frame
                k += 1
        finally:
            cap.release()

    if p.is_dir():
        seen = set()
        idle_since = time.monotonic()
        while True:
            new = sorted(
                f
                for f in p.iterdir()
                if f.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov") and f not in seen
            )
            for f in new:
                seen.add(f)
                n_before = k
                yield from read(f, cv2.VideoCapture(str(f)))
                if k == n_before:
                    raise StreamError(f"video {f}: no frame could be decoded (corrupt or not a video)")
            if new:
                idle_since = time.monotonic()
            if not follow or (idle_timeout is not None and time.monotonic() - idle_since > idle_timeout):
                return
            time.sleep(poll_s)
    elif p.is_file():
        yield from read(p, cv2.VideoCapture(str(p)))
        if k == 0:
            raise StreamError(f"video {p}: no frame could be decoded (corrupt or not a video)")
    else:
        cap = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
        if not cap.isOpened():
            raise StreamError(
                f"cannot open video source {source!r}: not a file, folder or stream OpenCV opens"
            )
        yield from read(source, cap)


def run_inspection(
    bundle_dir,
    source: str,
    out_dir,
    follow: bool = False,
    idle_timeout: float | None = None,
    mqtt: str | None = None,
    alerts_config=None,
    overlays: str = "all",
    progress: bool = True,
    max_frames: int | None = None,
    backend: str = "torch",
    precision: str | None = None,
) -> dict:
    """Inspect ``source`` with the bundle; write ``verdicts.jsonl``, ``alerts.jsonl`` and overlays to
    ``out_dir`` (one JSON line per underbody / alert, appended as they happen); return a summary."""
    from tqdm.auto import tqdm

    from lib.fileio import ensure_writable_dir

    out = ensure_writable_dir(out_dir, "inspection output folder")
    insp = Inspector(bundle_dir, out, overlays, alerts_config, backend=backend, precision=precision)
    publisher = None
    if mqtt:
        from lib.inspection.mqtt import Publisher

        publisher = Publisher(mqtt)
    n_ub = n_alerts = 0
    t_start = time.perf_counter()
    k = -1
    with (
        open(out / "verdicts.jsonl", "w") as vf,
        open(out / "alerts.jsonl", "w") as af,
        tqdm(desc="inspecting", unit="frame", disable=not progress) as bar,
    ):

        def emit(passes):
            nonlocal n_ub, n_alerts
            for p in passes:
                record, alerts = insp.inspect_pass(p)
                vf.write(json.dumps(record) + "\n")
                vf.flush()
                n_ub += 1
                for a in alerts:
                    a["time"] = record["time"]
                    af.write(json.dumps(a) + "\n")
                    af.flush()
                    n_alerts += 1
                if publisher:
                    publisher.publish("sealant/verdicts", record)
                    for a in alerts:
                        publisher.publish(f"sealant/alerts/{a['robot']}", a)

        try:
            for name, k, frame in open_frames(source, follow, idle_timeout=idle_timeout):
                insp.check_frame(k, frame, name)
                emit(insp.segmenter.push(k, frame))
                bar.update()
                if bar.n % 25 == 0:
                    el = time.perf_counter() - t_start
                    bar.set_postfix(fps=f"{bar.n / el:.1f}", underbodies=n_ub, alerts=n_alerts)
                if max_frames is not None and k + 1 >= max_frames:
                    break
            emit(insp.segmenter.finish(k))
        finally:
            if publisher:
                publisher.close()
    wall = time.perf_counter() - t_start
    summary = {
        "frames": k + 1,
        "underbodies": n_ub,
        "alerts": n_alerts,
        "wall_s": round(wall, 3),
        "frames_per_s": round((k + 1) / wall, 2) if wall > 0 else None,
        "underbodies_per_min": round(60 * n_ub / wall, 2) if wall > 0 else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
