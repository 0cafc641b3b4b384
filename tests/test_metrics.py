"""Metrics against scikit-learn and an independent, straightforward AUPRO implementation."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.evaluate import metrics as M


def reference_aupro(masks, maps, fpr_limit=0.3, n_thresholds=400):
    """MVTec AUPRO, written plainly: loop over thresholds and connected components."""
    masks = [m > 0 for m in masks]
    lo, hi = min(a.min() for a in maps), max(a.max() for a in maps)
    comps = []
    for m in masks:
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        comps.append([lab == c for c in range(1, n + 1)])
    neg = sum(int((~m).sum()) for m in masks)
    fprs, pros = [], []
    for t in np.linspace(hi, lo, n_thresholds):
        fp, overlaps = 0, []
        for m, a, cs in zip(masks, maps, comps, strict=True):
            pred = a >= t
            fp += int((pred & ~m).sum())
            for c in cs:
                overlaps.append((pred & c).sum() / c.sum())
        fprs.append(fp / neg)
        pros.append(np.mean(overlaps))
    fprs, pros = np.array([0.0] + fprs), np.array([0.0] + pros)
    keep = fprs <= fpr_limit
    x, y = fprs[keep], pros[keep]
    i = keep.sum()
    if i < len(fprs):
        x2, y2 = fprs[i], pros[i]
        y_lim = y[-1] + (y2 - y[-1]) * (fpr_limit - x[-1]) / (x2 - x[-1])
        x, y = np.r_[x, fpr_limit], np.r_[y, y_lim]
    return np.trapezoid(y, x) / fpr_limit


@pytest.mark.parametrize("seed", range(4))
def test_image_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = rng.normal(y * 0.8, 1.0).round(1)  # rounding creates ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_pixel_auroc_aupr_match_sklearn():
    rng = np.random.default_rng(1)
    masks, maps = [], []
    for _ in range(6):
        m = np.zeros((40, 50), np.uint8)
        y0, x0 = rng.integers(0, 30, 2)
        m[y0 : y0 + 8, x0 : x0 + 12] = 1
        a = rng.normal(0, 1, m.shape) + 1.5 * m
        masks.append(m)
        maps.append(a)
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([a.ravel() for a in maps])
    out = M.pixel_metrics(masks, maps)
    assert out["auroc"] == pytest.approx(roc_auc_score(y, s), abs=2e-4)
    assert out["aupr"] == pytest.approx(average_precision_score(y, s), abs=2e-3)


@pytest.mark.parametrize("seed", range(3))
def test_aupro_matches_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for _ in range(4):
        m = np.zeros((30, 40), np.uint8)
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, 25, 2)
            h, w = rng.integers(2, 7, 2)
            m[y0 : y0 + h, x0 : x0 + w] = 1
        masks.append(m)
        maps.append(rng.random(m.shape) + 0.6 * m * rng.random())
    ours = M.PixelHistogram(masks, maps, n_bins=4000, components=True).aupro(0.3)
    ref = reference_aupro(masks, maps, 0.3, n_thresholds=1500)
    assert 0.0 <= ours <= 1.0
    assert ours == pytest.approx(ref, abs=5e-3)


def test_aupro_hand_made_cases():
    m = np.zeros((10, 10), np.uint8)
    m[2:4, 2:4] = 1
    perfect = m.astype(float)
    assert M.PixelHistogram([m], [perfect], components=True).aupro() == pytest.approx(1.0, abs=1e-3)
    inverted = 1.0 - perfect
    assert M.PixelHistogram([m], [inverted], components=True).aupro() == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="fpr_limit"):
        M.PixelHistogram([m], [perfect], components=True).aupro(0)


def test_iou_f1_fp_share_known_answers():
    # 4 GT pixels; prediction hits 3 of them and 1 background pixel
    m = np.zeros((4, 4), np.uint8)
    m[0, :] = 1
    a = np.zeros((4, 4))
    a[0, :3] = 1.0
    a[3, 3] = 1.0
    out = M.pixel_metrics([m], [a], threshold=0.5)
    assert (out["tp"], out["fp"], out["fn"]) == (3, 1, 1)
    assert out["iou"] == pytest.approx(3 / 5)
    assert out["precision"] == pytest.approx(0.75) and out["recall"] == pytest.approx(0.75)
    assert out["f1"] == pytest.approx(0.75)
    assert out["fp_share"] == pytest.approx(0.5)
    assert M.prf_from_counts(0, 0, 0)["f1"] == 0.0
    oracle = M.pixel_metrics([m], [a])  # tau* = argmax IoU: 0.5 here too
    assert oracle["iou"] == pytest.approx(3 / 5)


def test_best_thresholds_are_optimal():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.normal(y, 1.0)
    t = M.best_f1_threshold(y, s)
    f1 = M.image_metrics(y, s, t)["f1"]
    for other in np.quantile(s, np.linspace(0.01, 0.99, 50)):
        assert M.image_metrics(y, s, other)["f1"] <= f1 + 1e-12


def test_size_bins_tertiles_per_view():
    area = np.array([1, 2, 3, 4, 5, 6, 10, 20, 30], float)
    view = np.array(["a"] * 6 + ["b"] * 3)
    bins = M.size_bins(area, view)
    assert list(bins[:6]) == ["small", "small", "medium", "medium", "large", "large"]
    assert list(bins[6:]) == ["small", "medium", "large"]


def test_paired_tests_with_bh():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, 40)
    rows = M.paired_tests({"good": base + 0.2, "same": base + rng.normal(0, 0.01, 40), "base": base})
    by = {(r["a"], r["b"]): r for r in rows}
    assert by[("base", "good")]["significant"] and by[("base", "good")]["mean_diff"] < 0
    assert all(r["p_bh"] >= r["p"] - 1e-15 for r in rows)
    with pytest.raises(ValueError, match="same items"):
        M.paired_tests({"a": np.zeros(3), "b": np.zeros(4)})


def test_bad_inputs():
    with pytest.raises(ValueError, match="mask shape"):
        M.pixel_metrics([np.zeros((3, 3))], [np.zeros((3, 4))])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0, 1], [0.1, np.nan])
    assert M.mean_std([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
