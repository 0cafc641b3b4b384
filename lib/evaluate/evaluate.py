"""Evaluate stored model outputs against the manifest (paper Tables 4-8), never re-running a model.

Subsets (as the paper's tables): ``test`` (all), ``test-real`` (test normals + real defects),
``test-synthetic`` (test normals + synthetic defects) and ``val``. Two threshold policies, stated
in every row: ``oracle`` (chosen on the evaluated subset itself, as in the paper: max F1 at image
level, tau* = argmax IoU at pixel level) and ``val-calibrated`` (chosen the same way on the
validation split, then applied unchanged).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.evaluate import metrics as M
from lib.evaluate.store import Cell, StoreError, cell_dir, read_results
from lib.fileio import read_image
from lib.masking import apply_roi

SUBSETS = ("test", "test-real", "test-synthetic", "val")
EVALUATED_SPLITS = ("val", "test")


def expected_images(manifest: pd.DataFrame, cell: Cell) -> pd.Series:
    """The manifest images a cell must have results for: its viewpoint, validation and test splits."""
    sel = (manifest.viewpoint == cell.viewpoint) & manifest.split.isin(EVALUATED_SPLITS)
    return manifest.image_id[sel]


def load_outputs(data_root, store_root, cell: Cell, manifest: pd.DataFrame) -> dict:
    """Scores joined with the manifest; maps resized to the GT size (and ROI-masked for † cells)."""
    root = Path(data_root)
    res = read_results(store_root, cell)
    table = res["table"].merge(
        manifest[
            [
                "image_id",
                "source",
                "defect_type",
                "area_ratio",
                "mask_path",
                "roi_path",
                "viewpoint",
                "image_path",
            ]
        ],
        on="image_id",
        how="left",
        validate="one_to_one",
    )
    scores_csv = cell_dir(store_root, cell) / "scores.csv"
    if table.source.isna().any():
        extra = table.image_id[table.source.isna()].iloc[0]
        raise StoreError(cell, scores_csv, f"names image {extra!r}, which the manifest lacks")
    lacking = sorted(set(expected_images(manifest, cell)) - set(table.image_id))
    if lacking:
        raise StoreError(
            cell,
            scores_csv,
            f"lacks {len(lacking)} of the manifest's {cell.viewpoint} val/test images "
            f"(first: {', '.join(map(repr, lacking[:3]))}); re-run the cell",
        )
    foreign = table.viewpoint != cell.viewpoint
    if foreign.any():
        raise StoreError(
            cell, scores_csv, f"image {table.image_id[foreign].iloc[0]!r} is not a {cell.viewpoint} image"
        )
    first = read_image(root / table.image_path.iloc[0], cv2.IMREAD_GRAYSCALE)
    h, w = first.shape
    maps, masks = [], []
    rois = {}
    for r, m in zip(table.itertuples(index=False), res["maps"], strict=True):
        a = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        if cell.masked and r.roi_path:
            if r.roi_path not in rois:
                rois[r.roi_path] = read_image(root / r.roi_path, cv2.IMREAD_GRAYSCALE)
            a = apply_roi(a, rois[r.roi_path], fill=float(m.min()))
        maps.append(a)
        masks.append(
            read_image(root / r.mask_path, cv2.IMREAD_GRAYSCALE)
            if r.mask_path
            else np.zeros((h, w), np.uint8)
        )
    return {"table": table, "maps": maps, "masks": masks, "meta": res["meta"]}


def _subset(table: pd.DataFrame, name: str) -> np.ndarray:
    if name == "val":
        return (table.split == "val").to_numpy()
    test = (table.split == "test").to_numpy()
    if name == "test":
        return test
    source = "real" if name == "test-real" else "synthetic"
    return test & ((table.label == "normal") | (table.source == source)).to_numpy()


def _pixel_scores(cell: Cell, out: dict, idx, components: bool = True) -> M.PixelScores:
    ids = out["table"].image_id.to_numpy()[idx]
    try:
        return M.PixelScores([out["masks"][i] for i in idx], [out["maps"][i] for i in idx], ids, components)
    except ValueError as exc:
        raise ValueError(f"cell {cell.key}: {exc}") from None


def evaluate_outputs(cell: Cell, out: dict) -> pd.DataFrame:
    """Tidy rows: one per (subset, level, threshold policy) with every metric, all exact."""
    t = out["table"]
    y = (t.label == "anomalous").to_numpy()
    s = t.score.to_numpy(float)
    if not np.isfinite(s).all():
        bad = t.image_id.iloc[int(np.argmin(np.isfinite(s)))]
        raise ValueError(f"cell {cell.key}: image {bad!r} has a NaN or infinite score")
    val = _subset(t, "val")
    calib_img = M.best_f1_threshold(y[val], s[val]) if y[val].any() else float("inf")
    calib_px = _pixel_scores(cell, out, np.nonzero(val)[0], components=False).best_iou_threshold()
    rows = []
    random_backbone = "NOT COMPARABLE" in str(out.get("meta", {}).get("backbone", ""))
    base = {
        "model": cell.model,
        "viewpoint": cell.viewpoint,
        "masked": cell.masked,
        "seed": cell.seed,
        # a model trained on a randomly initialised backbone is marked in every table and the index
        "label": cell.label + (" [random backbone]" if random_backbone else ""),
        "random_backbone": random_backbone,
    }
    for name in SUBSETS:
        sel = _subset(t, name)
        if not y[sel].any():
            continue
        policies = [("oracle", M.best_f1_threshold(y[sel], s[sel]), None)]
        if name != "val":
            policies.append(("val-calibrated", calib_img, calib_px))
        hist = _pixel_scores(cell, out, np.nonzero(sel)[0])
        px_free = {"auroc": hist.auroc(), "aupr": hist.aupr(), "aupro": hist.aupro(0.3)}
        for policy, t_img, t_px in policies:
            im = M.image_metrics(y[sel], s[sel], t_img)
            rows.append({**base, "subset": name, "level": "image", "policy": policy, **im})
            tau = hist.best_iou_threshold() if t_px is None else t_px
            c = hist.counts_at(tau)
            rows.append(
                {
                    **base,
                    "subset": name,
                    "level": "pixel",
                    "policy": policy,
                    **px_free,
                    "threshold": tau,
                    **M.prf_from_counts(c["tp"], c["fp"], c["fn"]),
                    **c,
                }
            )
    timing = t.time_ms.to_numpy(float)
    for r in rows:
        r["median_ms"] = float(np.median(timing))
        r["p95_ms"] = float(np.percentile(timing, 95))
    return pd.DataFrame(rows)


def per_image(cell: Cell, out: dict, threshold_img: float, tau_px: float) -> pd.DataFrame:
    """Per test image: prediction at the image threshold and pixel IoU at tau (for paired tests, FN bins)."""
    t = out["table"]
    rows = []
    for i, r in enumerate(t.itertuples(index=False)):
        if r.split != "test":
            continue
        pred = M.at_or_above(out["maps"][i], tau_px)
        gt = out["masks"][i] > 0
        inter, union = int((pred & gt).sum()), int((pred | gt).sum())
        rows.append(
            {
                "image_id": r.image_id,
                "viewpoint": r.viewpoint,
                "label": r.label,
                "source": r.source,
                "defect_type": r.defect_type,
                "area_ratio": float(r.area_ratio),
                "score": float(r.score),
                "predicted_anomalous": bool(r.score >= threshold_img),
                "pixel_iou": inter / union if union else float("nan"),
                "model": cell.model,
                "masked": cell.masked,
                "seed": cell.seed,
            }
        )
    return pd.DataFrame(rows)


def evaluate_store(data_root, store_root, manifest: pd.DataFrame, cells=None, progress=True):
    """Evaluate every finished cell: (metrics rows, per-image rows, broken cells).

    A cell whose stored results are missing, truncated, inconsistent, incomplete or non-finite
    is reported in ``broken`` (cell, error) and skipped; the others are evaluated.
    """
    from tqdm.auto import tqdm

    from lib.evaluate.store import list_cells

    cells = list_cells(store_root) if cells is None else cells
    metric_rows, image_rows, broken = [], [], []
    for cell in tqdm(cells, desc="evaluating", disable=not progress):
        try:
            out = load_outputs(data_root, store_root, cell, manifest)
            m = evaluate_outputs(cell, out)
        except (StoreError, ValueError, OSError) as exc:
            broken.append({"cell": cell.key, "error": f"{type(exc).__name__}: {exc}"})
            continue
        metric_rows.append(m)
        cal = m[(m.subset == "test") & (m.policy == "val-calibrated")]
        orc = m[(m.subset == "test") & (m.policy == "oracle") & (m.level == "pixel")]
        t_img = float(cal[cal.level == "image"].threshold.iloc[0]) if len(cal) else np.inf
        tau = float(orc.threshold.iloc[0]) if len(orc) else np.inf
        image_rows.append(per_image(cell, out, t_img, tau))
    metrics = pd.concat(metric_rows, ignore_index=True) if metric_rows else pd.DataFrame()
    images = pd.concat(image_rows, ignore_index=True) if image_rows else pd.DataFrame()
    return metrics, images, pd.DataFrame(broken, columns=["cell", "error"])


def summary_table(metrics: pd.DataFrame, subset: str, level: str, policy: str, columns) -> pd.DataFrame:
    """Mean ± std over seeds per (model label, viewpoint): the analog of Tables 4-7."""
    sel = metrics[(metrics.subset == subset) & (metrics.level == level) & (metrics.policy == policy)]
    if sel.empty:
        return pd.DataFrame()
    g = sel.groupby(["label", "viewpoint"], sort=True)
    return g[list(columns)].agg(M.mean_std).reset_index()


def fn_by_size(images: pd.DataFrame) -> pd.DataFrame:
    """Image-level false negatives per size bin (eq. 15 tertiles per view over the test defects)."""
    anomalous = images[images.label == "anomalous"].copy()
    if anomalous.empty:
        return pd.DataFrame()
    bins = {}
    for view, g in anomalous.drop_duplicates("image_id").groupby("viewpoint"):
        b = M.size_bins(g.area_ratio.to_numpy(), np.full(len(g), view))
        bins.update(dict(zip(g.image_id, b, strict=True)))
    anomalous["size_bin"] = anomalous.image_id.map(bins)
    anomalous["fn"] = ~anomalous.predicted_anomalous
    out = (
        anomalous.groupby(["model", "masked", "viewpoint", "size_bin"])
        .fn.sum()
        .unstack("size_bin", fill_value=0)
    )
    return out.reindex(columns=["small", "medium", "large"], fill_value=0).reset_index()
