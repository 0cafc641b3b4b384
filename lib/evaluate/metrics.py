"""Image- and pixel-level metrics (paper section 7) as numpy functions, ``f(y_true, y_score)``.

Every number is exact: each distinct score is a candidate threshold, nothing is quantised, and
ties count as scikit-learn counts them. Pixel metrics sort the normal pixels' scores once and
read everything else off that with ``searchsorted`` (``PixelScores``), so a paper-size test set
(150 images at 848x480, 61 M pixels) evaluates in a few seconds on one core
(``benchmarks/pixel_metrics_speed.py``). NaN or infinite scores are errors naming the image.

Thresholds: every thresholded number says which threshold it used, the *oracle* one chosen on
the evaluated set itself (as the paper does: tau* = argmax IoU, or max F1 at image level) or
one *calibrated* on the validation split and applied unchanged. A threshold is always reported
as a score that occurs in the data, with ``score >= threshold`` predicted anomalous.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np


def scipy_stats():
    """scipy.stats, imported on first use: it takes ~0.8 s, which every grid cell's kernel paid at import."""
    from scipy import stats

    return stats


# ----------------------------------------------------------------------------- image level
def _check_binary(y_true, y_score):
    y_true = np.asarray(y_true).astype(bool).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true has {y_true.size} values, y_score {y_score.size}")
    if not np.isfinite(y_score).all():
        raise ValueError(
            f"y_score contains NaN or infinite values (at index {int(np.argmin(np.isfinite(y_score)))})"
        )
    return y_true, y_score


def roc_auc(y_true, y_score) -> float:
    """Exact AUROC (ties count one half), via ranks: O(n log n)."""
    y_true, y_score = _check_binary(y_true, y_score)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = scipy_stats().rankdata(y_score)
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
def _score_dtype(maps) -> np.dtype:
    """The dtype that holds every map's values exactly (float16/ints are widened, never narrowed)."""
    return np.result_type(np.float32, *(np.asarray(a).dtype for a in maps))


def threshold_for(threshold: float, dtype) -> np.generic:
    """The smallest value of ``dtype`` that is >= ``threshold``.

    ``score >= threshold_for(t, dtype)`` is then exactly ``score >= t`` for scores of that dtype,
    whereas numpy's own ``float32_array >= t`` rounds a Python float ``t`` to float32 first (and
    may round it down, predicting a pixel that lies below ``t``).
    """
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold is NaN")
    kind = np.dtype(dtype).type
    with np.errstate(over="ignore"):
        f = kind(t)
    if float(f) < t:
        f = np.nextafter(f, kind(np.inf))
    return f


