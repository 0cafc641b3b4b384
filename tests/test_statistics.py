"""Bootstrap intervals (exact per resample) and the paper's tests (DeLong, paired t over seeds, BH families)."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lib.evaluate import bootstrap as B
from lib.evaluate import metrics as M
from lib.evaluate import significance as S


def _maps(seed=0, n=7, shape=(24, 32), ties=True):
    """Maps with several regions, quantised scores (ties between defect and normal pixels)."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(n):
        a = rng.normal(size=shape).astype(np.float32)
        m = np.zeros(shape, np.uint8)
        if i % 3 != 0:  # every third image normal
            m[3:7, 4:9] = 1
            m[15:20, 20 + i % 3 : 26] = 255
            m[10, 10] = 1  # a one-pixel region
            a[m > 0] += 1.2
        if ties:
            a = np.round(a * 2) / 2
        maps.append(a)
        masks.append(m)
    return masks, maps


def _repeat(xs, w):
    return [x for x, k in zip(xs, w, strict=True) for _ in range(int(k))]


@pytest.mark.parametrize("ties", [True, False])
def test_pixel_bootstrap_equals_pixel_scores_on_the_repeated_images(ties):
    masks, maps = _maps(ties=ties)
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=(12, len(maps)))
    w[:, 1] = np.maximum(w[:, 1], 1)  # keep a defect image in every resample
    w[:, 0] = np.maximum(w[:, 0], 1)  # and a normal one
    w[3] = 1  # the identity resample
    got = B.PixelBootstrap(masks, maps).metrics(w, chunk=5)
    for b in range(len(w)):
        ref = M.PixelScores(_repeat(masks, w[b]), _repeat(maps, w[b]))
        assert got["auroc"][b] == pytest.approx(ref.auroc(), abs=1e-12)
        assert got["aupr"][b] == pytest.approx(ref.aupr(), abs=1e-12)
        assert got["aupro"][b] == pytest.approx(ref.aupro(0.3), abs=1e-12)


def test_image_bootstrap_equals_the_metric_on_the_repeated_images():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(9, bool), np.zeros(11, bool)]
    s = np.round(rng.normal(size=20) + y, 1)  # ties
    w = rng.integers(0, 3, size=(20, 20))
    w[:, 0] = w[:, -1] = 1
    auc, ap = B.image_auroc(y, s, w), B.image_aupr(y, s, w)
    for b in range(len(w)):
        yy, ss = np.repeat(y, w[b]), np.repeat(s, w[b])
        assert auc[b] == pytest.approx(M.roc_auc(yy, ss), abs=1e-12)
        assert ap[b] == pytest.approx(M.average_precision(yy, ss), abs=1e-12)


def test_resample_counts_keep_strata_and_underbodies_together():
    groups = np.array(["u1", "u1", "u2", "u3", "u4", "u5", "u6"])
    strata = np.array(["d", "d", "d", "n", "n", "n", "n"])
    w = B.resample_counts(groups, strata, 200, seed=3)
    assert w.shape == (200, 7)
    assert (w[:, 0] == w[:, 1]).all()  # two images of one underbody are drawn together
    assert (w[:, [0, 2]].sum(1) == 2).all()  # 2 defective underbodies drawn, 2 images each
    assert (w[:, 3:].sum(1) == 4).all()
    assert np.array_equal(w, B.resample_counts(groups, strata, 200, seed=3))
    assert not np.array_equal(w, B.resample_counts(groups, strata, 200, seed=4))
    with pytest.raises(ValueError, match="two strata"):
        B.resample_counts(["a", "a"], ["d", "n"], 5)


def test_percentile_interval_covers_the_truth_at_about_95_percent():
    """Image AUROC of a known population: the interval holds the true AUROC in ~95% of studies."""
    rng = np.random.default_rng(5)
    true_auc = stats_auc = 0.8
    d = np.sqrt(2) * __import__("scipy").stats.norm.ppf(stats_auc)
    hits = 0
    for k in range(120):
        y = np.r_[np.ones(30, bool), np.zeros(40, bool)]
        s = rng.normal(size=70) + d * y
        w = B.resample_counts(np.arange(70), y, 300, seed=k)
        lo, hi = B.percentile_interval(B.image_auroc(y, s, w))
        hits += lo <= true_auc <= hi
    assert 0.86 <= hits / 120 <= 0.99


