"""Evaluate stored model outputs against the manifest (paper Tables 4-8), never re-running a model.

Subsets (as the paper's tables): ``test`` (all), ``test-real`` (test normals + real defects),
``test-synthetic`` (test normals + synthetic defects) and ``val``. Two threshold policies, stated
in every row: ``oracle`` (chosen on the evaluated subset itself, as in the paper: max F1 at image
level, tau* = argmax IoU at pixel level) and ``val-calibrated`` (chosen the same way on the
validation split, then applied unchanged).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd

from lib.evaluate import bootstrap as B
from lib.evaluate import metrics as M
from lib.fileio import read_image
from lib.masking import apply_roi
from lib.store import Cell, StoreError, cell_dir, read_results

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
                "underbody_id",
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


def per_image(cell: Cell, out: dict, thresholds: dict, tau_px: float) -> pd.DataFrame:
    """Per test image: the image decision at each image threshold (``pred_<policy>``, e.g. the paper's
    oracle tau* and the val-calibrated one), pixel IoU and the pixel TP/FP/FN counts at the oracle tau
    (for FN bins, FP shares and count intervals)."""
    t = out["table"]
    rows = []
    for i, r in enumerate(t.itertuples(index=False)):
        if r.split != "test":
            continue
        pred = M.at_or_above(out["maps"][i], tau_px)
        gt = out["masks"][i] > 0
        inter, union = int((pred & gt).sum()), int((pred | gt).sum())
        fp_px, fn_px = int((pred & ~gt).sum()), int((gt & ~pred).sum())
        rows.append(
            {
                "image_id": r.image_id,
                "underbody_id": r.underbody_id,
                "viewpoint": r.viewpoint,
                "label": r.label,
                "source": r.source,
                "defect_type": r.defect_type,
                "area_ratio": float(r.area_ratio),
                "score": float(r.score),
                **{f"pred_{k.replace('-', '_')}": bool(r.score >= v) for k, v in thresholds.items()},
                "pixel_iou": inter / union if union else float("nan"),
                "tp_px": inter,
                "fp_px": fp_px,
                "fn_px": fn_px,
                "model": cell.model,
                "masked": cell.masked,
                "seed": cell.seed,
            }
        )
    return pd.DataFrame(rows)


def underbody_resamples(manifest: pd.DataFrame, viewpoint: str, n_resamples: int, seed: int = B.DEFAULT_SEED):
    """(test image ids of ``viewpoint`` in a fixed order, (n_resamples, n) counts): one viewpoint's
    share of ``cluster_resamples`` (the same draws for every cell, so replicates pair across cells)."""
    return cluster_resamples(manifest, n_resamples, seed)[viewpoint]


def cluster_resamples(manifest: pd.DataFrame, n_resamples: int, seed: int = B.DEFAULT_SEED) -> dict:
    """{viewpoint: (test image ids, (n_resamples, n) counts)} from ONE draw of test underbodies for all
    viewpoints (cluster = underbody): an underbody seen in two views is drawn, or not, in both, so a
    number pooled over views gets an honest interval. Strata: an underbody's label in each view
    (normal / anomalous / absent), so every view keeps its numbers of normal and defective underbodies."""
    test = manifest[manifest.split == "test"].sort_values(["viewpoint", "image_id"])
    if test.empty:
        raise ValueError("the manifest has no test images to resample")
    pattern = (
        test.pivot_table(index="underbody_id", columns="viewpoint", values="label", aggfunc="max")
        .fillna("absent")
        .astype(str)
        .agg("/".join, axis=1)
    )
    counts = B.resample_counts(
        test.underbody_id.to_numpy(), pattern.loc[test.underbody_id].to_numpy(), n_resamples, int(seed)
    )
    views = test.viewpoint.to_numpy()
    return {
        v: (test.image_id.to_numpy()[views == v], counts[:, views == v]) for v in sorted(set(views.tolist()))
    }


#: subsets that get bootstrap replicates (Tables 4/6 and 5/7)
REPLICATE_SUBSETS = ("test", "test-real")


def cell_replicates(cell: Cell, out: dict, ids, counts) -> dict:
    """{(subset, level, metric): (B,) replicates} of the headline metrics for one cell's test images
    (``ids``, in the order of the columns of ``counts``), on every subset of ``REPLICATE_SUBSETS``."""
    t = out["table"]
    pos = pd.Series(np.arange(len(t)), index=t.image_id)[list(ids)].to_numpy()
    sub = t.iloc[pos].reset_index(drop=True)
    result = {}
    for name in REPLICATE_SUBSETS:
        keep = np.flatnonzero(_subset(sub.assign(split="test"), name))
        if not (sub.label.iloc[keep] == "anomalous").any():
            continue
        try:
            reps = B.replicates(
                sub.iloc[keep].reset_index(drop=True),
                [out["maps"][pos[i]] for i in keep],
                [out["masks"][pos[i]] for i in keep],
                counts[:, keep],
            )
        except ValueError as exc:
            raise ValueError(f"cell {cell.key}: {exc}") from None
        result.update({(name, *k): v for k, v in reps.items()})
    return result


class Evaluation(NamedTuple):
    """What ``evaluate_store`` returns."""

    metrics: pd.DataFrame  # one row per cell, subset, level, threshold policy
    images: pd.DataFrame  # one row per cell and test image
    broken: pd.DataFrame  # cells that could not be evaluated, with the error
    replicates: pd.DataFrame  # bootstrap replicates: one row per cell and metric, columns b0..b{n-1}


REPLICATE_KEYS = ["model", "masked", "seed", "viewpoint", "subset", "level", "metric"]


def evaluate_store(
    data_root,
    store_root,
    manifest: pd.DataFrame,
    cells=None,
    progress=True,
    n_resamples: int = B.DEFAULT_RESAMPLES,
    bootstrap_seed: int = B.DEFAULT_SEED,
) -> Evaluation:
    """Evaluate every finished cell: metrics, per-image rows, broken cells, bootstrap replicates.

    A cell whose stored results are missing, truncated, inconsistent, incomplete or non-finite
    is reported in ``broken`` (cell, error) and skipped; the others are evaluated. Replicates
    resample the test underbodies ``n_resamples`` times (0: none) jointly across viewpoints
    (``cluster_resamples``), with the same draws for every cell.
    """
    from tqdm.auto import tqdm

    from lib.store import list_cells

    cells = list_cells(store_root) if cells is None else cells
    metric_rows, image_rows, rep_rows, broken = [], [], [], []
    draws = cluster_resamples(manifest, n_resamples, bootstrap_seed) if n_resamples else {}
    for cell in tqdm(cells, desc="evaluating", disable=not progress):
        try:
            out = load_outputs(data_root, store_root, cell, manifest)
            m = evaluate_outputs(cell, out)
            if n_resamples:
                reps = cell_replicates(cell, out, *draws[cell.viewpoint])
        except (StoreError, ValueError, OSError) as exc:
            broken.append({"cell": cell.key, "error": f"{type(exc).__name__}: {exc}"})
            continue
        metric_rows.append(m)
        test = m[m.subset == "test"]
        thresholds = {
            p: float(test[(test.level == "image") & (test.policy == p)].threshold.iloc[0])
            if len(test[(test.level == "image") & (test.policy == p)])
            else np.inf
            for p in ("oracle", "val-calibrated")
        }
        orc = test[(test.policy == "oracle") & (test.level == "pixel")]
        tau = float(orc.threshold.iloc[0]) if len(orc) else np.inf
        image_rows.append(per_image(cell, out, thresholds, tau))
        if n_resamples:
            key = {"model": cell.model, "masked": cell.masked, "seed": cell.seed, "viewpoint": cell.viewpoint}
            for (subset, level, metric), values in reps.items():
                rep_rows.append(
                    {
                        **key,
                        "subset": subset,
                        "level": level,
                        "metric": metric,
                        **{f"b{i}": v for i, v in enumerate(values)},
                    }
                )
    metrics = pd.concat(metric_rows, ignore_index=True) if metric_rows else pd.DataFrame()
    images = pd.concat(image_rows, ignore_index=True) if image_rows else pd.DataFrame()
    replicates = pd.DataFrame(rep_rows, columns=REPLICATE_KEYS + [f"b{i}" for i in range(n_resamples)])
    return Evaluation(metrics, images, pd.DataFrame(broken, columns=["cell", "error"]), replicates)


def summary_table(metrics: pd.DataFrame, subset: str, level: str, policy: str, columns) -> pd.DataFrame:
    """Mean ± std over seeds per (model label, viewpoint): the analog of Tables 4-7."""
    sel = metrics[(metrics.subset == subset) & (metrics.level == level) & (metrics.policy == policy)]
    if sel.empty:
        return pd.DataFrame()
    g = sel.groupby(["label", "viewpoint"], sort=True)
    return g[list(columns)].agg(M.mean_std).reset_index()


SIZE_BINS = ("small", "medium", "large")
POLICIES = ("oracle", "val-calibrated")


def with_size_bins(images: pd.DataFrame) -> pd.DataFrame:
    """``images`` plus ``size_bin`` for defective images (eq. 15: tertiles of area_ratio per view)."""
    out = images.copy()
    out["size_bin"] = ""
    anomalous = out[out.label == "anomalous"].drop_duplicates("image_id")
    bins = {}
    for view, g in anomalous.groupby("viewpoint"):
        b = M.size_bins(g.area_ratio.to_numpy(), np.full(len(g), view))
        bins.update(dict(zip(g.image_id, b, strict=True)))
    sel = out.label == "anomalous"
    out.loc[sel, "size_bin"] = out.loc[sel, "image_id"].map(bins)
    return out


def _pred(images: pd.DataFrame, policy: str) -> pd.Series:
    col = f"pred_{policy.replace('-', '_')}"
    if col not in images:
        raise ValueError(f"unknown threshold policy {policy!r}; choose one of {POLICIES}")
    return images[col].astype(bool)


def fn_by_size(images: pd.DataFrame, policy: str = "oracle") -> pd.DataFrame:
    """Image-level false negatives per size bin, per seed, at the image threshold of ``policy``
    (``oracle`` = the paper's operating point on the test set itself; ``val-calibrated``)."""
    x = with_size_bins(images)
    anomalous = x[x.label == "anomalous"].copy()
    if anomalous.empty:
        return pd.DataFrame()
    anomalous["fn"] = ~_pred(anomalous, policy)
    out = (
        anomalous.groupby(["model", "masked", "viewpoint", "seed", "size_bin"])
        .fn.sum()
        .unstack("size_bin", fill_value=0)
    )
    out = out.reindex(columns=list(SIZE_BINS), fill_value=0).reset_index()
    out.columns.name = None
    out["total"] = out[list(SIZE_BINS)].sum(axis=1)
    out.insert(0, "threshold", policy)
    return out


def over_seeds(table: pd.DataFrame, keys, columns) -> pd.DataFrame:
    """Mean ± std over seeds of per-seed ``columns`` (as text; integer columns are counts)."""
    g = table.groupby(list(keys), sort=True)
    fns = {}
    for c in columns:
        counts = pd.api.types.is_integer_dtype(table[c].dtype)
        fns[c] = lambda v, counts=counts: M.mean_std(v, counts=counts)
    return g[list(columns)].agg(fns).reset_index()


def image_fp_share(images: pd.DataFrame, policy: str = "oracle") -> pd.DataFrame:
    """Image-level TP/FP/FN and FP share = FP / (FP + FN) (eq. 13) per cell at ``policy``'s threshold."""
    x = images.assign(pred=_pred(images, policy), y=images.label == "anomalous")
    rows = []
    for (model, masked, view, seed), g in x.groupby(["model", "masked", "viewpoint", "seed"], sort=True):
        fp, fn = int((g.pred & ~g.y).sum()), int((~g.pred & g.y).sum())
        rows.append(
            {
                "threshold": policy,
                "model": model,
                "masked": masked,
                "viewpoint": view,
                "seed": seed,
                "fp": fp,
                "fn": fn,
                "fp_share": fp / (fp + fn) if fp + fn else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def label_of(model: str, masked: bool) -> str:
    return model + ("†" if masked else "")


def intervals(metrics: pd.DataFrame, replicates: pd.DataFrame, subset: str = "test") -> pd.DataFrame:
    """Per (model, masked, viewpoint) and headline metric: mean and std over seeds (threshold-free,
    test split) and the 95% bootstrap interval of the seed-mean (replicates averaged over seeds)."""
    rows = []
    base = metrics[(metrics.subset == subset) & (metrics.policy == "oracle")]
    bcols = [c for c in replicates.columns if c.startswith("b") and c[1:].isdigit()]
    if "subset" in replicates:
        replicates = replicates[replicates.subset == subset]
    for (model, masked, view, level, metric), g in replicates.groupby(
        ["model", "masked", "viewpoint", "level", "metric"], sort=True
    ):
        rows_m = base[
            (base.model == model) & (base.masked == masked) & (base.viewpoint == view) & (base.level == level)
        ]
        vals = rows_m[metric].to_numpy(float)
        random = bool(rows_m.get("random_backbone", pd.Series(dtype=bool)).astype(bool).any())
        lo, hi = B.percentile_interval(g[bcols].to_numpy(float).mean(0))
        rows.append(
            {
                "model": model,
                "masked": bool(masked),
                "label": label_of(model, masked) + (" [random backbone]" if random else ""),
                "viewpoint": view,
                "level": level,
                "metric": metric,
                "n_seeds": len(vals),
                "mean": float(np.mean(vals)) if len(vals) else np.nan,
                "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows)


def format_interval(r) -> str:
    """'0.850 [0.780, 0.910]' or, over seeds, '0.850 ± 0.012 [0.780, 0.910]'."""
    mid = f"{r['mean']:.3f}" if np.isnan(r["std"]) else f"{r['mean']:.3f} ± {r['std']:.3f}"
    return f"{mid} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


METRIC_NAMES = {"auroc": "AUROC", "aupr": "AU-PR", "aupro": "AUPRO"}


def headline_table(iv: pd.DataFrame) -> pd.DataFrame:
    """Models as rows; one column per viewpoint and headline metric, each 'value [95% CI]'."""
    if iv.empty:
        return pd.DataFrame()
    x = iv.assign(
        column=iv.level + " " + iv.metric.map(METRIC_NAMES) + " " + iv.viewpoint,
        text=iv.apply(format_interval, axis=1),
    )
    order = [
        f"{lvl} {m} {v}"
        for lvl, m in (("image", "AUROC"), ("image", "AU-PR"), ("pixel", "AUROC"), ("pixel", "AUPRO"))
        for v in sorted(iv.viewpoint.unique())
    ]
    wide = x.pivot(index="label", columns="column", values="text")
    return (
        wide.reindex(columns=[c for c in order if c in wide.columns]).reset_index().rename_axis(None, axis=1)
    )


def defect_panel_rows(data_root, manifest: pd.DataFrame, cells, n: int = 3, store_root=None) -> list:
    """Rows for ``plots.heatmap_panels``: the first ``n`` anomalous test images of the cells' viewpoint,
    each (image, ground truth, {cell label: anomaly map}) for every cell in ``cells`` (one viewpoint)."""
    root = Path(data_root)
    cells = [cells] if isinstance(cells, Cell) else list(cells)
    if len({c.viewpoint for c in cells}) != 1:
        raise ValueError(f"defect panels show one viewpoint, got {sorted({c.viewpoint for c in cells})}")
    store = Path(store_root) if store_root is not None else root / "results"
    outs = {c.label: load_outputs(root, store, c, manifest) for c in cells}
    first = next(iter(outs.values()))
    t = first["table"]
    idx = [i for i in range(len(t)) if t.label.iloc[i] == "anomalous" and t.split.iloc[i] == "test"][:n]
    return [
        (
            read_image(root / t.image_path.iloc[i]),
            first["masks"][i],
            {k: o["maps"][i] for k, o in outs.items()},
        )
        for i in idx
    ]


def model_panel_rows(data_root, manifest, cells, image_id=None, store_root=None, metrics=None) -> list:
    """Rows for ``plots.model_panels``: (label, image, GT, map, tau*, note) of one test image for every
    cell in ``cells`` (one viewpoint); ``image_id``: that image (default: the viewpoint's first anomalous
    test image); tau*: the cell's pixel oracle threshold from ``metrics`` (inf when not given)."""
    root = Path(data_root)
    cells = [cells] if isinstance(cells, Cell) else list(cells)
    if len({c.viewpoint for c in cells}) != 1:
        raise ValueError(f"model panels show one viewpoint, got {sorted({c.viewpoint for c in cells})}")
    store = Path(store_root) if store_root is not None else root / "results"
    rows = []
    for c in cells:
        out = load_outputs(root, store, c, manifest)
        t = out["table"]
        if image_id is None:
            first = [i for i in range(len(t)) if t.label.iloc[i] == "anomalous" and t.split.iloc[i] == "test"]
            if not first:
                raise ValueError(f"cell {c.key}: no anomalous test image to show")
            image_id = t.image_id.iloc[first[0]]
        i = int(np.flatnonzero(t.image_id.to_numpy() == image_id)[0])
        tau = float("inf")
        if metrics is not None:
            sel = metrics[
                (metrics.model == c.model)
                & (metrics.masked == c.masked)
                & (metrics.seed == c.seed)
                & (metrics.viewpoint == c.viewpoint)
                & (metrics.subset == "test")
                & (metrics.level == "pixel")
                & (metrics.policy == "oracle")
            ]
            tau = float(sel.threshold.iloc[0]) if len(sel) else tau
        note = f"score {float(t.score.iloc[i]):.3g}, {t.label.iloc[i]}"
        rows.append(
            (c.label, read_image(root / t.image_path.iloc[i]), out["masks"][i], out["maps"][i], tau, note)
        )
    return rows
