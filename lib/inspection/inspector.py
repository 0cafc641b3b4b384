"""The inspection loop: frames in, one verdict per underbody out (paper 8.2-8.4).

``Inspector`` loads a verified bundle, segments passes from the template-matching scores
(``segment.PassSegmenter``), scores each viewpoint's peak crop with its model, finds anomaly
regions (connected components above the pixel threshold, with their region, seam and robot),
fuses the views (``decide``: the logistic fusion, which a view above its veto level overrules, and
which states why whenever it overrules a view above its own threshold), feeds the per-robot alert
rules and returns a JSON-able record per underbody, with a stable ``car_id``.

``run_inspection`` is the loop a plant leaves running: it appends to ``verdicts.jsonl`` /
``alerts.jsonl`` / ``health.jsonl`` and never truncates them, keeps ``state.json`` (written
atomically after every underbody) so that a restart resumes car numbering, alert state and the
stream position, reports every fault (corrupt or truncated chunk, no cars, black frames, broker
lost) as a health event, and publishes through a persistent outbox (``lib.inspection.mqtt``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lib.config import VIEWPOINTS
from lib.extract.template_matching import TemplateMatcher
from lib.fileio import read_image, write_image
from lib.inspection import DEFAULT_THREADS
from lib.inspection.alerts import AlertMonitor, load_alert_config
from lib.inspection.bundle import BundleError, map_to_crop, seam_scores, verify_bundle
from lib.inspection.segment import Pass, PassSegmenter
from lib.masking import apply_roi
from lib.models.base import AnomalyModel
from lib.models.data import resize_image

#: the plant's car id in a video's name, e.g. ``body_WF0XXX123_0001.mp4`` (first group)
PLANT_ID_PATTERN = r"(?:car|body|vin)[-_]([A-Za-z0-9]+)"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")


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


def decide(views: dict[str, dict], fused: dict, veto: dict[str, float], threshold: float) -> dict:
    """The underbody verdict, and why.

    The logistic fusion decides, except that a view whose ``z`` reaches its veto level (above every
    validation normal of that view) makes the car anomalous whatever the fusion says. When the
    fusion calls a car normal although a view is above its own threshold (z >= 0), the decision
    names that view and says why it was overruled."""
    p = fused["logistic_p"]
    vetoes = [v for v, r in views.items() if r["z"] >= veto.get(v, float("inf"))]
    above = [v for v, r in views.items() if r["z"] >= 0]
    overruled = []
    if fused["logistic_verdict"]:
        anomalous, rule = True, "fusion"
        reason = f"logistic fusion p={p:.3f} >= its threshold {threshold:.3f}"
    elif vetoes:
        anomalous, rule = True, "veto"
        reason = (
            "; ".join(
                f"view {v}: z={views[v]['z']:.2f} >= its veto level {veto[v]:.2f} (above every "
                "validation normal of the view)"
                for v in vetoes
            )
            + f"; overrules the logistic fusion (p={p:.3f} < {threshold:.3f})"
        )
    else:
        anomalous, rule = False, "fusion"
        reason = f"logistic fusion p={p:.3f} < its threshold {threshold:.3f}"
        overruled = [
            {
                "view": v,
                "z": views[v]["z"],
                "veto_z": round(veto.get(v, float("inf")), 4),
                "why": f"view {v} is above its own threshold (z={views[v]['z']:.2f}) but below its veto "
                f"level {veto.get(v, float('inf')):.2f}; the fusion, fitted on validation, weighs it "
                f"against the other views (p={p:.3f} < {threshold:.3f})",
            }
            for v in above
        ]
    return {"anomalous": anomalous, "rule": rule, "reason": reason, "overruled": overruled}


def decide_by_size(views: dict[str, dict], meta: dict) -> dict:
    """The car's decision under the bundle's size-aware policies: anomalous when a view has a region
    at or above its area class's threshold (``lib.studies.operating_points``); says which."""
    hits = [(v, r) for v, vr in views.items() for r in vr["regions"] if r.get("flagged")]
    if hits:
        v, r = max(hits, key=lambda h: h[1]["peak"])
        budget = meta[v]["size_policy"]["budget_per_1000"]
        reason = (
            f"size-aware policy (budget {budget:g} false alarms per 1,000 normals per view): view {v}, a "
            f"{r['size_class']} region on seam {r['seam'] or '-'} with peak {r['peak']:.4g} >= its class "
            f"threshold {r['threshold']:.4g}"
        )
    else:
        reason = "size-aware policy: no region of any view reaches its area class's threshold"
    return {"anomalous": bool(hits), "rule": "size-aware policy", "reason": reason, "overruled": []}


