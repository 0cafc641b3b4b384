"""Image- and pixel-level metrics (paper section 7) as numpy functions, ``f(y_true, y_score)``.

Pixel metrics sweep thresholds with histograms (one ``bincount`` over all pixels, then
cumulative sums), never a Python loop per threshold, so a paper-size test set (about 150
images at 848x480, 61 M pixels) evaluates in seconds. Threshold-free numbers (AUROC, AU-PR,
AUPRO) use ``n_bins`` score quantisation; with the default 2**14 bins they agree with the
exact scikit-learn values to about 1e-4 (tested).

Thresholds: every thresholded number says which threshold it used, the *oracle* one chosen on
the evaluated set itself (as the paper does: tau* = argmax IoU, or max F1 at image level) or
one *calibrated* on the validation split and applied unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import stats

DEFAULT_BINS = 1 << 14


# ----------------------------------------------------------------------------- image level
def _check_binary(y_true, y_score):
    y_true = np.asarray(y_true).astype(bool).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has {y_true.size} values, y_score {y_score.size}")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values")
    return y_true, y_score


def roc_auc(y_true, y_score) -> float:
    """Exact AUROC (ties count one half), via ranks: O(n log n)."""
    y_true, y_score = _check_binary(y_true, y_score)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(y_score)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true, y_score) -> float:
    """AU-PR as average precision (scikit-learn's step-wise definition), exact."""
    y_true, y_score = _check_binary(y_true, y_score)
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-y_score, kind="mergesort")
    s, t = y_score[order], y_true[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(t)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def confusion_at(y_true, y_score, threshold: float) -> dict:
    """TP, FP, FN, TN with ``score >= threshold`` predicted anomalous."""
    y_true, y_score = _check_binary(y_true, y_score)
    pred = y_score >= threshold
    return {
        "tp": int((pred & y_true).sum()),
        "fp": int((pred & ~y_true).sum()),
        "fn": int((~pred & y_true).sum()),
        "tn": int((~pred & ~y_true).sum()),
    }


def prf_from_counts(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall, F1, IoU and FP share = FP / (FP + FN) (eq. 13); 0/0 -> 0 (or NaN for FP share)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    fp_share = fp / (fp + fn) if fp + fn else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou, "fp_share": fp_share}


def best_f1_threshold(y_true, y_score) -> float:
    """The score threshold that maximises image-level F1 on (y_true, y_score)."""
    y_true, y_score = _check_binary(y_true, y_score)
    order = np.argsort(-y_score, kind="mergesort")
    s, t = y_score[order], y_true[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(t)[distinct]
    fp = (distinct + 1) - tp
    fn = t.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(s[distinct[int(np.argmax(f1))]])


def image_metrics(y_true, y_score, threshold: float) -> dict:
    """AUROC, AU-PR and thresholded precision/recall/F1/FP share at ``threshold``."""
    c = confusion_at(y_true, y_score, threshold)
    out = {
        "auroc": roc_auc(y_true, y_score),
        "aupr": average_precision(y_true, y_score),
        "threshold": threshold,
    }
    out.update({k: v for k, v in prf_from_counts(c["tp"], c["fp"], c["fn"]).items() if k != "iou"})
    out.update(c)
    return out


# ----------------------------------------------------------------------------- pixel level
class PixelHistogram:
    """Positive/negative pixel counts per score bin over a whole set of images.

    Built once (one pass over the maps); every pixel metric and threshold sweep reads it.
    Bin edges span [lo, hi] of all scores; ``threshold_of(k)`` is the lower edge of bin k, so
    "predict bins >= k" is exactly "score >= threshold_of(k)" up to the quantisation.
    """

    def __init__(self, masks, maps, n_bins: int = DEFAULT_BINS, lo=None, hi=None, components: bool = False):
        masks, maps = list(masks), list(maps)
        if len(masks) != len(maps):
            raise ValueError(f"{len(masks)} masks but {len(maps)} anomaly maps")
        if not masks:
            raise ValueError("no images to evaluate")
        for i, (m, a) in enumerate(zip(masks, maps, strict=True)):
            if m.shape != a.shape:
                raise ValueError(f"image {i}: mask shape {m.shape} differs from anomaly map shape {a.shape}")
        self.lo = float(min(float(a.min()) for a in maps)) if lo is None else float(lo)
        self.hi = float(max(float(a.max()) for a in maps)) if hi is None else float(hi)
        if not np.isfinite(self.lo) or not np.isfinite(self.hi):
            raise ValueError("anomaly maps contain NaN or infinite values")
        self.n_bins = n_bins
        span = max(self.hi - self.lo, 1e-12)
        self.pos = np.zeros(n_bins, np.int64)
        self.neg = np.zeros(n_bins, np.int64)
        comp_bins, comp_sizes = [], []
        for m, a in zip(masks, maps, strict=True):
            b = np.clip(((a.astype(np.float64) - self.lo) / span * n_bins).astype(np.int64), 0, n_bins - 1)
            g = m > 0
            self.pos += np.bincount(b[g], minlength=n_bins)
            self.neg += np.bincount(b[~g], minlength=n_bins)
            if components and g.any():
                n, labels = cv2.connectedComponents(g.astype(np.uint8), connectivity=8)
                for c in range(1, n):
                    sel = labels == c
                    comp_bins.append(np.bincount(b[sel], minlength=n_bins))
                    comp_sizes.append(int(sel.sum()))
        self.comp_hist = np.array(comp_bins, np.int64) if comp_bins else np.zeros((0, n_bins), np.int64)
        self.comp_sizes = np.array(comp_sizes, np.int64)
        # counts of pixels with score >= threshold_of(k), for k = 0..n_bins-1 (descending cumsum)
        self.tp = np.cumsum(self.pos[::-1])[::-1]
        self.fp = np.cumsum(self.neg[::-1])[::-1]
        self.n_pos, self.n_neg = int(self.pos.sum()), int(self.neg.sum())

    def threshold_of(self, k) -> np.ndarray:
        return self.lo + np.asarray(k) * (self.hi - self.lo) / self.n_bins

    def bin_of(self, threshold: float) -> int:
        span = max(self.hi - self.lo, 1e-12)
        return int(np.clip(np.ceil((threshold - self.lo) / span * self.n_bins - 1e-9), 0, self.n_bins))

    def counts_at(self, threshold: float) -> dict:
        k = self.bin_of(threshold)
        tp = int(self.tp[k]) if k < self.n_bins else 0
        fp = int(self.fp[k]) if k < self.n_bins else 0
        return {"tp": tp, "fp": fp, "fn": self.n_pos - tp, "tn": self.n_neg - fp}

    def auroc(self) -> float:
        if self.n_pos == 0 or self.n_neg == 0:
            return float("nan")
        tpr = np.r_[0.0, self.tp[::-1] / self.n_pos]
        fpr = np.r_[0.0, self.fp[::-1] / self.n_neg]
        return float(np.trapezoid(tpr, fpr))

    def aupr(self) -> float:
        """Average precision over the binned thresholds (step-wise, as scikit-learn)."""
        if self.n_pos == 0:
            return float("nan")
        tp, fp = self.tp[::-1].astype(np.float64), self.fp[::-1].astype(np.float64)
        keep = (tp + fp) > 0
        precision = np.where(keep, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / self.n_pos
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

    def best_iou_threshold(self) -> float:
        """tau* = argmax over thresholds of IoU (paper eq. before 13)."""
        iou = self.tp / np.maximum(self.n_pos + self.fp, 1)
        return float(self.threshold_of(int(np.argmax(iou))))

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """Area under the per-region-overlap curve up to ``fpr_limit``, normalised by it (MVTec AD)."""
        if len(self.comp_sizes) == 0 or self.n_neg == 0:
            return float("nan")
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
        overlap = np.cumsum(self.comp_hist[:, ::-1], axis=1) / self.comp_sizes[:, None]
        pro = np.r_[0.0, overlap.mean(axis=0)]
        fpr = np.r_[0.0, self.fp[::-1] / self.n_neg]
        # integrate up to the limit, interpolating the curve at fpr_limit
        idx = int(np.searchsorted(fpr, fpr_limit, side="right"))
        x, y = fpr[:idx], pro[:idx]
        if idx < len(fpr) and x[-1] < fpr_limit:
            x1, x2, y1, y2 = fpr[idx - 1], fpr[idx], pro[idx - 1], pro[idx]
            y_lim = y1 + (y2 - y1) * (fpr_limit - x1) / max(x2 - x1, 1e-18)
            x, y = np.r_[x, fpr_limit], np.r_[y, y_lim]
        return float(np.clip(np.trapezoid(y, x) / fpr_limit, 0.0, 1.0))


def pixel_metrics(
    masks, maps, threshold: float | None = None, n_bins: int = DEFAULT_BINS, fpr_limit=0.3
) -> dict:
    """Pixel AUROC, AU-PR, AUPRO and IoU/precision/recall/F1/FP share at a threshold.

    ``threshold=None`` uses the oracle tau* = argmax IoU on these very maps (the paper's choice).
    """
    h = PixelHistogram(masks, maps, n_bins, components=True)
    tau = h.best_iou_threshold() if threshold is None else float(threshold)
    c = h.counts_at(tau)
    out = {"auroc": h.auroc(), "aupr": h.aupr(), "aupro": h.aupro(fpr_limit), "threshold": tau}
    out.update(prf_from_counts(c["tp"], c["fp"], c["fn"]))
    out.update(c)
    return out


def best_iou_threshold(masks, maps, n_bins: int = DEFAULT_BINS) -> float:
    """tau* on a set (use on validation to calibrate a pixel threshold for test)."""
    return PixelHistogram(masks, maps, n_bins).best_iou_threshold()


# ----------------------------------------------------------------------------- analyses
def size_bins(area_ratio, viewpoint) -> np.ndarray:
    """Eq. 15: per-view tertiles b1 = Q(0.333), b2 = Q(0.667) of area_ratio -> small/medium/large."""
    area_ratio = np.asarray(area_ratio, dtype=np.float64)
    viewpoint = np.asarray(viewpoint)
    out = np.empty(len(area_ratio), dtype=object)
    for v in np.unique(viewpoint):
        sel = viewpoint == v
        b1, b2 = np.quantile(area_ratio[sel], [0.333, 0.667])
        a = area_ratio[sel]
        out[sel] = np.where(a <= b1, "small", np.where(a <= b2, "medium", "large"))
    return out


def mean_std(values) -> str:
    """'mean ± std' over seeds (sample std, ddof=1; a single value has no spread)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def paired_tests(values: dict[str, np.ndarray], alpha: float = 0.05):
    """Paired t-tests between every pair of models on the same items, Benjamini-Hochberg corrected.

    ``values`` maps model -> per-item metric, aligned (same items, same order). Returns a list of
    dicts: a, b, mean difference (a - b), t, p, p_bh, significant.
    """
    names = sorted(values)
    n = {len(np.asarray(values[k])) for k in names}
    if len(n) != 1:
        raise ValueError(f"paired tests need the same items for every model, got lengths {sorted(n)}")
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = np.asarray(values[a], float), np.asarray(values[b], float)
            d = x - y
            if np.allclose(d, d[0]):
                t, p = float("nan"), 1.0 if np.allclose(d, 0) else 0.0
            else:
                t, p = stats.ttest_rel(x, y)
            rows.append({"a": a, "b": b, "mean_diff": float(d.mean()), "t": float(t), "p": float(p)})
    if rows:
        p_bh = stats.false_discovery_control([r["p"] for r in rows], method="bh")
        for r, q in zip(rows, p_bh, strict=True):
            r["p_bh"] = float(q)
            r["significant"] = bool(q < alpha)
    return rows
