"""Metrics against scikit-learn and against an exact reference written plainly in this file.

The reference loops over every distinct score as a threshold (small inputs only) and labels
regions with scipy (8-connected), independently of the implementation's cv2 + searchsorted path.
"""

import numpy as np
import pytest
from scipy import ndimage, stats
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.evaluate import metrics as M


def reference_pixel_metrics(masks, maps, fpr_limit=0.3):
    """Exact pixel AUROC, AP, AUPRO and (tau*, IoU*) by brute force over every distinct score."""
    gts = [np.asarray(m) > 0 for m in masks]
    maps = [np.asarray(a, dtype=np.float64) for a in maps]
    y = np.concatenate([g.ravel() for g in gts])
    s = np.concatenate([a.ravel() for a in maps])
    regions = []  # (image index, boolean region)
    for i, g in enumerate(gts):
        lab, n = ndimage.label(g, structure=np.ones((3, 3)))
        regions += [(i, lab == c) for c in range(1, n + 1)]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    fpr, tpr, pro = [0.0], [0.0], [0.0]
    best_iou, tau = 0.0, np.inf
    recall_prev, ap = 0.0, 0.0
    for t in np.unique(s)[::-1]:  # descending: every distinct score is a threshold
        pred = s >= t
        tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
        fpr.append(fp / n_neg if n_neg else np.nan)
        tpr.append(tp / n_pos if n_pos else np.nan)
        if regions:
            pro.append(np.mean([(maps[i][r] >= t).sum() / r.sum() for i, r in regions]))
        if n_pos:
            recall = tp / n_pos
            ap += (recall - recall_prev) * tp / (tp + fp)
            recall_prev = recall
            iou = tp / (n_pos + fp)
            if iou > best_iou:  # strict: ties keep the higher threshold
                best_iou, tau = iou, float(t)
    fpr, tpr, pro = np.array(fpr), np.array(tpr), np.array(pro)
    auroc = np.trapezoid(tpr, fpr) if n_pos and n_neg else np.nan
    aupro = np.nan
    if regions and n_neg:
        keep = fpr <= fpr_limit
        x, yy = fpr[keep], pro[keep]
        k = int(keep.sum())
        if k < len(fpr) and x[-1] < fpr_limit:
            y_lim = yy[-1] + (pro[k] - yy[-1]) * (fpr_limit - x[-1]) / (fpr[k] - x[-1])
            x, yy = np.r_[x, fpr_limit], np.r_[yy, y_lim]
        aupro = np.trapezoid(yy, x) / fpr_limit
    return {
        "auroc": auroc,
        "aupr": ap if n_pos else np.nan,
        "aupro": aupro,
        "threshold": tau,
        "iou": best_iou,
    }


