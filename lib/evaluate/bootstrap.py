"""Bootstrap intervals that resample underbodies, exact for every resample.

A resample draws a viewpoint's test underbodies with replacement (normal and defective ones
separately, so every resample holds both). It is a vector of counts ``w``: how often each image
was drawn. Every metric of a resample equals the metric of the image list in which each image is
repeated ``w`` times (``PixelScores`` on that list, to the last bit of the counts); we compute it
from per-image statistics without building the copies:

- image AUROC: sum_{i defective, j normal} w_i w_j [s_i > s_j] (+1/2 on ties) / (W_def W_norm);
- image AU-PR: scikit-learn's step-wise average precision with weighted TP/FP counts;
- pixel AUROC: for each defect pixel p and image j, the normal pixels of j strictly below / at or
  below p's score (``searchsorted`` once), then a weighted sum per resample (one matrix product);
- pixel AU-PR: also the defect pixels of each image at or above p's score, so each defect pixel's
  precision under a resample is a ratio of two weighted sums (scikit-learn's step-wise AP);
- pixel AUPRO: the same counts give each defect pixel's FPR step [a_p, b_p] under the resample's
  weights; the area is ``PixelScores.aupro``'s per-pixel ramp with region weights w_i / (size * R(w)).

The same counts drawn for every cell of a viewpoint (same seed, same image order) make the
replicates paired across models and masking, so differences get intervals too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.evaluate import metrics as M

#: headline metrics that get an interval: (level, metric)
BOOTSTRAP_METRICS = (
    ("image", "auroc"),
    ("image", "aupr"),
    ("pixel", "auroc"),
    ("pixel", "aupr"),
    ("pixel", "aupro"),
)
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 2024


def resample_counts(groups, strata, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED):
    """(n_resamples, n_images) int counts: underbodies (``groups``) drawn with replacement within each
    stratum (``strata`` per image, constant within a group), each image counted as often as its group."""
    groups = np.asarray(groups)
    strata = np.asarray(strata)
    if groups.shape != strata.shape:
        raise ValueError(f"{groups.size} group labels for {strata.size} strata labels")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    uniq, inverse = np.unique(groups, return_inverse=True)
    group_stratum = {}
    for g, s in zip(inverse, strata, strict=True):
        if group_stratum.setdefault(int(g), s) != s:
            raise ValueError(f"underbody {uniq[g]!r} has images in two strata")
    gs = np.array([group_stratum[g] for g in range(len(uniq))])
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, len(uniq)), np.int64)
    for s in sorted(set(gs.tolist()), key=str):
        members = np.flatnonzero(gs == s)
        draws = rng.integers(0, len(members), size=(n_resamples, len(members)))
        for b in range(n_resamples):
            counts[b] += np.bincount(members[draws[b]], minlength=len(uniq))
    return counts[:, inverse]


def image_auroc(y_true, y_score, weights) -> np.ndarray:
    """AUROC of each resample (rows of ``weights``), ties one half; exact."""
    y, s = M._check_binary(y_true, y_score)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    pos, neg = s[y], s[~y]
    win = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    wp, wn = w[:, y], w[:, ~y]
    num = np.einsum("bi,ij,bj->b", wp, win, wn)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def image_aupr(y_true, y_score, weights) -> np.ndarray:
    """Average precision of each resample (scikit-learn's step-wise definition, weighted counts); exact."""
    y, s = M._check_binary(y_true, y_score)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(-s, kind="mergesort")
    s, y, w = s[order], y[order], w[:, order]
    ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score (descending)
    tp = np.cumsum(w * y, axis=1)[:, ends]
    fp = np.cumsum(w * ~y, axis=1)[:, ends]
    n_pos = tp[:, -1]
    d_tp = np.diff(np.c_[np.zeros(len(w)), tp], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
        return np.where(n_pos > 0, (d_tp * precision).sum(1) / np.where(n_pos > 0, n_pos, 1), np.nan)


class PixelBootstrap:
    """Pixel AUROC and AUPRO of any reweighting of a fixed list of images, exact.

    Holds, for every defect pixel, how many normal pixels of each image lie strictly below and at or
    below its score, so a resample costs two matrix products, not a re-sort of all pixels.
    """

    def __init__(self, masks, maps, image_ids=None):
        masks, maps = list(masks), list(maps)
        ids = list(image_ids) if image_ids is not None else [f"#{i}" for i in range(len(maps))]
        M.PixelScores(masks[:1], maps[:1], ids[:1], components=False)  # shape / finiteness checks on one
        dtype = M._score_dtype(maps)
        import cv2

        n = len(maps)
        self.n_images = n
        self.n_normal = np.zeros(n, np.float64)  # normal pixels per image
        self.n_defect = np.zeros(n, np.float64)
        self.n_regions = np.zeros(n, np.float64)
        pos, owner, inv_size, negs, defs = [], [], [], [], []
        for i, (name, m, a) in enumerate(zip(ids, masks, maps, strict=True)):
            m, a = np.asarray(m), np.asarray(a)
            if m.shape != a.shape:
                raise ValueError(
                    f"image {name}: mask shape {m.shape} differs from anomaly map shape {a.shape}"
                )
            if not np.isfinite(a).all():
                raise ValueError(f"image {name}: anomaly map holds NaN or infinite values")
            g = m > 0
            negs.append(np.sort(a[~g].astype(dtype, copy=False)))
            self.n_normal[i] = g.size - g.sum()
            k = int(g.sum())
            self.n_defect[i] = k
            if k:
                count, labels = cv2.connectedComponents(g.astype(np.uint8), connectivity=8)
                sizes = np.bincount(labels[g] - 1, minlength=count - 1).astype(np.float64)
                self.n_regions[i] = count - 1
                pos.append(a[g].astype(dtype, copy=False))
                defs.append((i, np.sort(pos[-1])))
                owner.append(np.full(k, i))
                inv_size.append(1.0 / sizes[labels[g] - 1])
        self.pos = np.concatenate(pos) if pos else np.zeros(0, dtype)
        self.owner = np.concatenate(owner) if owner else np.zeros(0, np.int64)
        self.inv_size = np.concatenate(inv_size) if inv_size else np.zeros(0)
        self.below = np.empty((len(self.pos), n), np.float64)
        self.at_or_below = np.empty((len(self.pos), n), np.float64)
        for j, neg in enumerate(negs):
            self.below[:, j] = np.searchsorted(neg, self.pos, side="left")
            self.at_or_below[:, j] = np.searchsorted(neg, self.pos, side="right")
        self.defect_at_or_above = np.zeros((len(self.pos), n), np.float64)
        for j, d in defs:
            self.defect_at_or_above[:, j] = len(d) - np.searchsorted(d, self.pos, side="left")

    def metrics(self, weights, fpr_limit: float = 0.3, chunk: int = 128) -> dict:
        """{'auroc': (B,), 'aupr': (B,), 'aupro': (B,)} for each row of ``weights`` (B, n_images)."""
        w = np.atleast_2d(np.asarray(weights, np.float64))
        if w.shape[1] != self.n_images:
            raise ValueError(f"weights have {w.shape[1]} columns for {self.n_images} images")
        L = fpr_limit
        auroc, aupr, aupro = np.full(len(w), np.nan), np.full(len(w), np.nan), np.full(len(w), np.nan)
        for b0 in range(0, len(w), chunk):
            wb = w[b0 : b0 + chunk]  # (b, n)
            n_neg = wb @ self.n_normal
            n_pos = wb @ self.n_defect
            regions = wb @ self.n_regions
            below = self.below @ wb.T  # (P, b): weighted normal pixels strictly below each defect pixel
            at_or_below = self.at_or_below @ wb.T
            w_pix = wb[:, self.owner].T  # (P, b): each defect pixel counted as often as its image
            ok_auc = (n_pos > 0) & (n_neg > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                num = (w_pix * (below + at_or_below)).sum(0)
                auroc[b0 : b0 + chunk] = np.where(ok_auc, num / (2.0 * n_pos * n_neg), np.nan)
                tp = self.defect_at_or_above @ wb.T  # weighted defect pixels at or above each one's score
                fp = n_neg[None, :] - below  # weighted normal pixels at or above it
                precision = tp / np.where(tp + fp > 0, tp + fp, 1.0)
                ap = (w_pix * precision).sum(0) / np.where(n_pos > 0, n_pos, 1.0)
                aupr[b0 : b0 + chunk] = np.where(n_pos > 0, ap, np.nan)
                a = (n_neg - at_or_below) / n_neg
                bb = (n_neg - below) / n_neg
                ramp = bb - a
                full = np.where(bb <= L, ramp / 2 + (L - bb), 0.0)
                partial = np.where(
                    (a < L) & (L < bb), (L - a) ** 2 / (2 * np.where(ramp > 0, ramp, 1.0)), 0.0
                )
                weight = w_pix * self.inv_size[:, None] / regions
                area = (weight * (full + partial)).sum(0) / L
                aupro[b0 : b0 + chunk] = np.where(
                    (regions > 0) & (n_neg > 0), np.clip(area, 0.0, 1.0), np.nan
                )
        return {"auroc": auroc, "aupr": aupr, "aupro": aupro}


def replicates(table: pd.DataFrame, maps, masks, weights) -> dict:
    """{(level, metric): (B,) replicate values} of one cell's evaluated images (rows of ``table``,
    in the order of the columns of ``weights``)."""
    y = (table.label == "anomalous").to_numpy()
    s = table.score.to_numpy(float)
    px = PixelBootstrap(masks, maps, table.image_id.tolist()).metrics(weights)
    return {
        ("image", "auroc"): image_auroc(y, s, weights),
        ("image", "aupr"): image_aupr(y, s, weights),
        ("pixel", "auroc"): px["auroc"],
        ("pixel", "aupr"): px["aupr"],
        ("pixel", "aupro"): px["aupro"],
    }


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval (NaN replicates, e.g. a metric undefined on a resample, dropped)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