def at_or_above(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean prediction ``map >= threshold``, compared exactly (see ``threshold_for``)."""
    a = np.asarray(anomaly_map)
    return a >= threshold_for(threshold, _score_dtype([a]))


class PixelScores:
    """Every pixel of a set of images, split by ground truth, sorted once; all pixel metrics read it.

    Exact for any finite maps: every distinct score is a candidate threshold, nothing is binned.
    Pixels tied at a threshold count as scikit-learn counts them (a tie between a defect and a
    normal pixel is one diagonal ROC step, worth one half). Cost: one sort of the normal pixels'
    scores and one of the defect pixels'; everything else is O(distinct defect scores) via
    ``searchsorted``.

    Thresholds are always reported as a score that occurs in the maps, with the rule
    ``score >= threshold`` predicted anomalous. Any threshold in the gap between that score and
    the next lower distinct score gives the same counts; we report the gap's upper end (the
    lowest score still predicted anomalous), never a value inside the gap.

    ``image_ids`` (optional) name the images in error messages.
    """

    def __init__(self, masks, maps, image_ids=None, components: bool = True):
        masks, maps = list(masks), list(maps)
        if len(masks) != len(maps):
            raise ValueError(f"{len(masks)} masks but {len(maps)} anomaly maps")
        if not masks:
            raise ValueError("no images to evaluate")
        ids = list(image_ids) if image_ids is not None else [f"#{i}" for i in range(len(maps))]
        if len(ids) != len(maps):
            raise ValueError(f"{len(ids)} image ids for {len(maps)} anomaly maps")
        gts = []
        for name, m, a in zip(ids, masks, maps, strict=True):
            m, a = np.asarray(m), np.asarray(a)
            if m.shape != a.shape:
                raise ValueError(
                    f"image {name}: mask shape {m.shape} differs from anomaly map shape {a.shape}"
                )
            if not np.isfinite(a).all():
                bad = int((~np.isfinite(a)).sum())
                raise ValueError(f"image {name}: anomaly map holds {bad} NaN or infinite value(s)")
            gts.append(m > 0)
        self.dtype = _score_dtype(maps)
        self.n_pos = int(sum(int(g.sum()) for g in gts))
        self.n_neg = int(sum(g.size for g in gts)) - self.n_pos
        neg = np.empty(self.n_neg, self.dtype)
        pos = np.empty(self.n_pos, self.dtype)
        weight = np.empty(self.n_pos, np.float64)  # 1 / (regions * region size): mean overlap per region
        sizes, o_neg, o_pos = [], 0, 0
        region_of = []
        for g, a in zip(gts, maps, strict=True):
            a = np.asarray(a)
            k_pos = int(g.sum())
            neg[o_neg : o_neg + g.size - k_pos] = a[~g]
            o_neg += g.size - k_pos
            if k_pos:
                pos[o_pos : o_pos + k_pos] = a[g]
                if components:
                    n, labels = cv2.connectedComponents(g.astype(np.uint8), connectivity=8)
                    region = labels[g] - 1 + len(sizes)
                    sizes.extend(np.bincount(labels[g] - 1, minlength=n - 1).tolist())
                    region_of.append(region)
                o_pos += k_pos
        self.n_regions = len(sizes)
        if components and self.n_regions:
            region = np.concatenate(region_of)
            weight[:] = 1.0 / (np.asarray(sizes, np.float64)[region] * self.n_regions)
        else:
            weight[:] = np.nan
        neg.sort()
        order = np.argsort(pos, kind="stable")
        pos, weight = pos[order], weight[order]
        self.neg, self.pos = neg, pos
        # distinct defect scores (ascending), how many defect pixels and how much region weight each holds
        starts = np.r_[0, np.flatnonzero(np.diff(pos)) + 1] if self.n_pos else np.zeros(0, np.int64)
        self.values = pos[starts]
        self.count = np.diff(np.r_[starts, self.n_pos]).astype(np.int64)
        self.weight = np.add.reduceat(weight, starts) if self.n_pos else np.zeros(0)
        # normal pixels strictly below / at or below each distinct defect score
        self.neg_below = np.searchsorted(neg, self.values, side="left").astype(np.int64)
        self.neg_at_or_below = np.searchsorted(neg, self.values, side="right").astype(np.int64)
        # defect pixels at or above each distinct defect score (descending cumulative counts)
        self.tp_at = np.cumsum(self.count[::-1])[::-1]

    def counts_at(self, threshold: float) -> dict:
        """TP, FP, FN, TN at ``score >= threshold`` for any threshold, compared exactly."""
        t = threshold_for(threshold, self.dtype)
        tp = self.n_pos - int(np.searchsorted(self.pos, t, side="left"))
        fp = self.n_neg - int(np.searchsorted(self.neg, t, side="left"))
        return {"tp": tp, "fp": fp, "fn": self.n_pos - tp, "tn": self.n_neg - fp}

    def auroc(self) -> float:
        """Exact ROC AUC (Mann-Whitney; a defect pixel tied with normal ones earns half of them)."""
        if self.n_pos == 0 or self.n_neg == 0:
            return float("nan")
        twice = int(np.sum(self.count * (self.neg_below + self.neg_at_or_below)))
        return twice / (2.0 * self.n_pos * self.n_neg)

    def aupr(self) -> float:
        """Average precision, scikit-learn's step-wise definition: sum over thresholds of dRecall * precision."""
        if self.n_pos == 0:
            return float("nan")
        fp = self.n_neg - self.neg_below  # normal pixels >= each distinct defect score
        precision = self.tp_at / (self.tp_at + fp)
        return float(np.sum(self.count * precision) / self.n_pos)

    def best_iou_threshold(self) -> float:
        """tau* = argmax IoU over every threshold; ties go to the highest threshold (fewest predicted pixels).

        The maximum always lies at a defect pixel's score (lowering a threshold past normal pixels
        only adds false positives). No defect pixels: ``inf`` (predict nothing).
        """
        if self.n_pos == 0:
            return float("inf")
        iou = self.tp_at / (self.n_pos + self.n_neg - self.neg_below)
        best = np.flatnonzero(iou == iou.max())[-1]  # values ascend: the last is the highest threshold
        return float(self.values[best])

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """Area under the per-region-overlap curve for FPR in [0, fpr_limit], divided by ``fpr_limit``.

        Regions are 8-connected ground-truth components, each weighing the same. The curve is the
        PRO/FPR polyline through every distinct threshold, cut at ``fpr_limit`` by linear
        interpolation (MVTec AD). By linearity it is the sum over defect pixels of their weight
        times the area each contributes: nothing on FPR < a, a ramp over the tied step [a, b]
        (normal pixels above / at or above its score), then full height up to the limit.
        """
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
        if self.n_regions == 0 or self.n_neg == 0:
            return float("nan")
        a = (self.n_neg - self.neg_at_or_below) / self.n_neg
        b = (self.n_neg - self.neg_below) / self.n_neg
        L = fpr_limit
        ramp = b - a
        full = np.where(L >= b, ramp / 2 + (L - b), 0.0)
        partial = np.where((a < L) & (L < b), (L - a) ** 2 / (2 * np.where(ramp > 0, ramp, 1.0)), 0.0)
        area = np.sum(self.weight * (full + partial))
        return float(np.clip(area / L, 0.0, 1.0))