def blob_maps(seed, n=5, shape=(24, 32), kind="normal"):
    """Masks with 0-3 rectangular defects each and maps of the kinds that models produce."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for _ in range(n):
        m = np.zeros(shape, np.uint8)
        for _ in range(rng.integers(0, 4)):
            y0, x0 = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
            m[y0 : y0 + rng.integers(1, 6), x0 : x0 + rng.integers(1, 8)] = 1
        signal = m * rng.uniform(0.2, 1.5)
        if kind == "normal":
            a = rng.normal(0, 1, shape) + signal
        elif kind == "outlier":
            a = np.clip(rng.normal(0.4, 0.2, shape) + 0.3 * signal, 0, 1)
        elif kind == "saturated":  # softmax-saturated: float32 collapses most to exactly 0 or 1
            a = 1 / (1 + np.exp(-(rng.normal(-16, 3, shape) + 12 * signal)))
        elif kind == "lognormal":
            a = np.exp(rng.normal(0, 2.5, shape) + signal)
        elif kind == "ties":
            a = np.round(rng.normal(0, 1, shape) + signal, 1)
        masks.append(m)
        maps.append(a.astype(np.float32))
    masks[0][2:5, 2:5] = 1  # at least one defect
    if kind == "outlier":
        g = masks[-1] == 0
        maps[-1][np.unravel_index(np.flatnonzero(g.ravel())[0], g.shape)] = 1e6
    return masks, maps


def check_against_reference(masks, maps, tol=1e-12):
    ours = M.pixel_metrics(masks, maps)
    ref = reference_pixel_metrics(masks, maps)
    for key in ("auroc", "aupr", "aupro", "iou"):
        if np.isnan(ref[key]):
            assert np.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(ref[key], abs=tol), key
    assert ours["threshold"] == ref["threshold"]
    y = np.concatenate([np.ravel(m) > 0 for m in masks])
    s = np.concatenate([np.ravel(a) for a in maps])
    if 0 < y.sum() < y.size:
        assert ours["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert ours["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    return ours


@pytest.mark.parametrize("kind", ["normal", "outlier", "saturated", "lognormal", "ties"])
@pytest.mark.parametrize("seed", range(3))
def test_pixel_metrics_exact_on_adversarial_maps(kind, seed):
    masks, maps = blob_maps(seed, kind=kind)
    check_against_reference(masks, maps)


def test_outlier_does_not_flatten_the_curve():
    """One normal pixel at 1e6 changes the ranking by one pixel, not the whole curve (binned: 0.5)."""
    masks, maps = blob_maps(7, kind="normal")
    base = M.pixel_metrics(masks, maps)
    g = np.argwhere(masks[-1] == 0)[0]
    maps[-1][tuple(g)] = 1e6
    out = check_against_reference(masks, maps)
    assert out["auroc"] == pytest.approx(base["auroc"], abs=2e-3)


def test_constant_maps_one_image():
    m = np.zeros((10, 10), np.uint8)
    m[2:4, 2:6] = 1  # 8 defect pixels, 92 normal
    out = M.pixel_metrics([m], [np.full((10, 10), 0.7, np.float32)])
    assert out["auroc"] == 0.5
    assert out["aupr"] == pytest.approx(8 / 100)
    assert out["aupro"] == pytest.approx(0.15)  # diagonal (0,0)-(1,1) interpolated at 0.3: 0.3*0.3/2/0.3
    assert out["threshold"] == pytest.approx(0.7) and out["iou"] == pytest.approx(8 / 100)
    assert (out["tp"], out["fp"]) == (8, 92)


def test_regions_touching_at_a_corner_are_one_region():
    m = np.zeros((10, 10), np.uint8)
    m[2:6, 2:6] = 1
    m[6, 6] = 1  # touches the square at a corner only: one 8-connected region
    a = np.zeros((10, 10))
    a[2:6, 2:6] = 1.0
    # curve (0,0) -> (0,16/17) -> (1,1); at FPR 0.3: 16/17 + 0.3/17
    assert M.pixel_metrics([m], [a])["aupro"] == pytest.approx((32 / 17 + 0.3 / 17) / 2)
    check_against_reference([m], [a])


def test_aupro_weighs_regions_not_pixels():
    m = np.zeros((10, 10), np.uint8)
    m[1:5, 1:5] = 1  # 16-pixel region, found
    m[8, 8] = 1  # 1-pixel region, missed
    a = np.zeros((10, 10))
    a[1:5, 1:5] = 1.0
    # per region: 0.5 until FPR 1; interpolated at 0.3: 0.5 + 0.5 * 0.3
    assert M.pixel_metrics([m], [a])["aupro"] == pytest.approx((0.5 + 0.5 + 0.15) / 2)


def test_tau_star_counts_tied_pixels_on_the_right_side():
    # defect scores 0.9, 0.5, 0.5; normal scores 0.5 and 97 x 0.1
    m = np.zeros((10, 10), np.uint8)
    m[0, :3] = 1
    a = np.full((10, 10), 0.1, np.float32)
    a[0, :3] = [0.9, 0.5, 0.5]
    a[5, 5] = 0.5
    out = M.pixel_metrics([m], [a])
    assert out["threshold"] == np.float32(0.5)  # IoU 3/4 there, 1/3 at 0.9
    assert (out["tp"], out["fp"], out["fn"]) == (3, 1, 0) and out["iou"] == pytest.approx(3 / 4)


def test_tau_star_tie_goes_to_the_higher_threshold():
    m = np.zeros((1, 6), np.uint8)
    m[0, :2] = 1
    a = np.array([[0.9, 0.5, 0.5, 0.5, 0.1, 0.1]])
    # t=0.9: tp 1, fp 0 -> 1/2; t=0.5: tp 2, fp 2 -> 2/4: equal IoU, the higher threshold wins
    assert M.pixel_metrics([m], [a])["threshold"] == 0.9


def test_calibrated_threshold_is_applied_exactly():
    x = np.float32(0.1)
    m = np.zeros((1, 4), np.uint8)
    m[0, 0] = 1
    a = np.array([[x, x, 0.0, 0.0]], np.float32)
    s = M.PixelScores([m], [a])
    just_above = np.nextafter(float(x), 1.0)  # between float32(0.1) and the next float32
    assert float(np.float32(just_above)) == float(x)  # numpy's own comparison would round it down
    assert s.counts_at(just_above) == {"tp": 0, "fp": 0, "fn": 1, "tn": 3}
    assert s.counts_at(float(x)) == {"tp": 1, "fp": 1, "fn": 0, "tn": 2}
    assert s.counts_at(0.05) == s.counts_at(float(x))  # a threshold in a gap: same counts as its upper end
    assert not M.at_or_above(a, just_above).any()
    assert M.pixel_metrics([m], [a], threshold=just_above)["tp"] == 0


def test_float16_and_float64_maps_are_not_narrowed():
    masks, maps = blob_maps(3)
    ref = M.pixel_metrics(masks, maps)
    half = [a.astype(np.float16) for a in maps]
    check_against_reference(masks, half)
    fine = [1000.0 + a.astype(np.float64) * 1e-6 for a in maps]  # differences far below float32's step
    check_against_reference(masks, fine)
    assert M.pixel_metrics(masks, fine)["auroc"] == pytest.approx(ref["auroc"], abs=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_maps_name_the_image(bad):
    masks, maps = blob_maps(0, n=3)
    maps[2][1, 1] = bad
    with pytest.raises(ValueError, match="image img-c"):
        M.pixel_metrics(masks, maps, image_ids=["img-a", "img-b", "img-c"])
    with pytest.raises(ValueError, match="#2"):
        M.best_iou_threshold(masks, maps)


def test_no_defect_pixels_and_no_normal_pixels():
    z = np.zeros((4, 4), np.uint8)
    out = M.pixel_metrics([z], [np.random.default_rng(0).random((4, 4))])
    assert np.isnan(out["auroc"]) and np.isnan(out["aupro"]) and out["threshold"] == np.inf
    assert out["fp"] == 0
    full = np.ones((4, 4), np.uint8)
    out = M.pixel_metrics([full], [np.arange(16.0).reshape(4, 4)])
    assert np.isnan(out["auroc"]) and out["aupr"] == 1.0 and out["iou"] == 1.0 and out["threshold"] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_image_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    s = rng.normal(y * 0.8, 1.0).round(1)  # rounding creates ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_aupro_hand_made_cases():
    m = np.zeros((10, 10), np.uint8)
    m[2:4, 2:4] = 1
    perfect = m.astype(float)
    assert M.PixelScores([m], [perfect]).aupro() == pytest.approx(1.0)
    inverted = 1.0 - perfect
    assert M.PixelScores([m], [inverted]).aupro() == 0.0
    with pytest.raises(ValueError, match="fpr_limit"):
        M.PixelScores([m], [perfect]).aupro(0)


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
    oracle = M.pixel_metrics([m], [a])  # tau* = argmax IoU: the score 1.0 itself
    assert oracle["iou"] == pytest.approx(3 / 5) and oracle["threshold"] == 1.0


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


def test_benjamini_hochberg_by_hand_and_against_scipy():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted 0.01, 0.03, 0.04, 0.2 -> x m/rank: 0.04, 0.06, 0.0533, 0.2 -> running min from the top
    assert M.benjamini_hochberg(p) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])
    q = np.random.default_rng(0).random(25) ** 3
    assert M.benjamini_hochberg(q) == pytest.approx(stats.false_discovery_control(q, method="bh"))
    out = M.benjamini_hochberg([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.02])


def test_paired_t_is_scipys_paired_test():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, 40)
    r = M.paired_t(base, base + 0.2)
    assert r["p"] == pytest.approx(stats.ttest_rel(base, base + 0.2).pvalue) and r["diff"] == pytest.approx(
        -0.2
    )
    assert r["t"] == pytest.approx(stats.ttest_rel(base, base + 0.2).statistic)


def test_paired_t_constant_difference_gets_the_tests_own_answer():
    x = np.array([0.1, 0.2, 0.3])
    row = M.paired_t(x + 0.25, x)  # no p = 0 by fiat: scipy's t-test decides
    assert row["p"] == stats.ttest_rel(x + 0.25, x).pvalue
    assert np.isnan(M.paired_t(x, x.copy())["p"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="mask shape"):
        M.pixel_metrics([np.zeros((3, 3))], [np.zeros((3, 4))])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="NaN"):
        M.PixelScores([np.ones((2, 2))], [np.ones((2, 2))]).counts_at(np.nan)
    assert M.mean_std([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
