"""Model comparisons as the paper states them, with a family for each Benjamini-Hochberg correction.

Two tests, each saying what is paired:
- **DeLong** (DeLong, DeLong & Clarke-Pearson 1988; the fast midrank form of Sun & Xu 2014): two
  AUROCs on the *same test images*, their correlation estimated from the structural components.
  Valid with a single training seed; run per seed.
- **paired t-test over seeds** (the paper's test): the per-seed image metric of two variants, paired
  by training seed. Needs at least 3 seeds; with fewer it is reported as not run.

Families: every pair of models within one (viewpoint, raw|masked) condition; and, separately,
masked vs raw of each model within one viewpoint. BH runs within a family (and per seed / metric).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from lib.evaluate import metrics as M
from lib.evaluate.evaluate import label_of

MIN_SEEDS_FOR_T = 3
ALPHA = 0.05


def _midranks(x: np.ndarray) -> np.ndarray:
    return M.scipy_stats().rankdata(x, method="average")


def delong_test(y_true, score_a, score_b) -> dict:
    """DeLong's test of AUROC(a) == AUROC(b) on the same images: auc_a, auc_b, diff, z, p (two-sided).

    Both AUROCs count ties as one half. When the difference has zero estimated variance the test
    has no answer: p = 1 for a zero difference (identical rankings), NaN otherwise.
    """
    y, a = M._check_binary(y_true, score_a)
    _, b = M._check_binary(y_true, score_b)
    if a.shape != b.shape:
        raise ValueError(f"scores have {a.size} and {b.size} values")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs >= 2 defective and >= 2 normal images, got {m} and {n}")
    v10, v01, auc = [], [], []
    for s in (a, b):
        pos, neg = s[y], s[~y]
        tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.r_[pos, neg])
        auc.append((tz[:m].sum() / m - (m + 1) / 2) / n)
        v10.append((tz[:m] - tx) / n)  # per defective image: share of normals it outscores
        v01.append(1.0 - (tz[m:] - ty) / m)  # per normal image: share of defectives above it
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = auc[0] - auc[1]
    if var <= 1e-15:
        z, p = float("nan"), (1.0 if abs(diff) < 1e-15 else float("nan"))
    else:
        z = diff / np.sqrt(var)
        p = float(2 * M.scipy_stats().norm.sf(abs(z)))
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": float(diff), "z": float(z), "p": p}


paired_t = M.paired_t  # per-seed values of two variants, paired by seed


def _delong_or_note(y, a, b) -> dict:
    try:
        return {**delong_test(y, a, b), "note": ""}
    except ValueError as exc:  # too few images of a class: no test, said so
        nan = float("nan")
        return {"auc_a": nan, "auc_b": nan, "diff": nan, "z": nan, "p": nan, "note": str(exc)}


def _bh(rows: list[dict], alpha: float) -> list[dict]:
    for r, q in zip(rows, M.benjamini_hochberg([r["p"] for r in rows]), strict=True):
        r["p_bh"] = float(q)
        r["significant"] = bool(np.isfinite(q) and q < alpha)
    return rows


def delong_families(images: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """DeLong tests, BH within each family. ``images``: per test image rows with model, masked, seed,
    viewpoint, image_id, label, score (the per-image table of ``evaluate_store``)."""
    rows = []
    for (view, seed), g in images.groupby(["viewpoint", "seed"], sort=True):
        wide = g.pivot_table(index="image_id", columns=["model", "masked"], values="score", aggfunc="first")
        y = g.drop_duplicates("image_id").set_index("image_id").label.reindex(wide.index) == "anomalous"
        wide = wide.dropna(axis=1)  # a variant lacking images of this view is not compared
        for masked in (False, True):
            models = sorted(m for m, k in wide.columns if k == masked)
            fam = []
            for ma, mb in itertools.combinations(models, 2):
                r = _delong_or_note(y, wide[(ma, masked)], wide[(mb, masked)])
                fam.append(
                    {
                        "family": f"models, {view}, {'masked' if masked else 'raw'}",
                        "viewpoint": view,
                        "seed": seed,
                        "a": label_of(ma, masked),
                        "b": label_of(mb, masked),
                        **r,
                    }
                )
            rows += _bh(fam, alpha)
        fam = []
        for model in sorted({m for m, _ in wide.columns}):
            if (model, False) in wide and (model, True) in wide:
                r = _delong_or_note(y, wide[(model, True)], wide[(model, False)])
                fam.append(
                    {
                        "family": f"masking, {view}",
                        "viewpoint": view,
                        "seed": seed,
                        "a": label_of(model, True),
                        "b": model,
                        **r,
                    }
                )
        rows += _bh(fam, alpha)
    cols = [
        "family",
        "viewpoint",
        "seed",
        "a",
        "b",
        "auc_a",
        "auc_b",
        "diff",
        "z",
        "p",
        "p_bh",
        "significant",
        "note",
    ]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(1, "test", "DeLong (same test images)")
    return out


def t_test_families(
    metrics: pd.DataFrame, alpha: float = ALPHA, metric_names=("auroc", "aupr")
) -> pd.DataFrame:
    """Paired t-tests over seeds on image metrics (test split, oracle rows), BH within each family and
    metric. With fewer than ``MIN_SEEDS_FOR_T`` seeds the rows say so and carry no p-value."""
    sel = metrics[(metrics.subset == "test") & (metrics.level == "image") & (metrics.policy == "oracle")]
    rows = []
    for metric in metric_names:
        for view, g in sel.groupby("viewpoint", sort=True):
            wide = g.pivot_table(index="seed", columns=["model", "masked"], values=metric, aggfunc="first")
            pairs = {}
            for masked in (False, True):
                models = sorted(m for m, k in wide.columns if k == masked)
                pairs[f"models, {view}, {'masked' if masked else 'raw'}"] = [
                    ((ma, masked), (mb, masked)) for ma, mb in itertools.combinations(models, 2)
                ]
            pairs[f"masking, {view}"] = [
                ((m, True), (m, False))
                for m in sorted({m for m, _ in wide.columns})
                if (m, True) in wide and (m, False) in wide
            ]
            for family, plist in pairs.items():
                fam = []
                for ka, kb in plist:
                    both = wide[[ka, kb]].dropna()
                    base = {
                        "family": family,
                        "viewpoint": view,
                        "metric": f"image {metric}",
                        "a": label_of(*ka),
                        "b": label_of(*kb),
                        "n_seeds": len(both),
                    }
                    if len(both) < MIN_SEEDS_FOR_T:
                        fam.append(
                            {**base, "diff": np.nan, "t": np.nan, "p": np.nan, "note": "needs >= 3 seeds"}
                        )
                    else:
                        fam.append({**base, **paired_t(both[ka], both[kb]), "note": ""})
                rows += _bh(fam, alpha)
    out = pd.DataFrame(rows)
    if len(out):
        out.insert(1, "test", "paired t over seeds")
    return out


def pair_tests(images: pd.DataFrame, metrics: pd.DataFrame, pairs, alpha: float = ALPHA) -> pd.DataFrame:
    """Image-AUROC tests of chosen pairs of variant labels (e.g. ('patchcore†', 'memseg')) in every
    viewpoint, BH within each viewpoint: the paper's paired t over seeds when every pair has >= 3
    seeds, else DeLong on the first seed's test images. Columns: viewpoint, a, b, diff, p, p_bh,
    significant, source."""
    pairs = list(pairs)
    seeds = sorted(images.seed.unique()) if len(images) else []
    rows = []
    if len(seeds) >= MIN_SEEDS_FOR_T:
        sel = metrics[(metrics.subset == "test") & (metrics.level == "image") & (metrics.policy == "oracle")]
        sel = sel.assign(variant=[label_of(m, k) for m, k in zip(sel.model, sel.masked, strict=True)])
        for view, g in sel.groupby("viewpoint", sort=True):
            wide = g.pivot_table(index="seed", columns="variant", values="auroc", aggfunc="first")
            fam = []
            for a, b in pairs:
                if a in wide and b in wide:
                    fam.append({"viewpoint": view, "a": a, "b": b, **paired_t(wide[a], wide[b])})
            rows += _bh(fam, alpha)
        source = f"paired t over {len(seeds)} seeds"
    else:
        first = images[images.seed == seeds[0]] if seeds else images
        first = first.assign(variant=[label_of(m, k) for m, k in zip(first.model, first.masked, strict=True)])
        for view, g in first.groupby("viewpoint", sort=True):
            wide = g.pivot_table(index="image_id", columns="variant", values="score", aggfunc="first")
            y = g.drop_duplicates("image_id").set_index("image_id").label.reindex(wide.index) == "anomalous"
            fam = []
            for a, b in pairs:
                if a in wide and b in wide:
                    fam.append({"viewpoint": view, "a": a, "b": b, **_delong_or_note(y, wide[a], wide[b])})
            rows += _bh(fam, alpha)
        source = f"DeLong, seed {seeds[0]}" if seeds else "DeLong"
    cols = ["viewpoint", "a", "b", "diff", "p", "p_bh", "significant"]
    out = pd.DataFrame(rows)
    out = out[cols] if len(out) else pd.DataFrame(columns=cols)
    return out.assign(source=source)