def pixel_metrics(masks, maps, threshold: float | None = None, fpr_limit=0.3, image_ids=None) -> dict:
    """Pixel AUROC, AU-PR, AUPRO and IoU/precision/recall/F1/FP share at a threshold, all exact.

    ``threshold=None`` uses the oracle tau* = argmax IoU on these very maps (the paper's choice).
    """
    s = PixelScores(masks, maps, image_ids)
    tau = s.best_iou_threshold() if threshold is None else float(threshold)
    c = s.counts_at(tau)
    out = {"auroc": s.auroc(), "aupr": s.aupr(), "aupro": s.aupro(fpr_limit), "threshold": tau}
    out.update(prf_from_counts(c["tp"], c["fp"], c["fn"]))
    out.update(c)
    return out


def best_iou_threshold(masks, maps, image_ids=None) -> float:
    """tau* on a set (use on validation to calibrate a pixel threshold for test)."""
    return PixelScores(masks, maps, image_ids, components=False).best_iou_threshold()


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


def mean_std(values, counts: bool = False) -> str:
    """'mean ± std' over seeds (sample std, ddof=1; a single value has no spread). ``counts``: one
    seed's 40 prints as '40', not '40.000', and a mean and std over seeds get one decimal."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.0f}" if counts else f"{v[0]:.3f}"
    digits = 1 if counts else 3
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def paired_t(x, y) -> dict:
    """Paired t-test of x vs y: mean difference, t, p (a constant difference gets scipy's own answer)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on (near-)constant differences
        t, p = scipy_stats().ttest_rel(x, y)
    return {"diff": float((x - y).mean()), "t": float(t), "p": float(p)}


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values: min over j >= i of p_(j) * m / j, capped at 1.

    NaN p-values (a test that has no answer) stay NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    order = np.argsort(q, kind="stable")
    scaled = q[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    res = np.empty(m)
    res[order] = adjusted
    out[ok] = res
    return out