def locate(views: dict[str, dict], anomalous: bool, by_size: bool = False) -> tuple[list[dict], str]:
    """Where an anomalous car's evidence lies: per view above its threshold, its strongest region
    (above the pixel threshold) or, if none, the map's peak (marked ``below_pixel_threshold``).
    ``evidence`` says "regions", or that the verdict rests on image-level scores only."""
    if not anomalous:
        return [], ""
    where = []
    for v, r in views.items():
        # a view counts when it is above its own threshold, or (size-aware policy) has a flagged region
        if not (any(x.get("flagged") for x in r["regions"]) if by_size else r["z"] >= 0):
            continue
        if r["regions"]:
            top = next((x for x in r["regions"] if x.get("flagged", True)), r["regions"][0])
            keys = ("bbox", "seam", "robot", "peak", "size_class", "type", "type_p")
            where.append({"view": v, "kind": "region", **{k: top[k] for k in keys if k in top}})
        else:
            where.append({"view": v, "kind": "peak", "below_pixel_threshold": True, **r["peak"]})
    where.sort(key=lambda w: -views[w["view"]]["z"])
    if where:
        return where, "regions" if any(w["kind"] == "region" for w in where) else "map peaks"
    return [], (
        "image-level only: no single view is above its own threshold; the logistic fusion combined "
        "sub-threshold scores of several views, so no place can be named"
    )


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
        leave: float | None = None,
        min_gap: int = 3,
        first_index: int = 0,
        plant_id_pattern: str = PLANT_ID_PATTERN,
    ):
        """``backend="onnxruntime"``: each view's model is exported to ONNX (into a temporary folder; the
        bundle is never modified) and run under ONNX Runtime -- faster at the quick sizes on this CPU.
        ``precision`` (torch backend): None runs each model at the precision it was trained and
        calibrated at (its checkpoint's); fp32 | bf16 | auto overrides the inference precision.
        ``threads``: torch / OpenCV / ONNX Runtime threads (None: leave the libraries' defaults).
        ``leave`` and ``min_gap``: the segmenter's hysteresis (``segment.PassSegmenter``)."""
        if overlays not in ("all", "anomalous", "none"):
            raise ValueError(f"overlays must be 'all', 'anomalous' or 'none', got {overlays!r}")
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            import torch

            torch.set_num_threads(int(threads))
            cv2.setNumThreads(int(threads))
        d = Path(bundle_dir)
        self.info = verify_bundle(d)
        self.random_backbone = bool(self.info.get("random_backbone", False))
        self.plant_id = re.compile(plant_id_pattern)
        self._tmp = None
        onnx = self.info.get("extras", {}).get("onnx", {})
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
            weights = {field: str(d / rel) for field, rel in meta.get("weights", {}).items()}
            model = AnomalyModel.load(d / v / "model", overrides=weights)
            if precision is not None and hasattr(model, "net"):
                from lib.precision import resolve, set_module_precision

                chosen = resolve(
                    precision, str(getattr(model, "device", "cpu")), model_allows=type(model).auto_bf16
                )
                set_module_precision(model.net, chosen)
            if backend != "torch":
                from lib.fileio import sha256_file
                from lib.models.export import predictor

                rec = onnx.get(v)
                if rec and rec["model_sha256"] == sha256_file(d / v / "model" / "weights.safetensors"):
                    path = d / rec["file"]  # exported by `export --bundle`, listed in the manifest
                else:  # export now, into a folder removed by close()
                    import tempfile

                    self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="onnx-")
                    path = Path(self._tmp.name) / f"{v}.onnx"
                model = predictor(model, backend, path, threads)
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
        self.policies = {}
        for v in VIEWPOINTS:
            if "size_policy" in self.info["views"][v]:
                from lib.studies.operating_points import SizePolicy

                self.policies[v] = SizePolicy.from_json(self.info["views"][v]["size_policy"])
        if self.policies and set(self.policies) != set(VIEWPOINTS):
            raise BundleError(
                f"{d / 'bundle.json'}: a size policy for {sorted(self.policies)} only; need every view"
            )
        self.classifier = self.type_extractor = None
        if "diagnosis" in self.info:
            from lib.studies import diagnosis as D

            self.classifier = D.TypeClassifier.from_json(self.info["diagnosis"])
            self.type_extractor = D.make_extractor(weights=d / self.info["diagnosis"]["weights"]["file"])
            self.geometry = {v: D.SeamGeometry.from_roi(self.views[v]["roi"]) for v in VIEWPOINTS}
        fps = float(self.info.get("fps", 10.0))
        self.fps = fps
        self.segmenter = PassSegmenter(
            {v: self.views[v]["matcher"] for v in VIEWPOINTS},
            float(self.info["match_threshold"]),
            int(max_gap or round(3 * fps)),
            leave,
            min_gap,
            first_index,
        )
        cfg = load_alert_config(Path(alerts_config) if alerts_config else d / "alerts.toml")
        seams = {
            n: {"robot": self.views[v]["robots"][n], **self.views[v]["seam_baseline"][n]}
            for v in VIEWPOINTS
            for n in self.views[v]["seam_baseline"]
        }
        self.monitor = AlertMonitor(cfg, seams)
        self.frames_seen = 0

    def close(self) -> None:
        """Remove the temporary ONNX exports, if any."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

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
        policy = self.policies.get(view)
        if policy is not None:
            judged = policy.judge_regions(
                [r["area"] / cmap.size for r in regions], [r["peak"] for r in regions]
            )
            for r, j in zip(regions, judged, strict=True):
                r.update(j)
            verdict = any(j["flagged"] for j in judged)
        if self.classifier is not None and regions:
            from lib.studies import diagnosis as D

            feats = D.backbone_map(self.type_extractor, crop)
            for j, r in enumerate(regions, start=1):
                x = D.region_features(self.type_extractor, crop, lab == j, self.geometry[view], feats)
                kind, p = self.classifier.predict(x)
                r["type"], r["type_p"] = kind[0], round(float(p[0]), 4)
        regions.sort(key=lambda r: -r["peak"])
        py, px = np.unravel_index(int(np.argmax(cmap)), cmap.shape)
        label = int(meta["seam_map"][py, px])
        seam = meta["seam_names"][label - 1] if label else ""
        h, w = cmap.shape
        peak = {
            "bbox": [max(0, int(px) - 8), max(0, int(py) - 8), min(w, int(px) + 9), min(h, int(py) + 9)],
            "seam": seam,
            "robot": meta["robots"].get(seam, ""),
            "peak": round(float(cmap[py, px]), 6),
        }
        sscores = seam_scores(cmap, meta["seam_map"], meta["seam_names"])
        t3 = time.perf_counter()
        return {
            "score": round(score, 6),
            "z": round(float(z), 4),
            "verdict": "anomalous" if verdict else "normal",
            "regions": regions,
            "peak": peak,
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
        veto = {v: float(self.views[v].get("veto_z", float("inf"))) for v in VIEWPOINTS}
        decision = decide(views, fused, veto, self.info["fusion"]["threshold"])
        if self.policies:
            decision = decide_by_size(views, self.info["views"])
        anomalous = decision.pop("anomalous")
        fused["final_verdict"] = anomalous
        where, evidence = locate(views, anomalous, by_size=bool(self.policies))
        scores = {s: val for r in views.values() for s, val in r["seam_scores"].items()}
        flagged = {s for r in views.values() for s in r["flagged_seams"]}
        alerts = self.monitor.update(p.index, scores, flagged, p.car_id)
        ms["fuse_alerts"] = 1e3 * (time.perf_counter() - t0)
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
        first_file = p.first_where[0] if p.first_where else ""
        m = self.plant_id.search(Path(first_file).name) if first_file else None
        record = {
            "car_id": p.car_id,
            "pass": p.index,
            "plant_id": m.group(1) if m else None,
            "source": {"first": list(p.first_where), "last": list(p.last_where)},
            "time": dt.datetime.fromtimestamp(p.started_at, dt.UTC).isoformat(timespec="milliseconds"),
            "first_frame": p.first_frame,
            "last_frame": p.last_frame,
            "complete": p.complete,
            "closed_by": p.reason,
            "frames_lost": p.frames_lost,
            "missing_views": [v for v in VIEWPOINTS if v not in views],
            "views": views,
            "fused": fused,
            "verdict": "anomalous" if anomalous else "normal",
            "decision": decision,
            "where": where,
            "evidence": evidence,
            "random_backbone": self.random_backbone,
            "overlay": str(path) if path else None,
            "latency_ms": {k: round(v, 2) for k, v in ms.items()},
            "alerts": len(alerts),
        }
        return record, alerts


def _read_video(path, k: int, offset: int, on_fault, single: bool):
    """Frames of one video from ``offset``, as ``((name, offset), k, frame)``; a corrupt region is
    skipped frame by frame (its frames counted from the container's frame count) and announced by
    one ``((name, offset), k, None)`` before the next good frame. Returns through ``StopIteration``'s
    value the next ``k``."""
    name = Path(path).name
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        msg = f"video {path}: cannot be opened (truncated, still being written, or not a video)"
        if single:
            raise StreamError(msg)
        on_fault("unreadable_video", f"{msg}; skipped, its frames are lost (how many is unknown)", file=name)
        return k
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # the container's count; <= 0: unknown
        if offset:
            cap.set(cv2.CAP_PROP_POS_FRAMES, offset)
        off, n_read = offset, 0
        while total <= 0 or off < total:
            ok, frame = cap.read()
            if ok:
                yield (name, off), k, frame
                k, off, n_read = k + 1, off + 1, n_read + 1
                continue
            if total <= 0:
                break
            j = off + 1  # a corrupt region: seek past it, frame by frame
            while j < total:
                cap.set(cv2.CAP_PROP_POS_FRAMES, j)
                ok, frame = cap.read()
                if ok:
                    break
                j += 1
            lost = j - off
            on_fault(
                "corrupt_frames",
                f"video {path}: frames {off}-{j - 1} could not be decoded ({lost} frame(s) lost); skipped",
                file=name,
                first=off,
                frames_lost=lost,
            )
            k += lost
            yield (name, j), k, None
            if not ok:
                break
            yield (name, j), k, frame
            k, off, n_read = k + 1, j + 1, n_read + 1
        if n_read == 0 and offset == 0 and total <= 0:
            msg = f"video {path}: no frame could be decoded (corrupt or not a video)"
            if single:
                raise StreamError(msg)
            on_fault("unreadable_video", f"{msg}; skipped", file=name)
    finally:
        cap.release()
    return k


def open_frames(
    source,
    follow: bool = False,
    poll_s: float = 0.5,
    idle_timeout: float | None = None,
    resume: dict | None = None,
    on_fault=None,
    on_idle=None,
):
    """Yield ``(where, k, frame)`` with a running frame index ``k`` over everything the source gives;
    ``where`` is (file name, frame offset in it). ``frame`` None marks frames lost just before ``k``.

    SOURCE: a video file; a folder of videos (taken in name order as one continuous stream;
    ``follow`` waits for new files, which must appear complete, e.g. renamed into place, and stops
    after ``idle_timeout`` seconds without one); or anything ``cv2.VideoCapture`` opens (a device
    index such as ``0``, an RTSP URL). ``resume`` ({"file", "offset", "frame"}) starts a file source
    there: earlier files are skipped unopened. In a folder, a video that cannot be read, or a corrupt
    region of one, is reported to ``on_fault(kind, message, **fields)`` and skipped; a single file
    that cannot be read at all is a ``StreamError``. ``on_idle()`` is called while ``follow`` waits.
    """
    p = Path(source)
    on_fault = on_fault or (lambda kind, message, **fields: None)
    k = int(resume["frame"]) if resume else 0
    r_file, r_off = (resume["file"], int(resume["offset"])) if resume else ("", 0)
    if p.is_dir():
        seen = set()
        idle_since = time.monotonic()
        while True:
            new = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES and f.name not in seen)
            for f in new:
                seen.add(f.name)
                if f.name < r_file:  # inspected before the restart
                    continue
                k = yield from _read_video(f, k, r_off if f.name == r_file else 0, on_fault, False)
            if new:
                idle_since = time.monotonic()
            if not follow or (idle_timeout is not None and time.monotonic() - idle_since > idle_timeout):
                return
            if on_idle:
                on_idle()
            time.sleep(poll_s)
    elif p.is_file():
        yield from _read_video(p, k, r_off if p.name == r_file else 0, on_fault, True)
    else:
        cap = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
        if not cap.isOpened():
            raise StreamError(
                f"cannot open video source {source!r}: not a file, folder or stream OpenCV opens"
            )
        try:
            off = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield (str(source), off), k, frame
                k, off = k + 1, off + 1
        finally:
            cap.release()


class Health:
    """Warnings and faults: one JSON line each in ``health.jsonl``, on stderr and on ``sealant/health``."""

    def __init__(self, out: Path, publisher=None):
        self.path = out / "health.jsonl"
        self.publisher = publisher
        self.count = 0

    def event(self, kind: str, message: str, level: str = "warning", **fields) -> dict:
        now = dt.datetime.now(dt.UTC)
        e = {
            "event_id": f"{kind}/{now.strftime('%Y%m%dT%H%M%S.%f')}",
            "time": now.isoformat(timespec="milliseconds"),
            "kind": kind,
            "level": level,
            "message": message,
            **fields,
        }
        _append(self.path, [e])
        print(f"inspect: {level}: {message}", file=sys.stderr, flush=True)
        if self.publisher is not None:
            from lib.inspection.mqtt import HEALTH_TOPIC

            self.publisher.publish(HEALTH_TOPIC, e)
        self.count += 1
        return e


def _append(path: Path, records: list[dict]) -> None:
    """Append JSON lines in one write (no partial line on a crash between records); never truncates."""
    if not records:
        return
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
        fh.flush()


def _last_line(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - (1 << 20)))
        lines = [x for x in fh.read().decode("utf-8", "replace").splitlines() if x.strip()]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


STATE_VERSION = 1


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
    threads: int | None = DEFAULT_THREADS,
    no_car_s: float = 60.0,
    heartbeat_s: float = 30.0,
    leave: float | None = None,
    min_gap: int = 3,
    plant_id_pattern: str = PLANT_ID_PATTERN,
) -> dict:
    """Inspect ``source`` with the bundle; append to ``verdicts.jsonl``, ``alerts.jsonl`` and
    ``health.jsonl`` in ``out_dir`` (one JSON line per underbody / alert / event) and write overlays;
    resume from ``state.json`` when the folder holds one; return a summary of this run."""
    from tqdm.auto import tqdm

    from lib.fileio import ensure_writable_dir, sha256_file, write_json

    if no_car_s <= 0:
        raise ValueError(f"no_car_s must be > 0 seconds, got {no_car_s}")
    out = ensure_writable_dir(out_dir, "inspection output folder")
    state_path = out / "state.json"
    bundle_id = (
        sha256_file(Path(bundle_dir) / "MANIFEST.json")
        if (Path(bundle_dir) / "MANIFEST.json").is_file()
        else ""
    )
    state = None
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except json.JSONDecodeError as exc:
            raise StreamError(f"{state_path}: unreadable ({exc}); move it away to start afresh") from None
        if state.get("bundle") != bundle_id:
            raise StreamError(
                f"{state_path}: written while inspecting with another bundle; inspect into a new --out "
                "folder (car numbers and alert baselines belong to one bundle)"
            )
    resume = state.get("resume") if state and state.get("source") == str(source) else None
    insp = Inspector(
        bundle_dir,
        out,
        overlays,
        alerts_config,
        backend=backend,
        threads=threads,
        precision=precision,
        leave=leave,
        min_gap=min_gap,
        first_index=int(state["next_pass"]) if state else 0,
        plant_id_pattern=plant_id_pattern,
    )
    totals = dict(state["totals"]) if state else {"underbodies": 0, "alerts": 0, "frames": 0}
    if state:
        insp.monitor.load_state(state["monitor"])
        last = state.get("last")
        if last and (_last_line(out / "verdicts.jsonl") or {}).get("car_id") != last["record"]["car_id"]:
            _append(out / "verdicts.jsonl", [last["record"]])  # the crash fell between state and files
            _append(out / "alerts.jsonl", last["alerts"])
    n_ub = n_alerts = n_frames = 0
    t_start = time.perf_counter()
    publisher = None
    health = Health(out)
    if mqtt:
        from lib.inspection.mqtt import Publisher

        publisher = Publisher(
            mqtt,
            out / "mqtt",
            heartbeat_s=heartbeat_s,
            status=lambda: {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "frames": n_frames,
                "underbodies": totals["underbodies"] + n_ub,
                "alerts": totals["alerts"] + n_alerts,
                "health_events": health.count,
                "uptime_s": round(time.perf_counter() - t_start, 1),
            },
            on_event=lambda kind, message: health.event(kind, message),
        )
        health.publisher = publisher
    if state:
        health.event(
            "resumed",
            f"resumed from {state_path}: next car {state['next_pass']}"
            + (f", at {resume['file']} frame {resume['offset']}" if resume else ", source from its start"),
            level="info",
        )
    last_car = {"frame": int(resume["frame"]) if resume else 0, "wall": time.monotonic()}
    flags = {"no_cars": False, "black": False, "mqtt_unreachable": False}
    black_run = 0

    def emit(passes):
        nonlocal n_ub, n_alerts
        for p in passes:
            record, alerts = insp.inspect_pass(p)
            for a in alerts:
                a["time"] = record["time"]
            if publisher:  # the outbox first: a crash after it re-sends one car (same car_id), never loses it
                publisher.publish("sealant/verdicts", record)
                for a in alerts:
                    publisher.publish(f"sealant/alerts/{a['robot']}", a)
            n_ub += 1
            n_alerts += sum(a["kind"] == "alert" for a in alerts)
            where = p.last_where
            write_json(
                state_path,
                {
                    "state_version": STATE_VERSION,
                    "bundle": bundle_id,
                    "source": str(source),
                    "next_pass": p.index + 1,
                    "resume": {"file": where[0], "offset": int(where[1]) + 1, "frame": p.last_frame + 1}
                    if where
                    else None,
                    "monitor": insp.monitor.state(),
                    "totals": {
                        "underbodies": totals["underbodies"] + n_ub,
                        "alerts": totals["alerts"] + n_alerts,
                        "frames": totals["frames"] + n_frames,
                    },
                    "last": {"record": record, "alerts": alerts},
                },
            )
            _append(out / "verdicts.jsonl", [record])
            _append(out / "alerts.jsonl", alerts)
            last_car.update(frame=p.last_frame, wall=time.monotonic())
            if flags["no_cars"]:
                flags["no_cars"] = False
                health.event("cars_seen", f"cars seen again (car {record['car_id']})", level="info")

    def check_quiet(k=None):
        """No car for ``no_car_s`` of video, or of wall time while no video arrives."""
        if flags["no_cars"]:
            return
        video_s = (k - last_car["frame"]) / insp.fps if k is not None else 0.0
        wall_s = time.monotonic() - last_car["wall"]
        if video_s >= no_car_s or (k is None and wall_s >= no_car_s):
            flags["no_cars"] = True
            what = f"{video_s:.0f} s of video" if k is not None else f"{wall_s:.0f} s with no new video"
            health.event(
                "no_cars",
                f"no car seen for {what} (limit {no_car_s:g} s): camera, conveyor or recorder stopped?",
            )
        if publisher and not publisher.ever_connected and not flags["mqtt_unreachable"]:
            if time.perf_counter() - t_start > 5.0:
                flags["mqtt_unreachable"] = True
                health.event(
                    "mqtt_unreachable", f"MQTT broker {mqtt} not reachable; messages wait in {out / 'mqtt'}"
                )

    def fault(kind, message, **fields):
        health.event(kind, message, **fields)

    k_last = int(resume["frame"]) - 1 if resume else -1
    interrupted = False
    try:
        with tqdm(desc="inspecting", unit="frame", disable=not progress) as bar:
            for where, k, frame in open_frames(
                source, follow, idle_timeout=idle_timeout, resume=resume, on_fault=fault, on_idle=check_quiet
            ):
                if frame is None:  # frames lost before k: a long loss closes the car in progress
                    emit(insp.segmenter.lost(k_last, k - k_last - 1))
                    continue
                insp.check_frame(k, frame, where[0])
                emit(insp.segmenter.push(k, frame, where))
                k_last = k
                n_frames += 1
                dark = float(frame[::16, ::16].mean()) < 10.0
                black_run = black_run + 1 if dark else 0
                if black_run == int(2 * insp.fps) and not flags["black"]:
                    flags["black"] = True
                    health.event(
                        "black_frames",
                        f"camera frames black for 2 s from {where[0]} frame {where[1]}: camera dead or covered?",
                    )
                elif not dark and flags["black"]:
                    flags["black"] = False
                    health.event(
                        "frames_normal",
                        f"camera frames normal again at {where[0]} frame {where[1]}",
                        level="info",
                    )
                check_quiet(k)
                bar.update()
                if bar.n % 25 == 0:
                    el = time.perf_counter() - t_start
                    bar.set_postfix(fps=f"{bar.n / el:.1f}", underbodies=n_ub, alerts=n_alerts)
                if max_frames is not None and n_frames >= max_frames:
                    break
            emit(insp.segmenter.finish(k_last))
    except KeyboardInterrupt:  # Ctrl-C: the car in progress stays open; a restart inspects it whole
        interrupted = True
    finally:
        mq = None
        if publisher:
            if not publisher.ever_connected and not flags["mqtt_unreachable"]:
                health.event(
                    "mqtt_unreachable", f"MQTT broker {mqtt} not reachable; messages wait in {out / 'mqtt'}"
                )
            mq = publisher.close()
        insp.close()
    wall = time.perf_counter() - t_start
    summary = {
        "frames": n_frames,
        "underbodies": n_ub,
        "alerts": n_alerts,
        "health_events": health.count,
        "total_underbodies": totals["underbodies"] + n_ub,
        "resumed": bool(state),
        "interrupted": interrupted,
        "threads": threads,
        "wall_s": round(wall, 3),
        "frames_per_s": round(n_frames / wall, 2) if wall > 0 else None,
        "underbodies_per_min": round(60 * n_ub / wall, 2) if wall > 0 else None,
        "mqtt": mq,
    }
    write_json(out / "summary.json", summary)
    return summary