def _delong_by_definition(y, a, b):
    """DeLong with the structural components from their O(mn) definition (the reference)."""
    y = np.asarray(y, bool)
    comps = []
    for s in (a, b):
        pos, neg = s[y], s[~y]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((psi.mean(1), psi.mean(0), psi.mean()))
    m, n = y.sum(), (~y).sum()
    s10 = np.cov(np.array([c[0] for c in comps]))
    s01 = np.cov(np.array([c[1] for c in comps]))
    cov = s10 / m + s01 / n
    z = (comps[0][2] - comps[1][2]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    from scipy import stats

    return comps[0][2], comps[1][2], z, 2 * stats.norm.sf(abs(z))


def test_delong_matches_its_definition_with_ties():
    rng = np.random.default_rng(6)
    y = np.r_[np.ones(12, bool), np.zeros(17, bool)]
    a = np.round(rng.normal(size=29) + y, 1)
    b = np.round(0.6 * a + rng.normal(size=29) * 0.8 + 0.5 * y, 1)
    got = S.delong_test(y, a, b)
    auc_a, auc_b, z, p = _delong_by_definition(y, a, b)
    assert got["auc_a"] == pytest.approx(M.roc_auc(y, a), abs=1e-12) == pytest.approx(auc_a)
    assert got["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert got["z"] == pytest.approx(z, rel=1e-10)
    assert got["p"] == pytest.approx(p, rel=1e-10)


def test_delong_is_calibrated_for_correlated_equal_models_and_has_power():
    """Two models of equal AUROC sharing most of their noise: p < 0.05 in about 5% of studies (a test
    that ignored the correlation would almost never reject); a real gap is found most of the time."""
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(30, bool), np.zeros(40, bool)]
    null, power = [], []
    for _ in range(300):
        common = rng.normal(size=70)
        a = common + 0.4 * rng.normal(size=70) + 1.0 * y
        b = common + 0.4 * rng.normal(size=70) + 1.0 * y
        c = common + 0.4 * rng.normal(size=70) + 0.3 * y
        null.append(S.delong_test(y, a, b)["p"])
        power.append(S.delong_test(y, a, c)["p"])
    assert 0.02 <= np.mean(np.array(null) < 0.05) <= 0.09
    assert np.mean(np.array(power) < 0.05) >= 0.8


def test_delong_identical_scores_and_bad_input():
    y = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    s = np.arange(10.0)
    r = S.delong_test(y, s, s)
    assert r["diff"] == 0 and r["p"] == 1.0  # the test's own answer: no difference, no evidence
    with pytest.raises(ValueError, match=">= 2 defective"):
        S.delong_test(np.r_[1, np.zeros(5)], np.arange(6.0), np.arange(6.0))


def _images(seeds=(0,), models=("patchcore", "simplenet", "memseg")):
    rng = np.random.default_rng(8)
    rows = []
    y = np.r_[np.ones(15, bool), np.zeros(20, bool)]
    for view, seed, model, masked in itertools.product(("front", "back"), seeds, models, (False, True)):
        gain = {"patchcore": 2.0, "simplenet": 1.0, "memseg": 0.9}[model] + (0.8 if masked else 0)
        s = rng.normal(size=35) + gain * y
        for i in range(35):
            rows.append(
                {
                    "viewpoint": view,
                    "seed": seed,
                    "model": model,
                    "masked": masked,
                    "image_id": f"{view}/{i}",
                    "label": "anomalous" if y[i] else "normal",
                    "score": s[i],
                }
            )
    return pd.DataFrame(rows)


def test_delong_families_pair_within_view_and_condition_and_correct_within_family():
    out = S.delong_families(_images())
    fams = out.groupby("family").size().to_dict()
    assert fams == {
        "models, front, raw": 3,
        "models, front, masked": 3,
        "models, back, raw": 3,
        "models, back, masked": 3,
        "masking, front": 3,
        "masking, back": 3,
    }
    for _, g in out.groupby(["family", "seed"]):
        assert np.allclose(g.p_bh, M.benjamini_hochberg(g.p))
    assert set(out[out.family == "masking, front"].a) == {"patchcore†", "simplenet†", "memseg†"}


def test_t_tests_need_three_seeds_and_pair_by_seed():
    images = _images(seeds=(0, 1, 2))
    rows = []
    for (view, seed, model, masked), g in images.groupby(["viewpoint", "seed", "model", "masked"]):
        y = g.label == "anomalous"
        rows.append(
            {
                "viewpoint": view,
                "seed": seed,
                "model": model,
                "masked": masked,
                "subset": "test",
                "level": "image",
                "policy": "oracle",
                "auroc": M.roc_auc(y, g.score),
                "aupr": M.average_precision(y, g.score),
            }
        )
    metrics = pd.DataFrame(rows)
    out = S.t_test_families(metrics)
    row = out[
        (out.family == "masking, front") & (out.a == "patchcore†") & (out.metric == "image auroc")
    ].iloc[0]
    w = metrics[(metrics.viewpoint == "front") & (metrics.model == "patchcore")].pivot(
        index="seed", columns="masked", values="auroc"
    )
    from scipy import stats

    assert row.p == pytest.approx(stats.ttest_rel(w[True], w[False]).pvalue)
    one = S.t_test_families(metrics[metrics.seed == 0])
    assert one.p.isna().all() and (one.note == "needs >= 3 seeds").all()
