"""The future-work studies: size-aware operating points, defect-type diagnosis, photometric shifts."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from lib.studies import diagnosis as D
from lib.studies import operating_points as OP
from lib.studies import photometric as P


# ---------------------------------------------------------------- size-aware operating points
def blob_map(shape=(40, 60), blobs=(), background=0.0):
    """A map with rectangular blobs (y0, y1, x0, x1, value), values at the blob; ties on purpose."""
    m = np.full(shape, background, np.float32)
    for y0, y1, x0, x1, v in blobs:
        m[y0:y1, x0:x1] = v
    return m


def random_maps(n, seed=0):
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(n):
        m = rng.integers(0, 6, (30, 40)).astype(np.float32) / 5  # few levels: ties everywhere
        m = np.where(rng.random((30, 40)) < 0.7, 0, m).astype(np.float32)
        maps.append(m)
    return maps


def test_regions_areas_and_peaks_by_hand():
    m = blob_map(blobs=[(0, 2, 0, 3, 0.5), (1, 2, 1, 2, 0.9), (10, 20, 10, 20, 0.6)])
    area, peaks, _ = OP.regions(m, 0.5)
    order = np.argsort(area)
    assert np.allclose(area[order], [6 / 2400, 100 / 2400])
    assert np.allclose(peaks[order], [0.9, 0.6])
    assert OP.regions(m, 0.95)[0].size == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_policy_that_ignores_area_is_the_single_threshold(seed):
    """Equal thresholds for every class: exactly max(map) >= t, for every t at or above the cut."""
    maps = random_maps(40, seed)
    seg, edges = 0.2, (0.002, 0.01)
    for t in (0.2, 0.4, 0.6, 0.8, 1.0, 1.01):
        policy = OP.SizePolicy(seg, edges, (t, t, t))
        assert [policy.decide(m) for m in maps] == [bool(m.max() >= t) for m in maps]


def test_fitting_with_one_area_class_gives_the_single_threshold():
    """Edges that put every region in one class: the fitted policy decides as the single threshold
    fitted at the same budget, on images it never saw."""
    rng = np.random.default_rng(3)
    peaks = np.full((60, 3), -np.inf)
    peaks[:, 0] = rng.random(60)
    y = np.arange(60) >= 35
    peaks[y, 0] += 0.3
    cls = np.where(y, rng.integers(0, 3, 60), -1)
    for budget in (0, 40, 80, 200):
        policy = OP.fit_policy(peaks, y, cls, budget, 0.0, (1.0, 1.0))
        single = OP.single_threshold(peaks, y, budget, 0.0)
        new = np.full((200, 3), -np.inf)
        new[:, 0] = rng.random(200) * 1.3
        assert list(policy.decide_peaks(new)) == list(new.max(axis=1) >= single)


def brute_force(peaks, y, cls, budget, seg):
    allowed = OP.allowed_false_alarms(budget, int((~y).sum()))
    cands = [sorted({p for p in peaks[:, k] if np.isfinite(p) and p >= seg} | {np.inf}) for k in range(3)]
    best = None
    for t in itertools.product(*cands):
        flag = (peaks >= np.array(t)).any(axis=1)
        fa = int(flag[~y].sum())
        if fa > allowed:
            continue
        key = tuple(int((flag & y & (cls == k)).sum()) for k in range(3))
        if best is None or key > best[0]:
            best = (key, t)
    return best[0]


@pytest.mark.parametrize("seed", range(6))
def test_the_policy_search_finds_the_best_triple(seed):
    """Against every triple of candidate thresholds: within the budget, the same small/medium/large
    detections as the brute-force optimum (a greedy or a coarse grid would fall short)."""
    rng = np.random.default_rng(seed)
    n = 14
    peaks = np.where(rng.random((n, 3)) < 0.6, np.round(rng.random((n, 3)), 1), -np.inf)
    y = rng.random(n) < 0.5
    cls = np.where(y, rng.integers(0, 3, n), -1)
    for budget in (0, 150, 300):
        pol = OP.fit_policy(peaks, y, cls, budget, 0.1, (0.1, 0.2))
        flag = pol.decide_peaks(peaks)
        assert int(flag[~y].sum()) <= OP.allowed_false_alarms(budget, int((~y).sum()))
        key = tuple(int((flag & y & (cls == k)).sum()) for k in range(3))
        assert key == brute_force(peaks, y, cls, budget, 0.1)


def test_the_policy_keeps_small_defects_a_single_threshold_loses():
    """By hand: small defects peak low, a large normal region peaks high. At a budget of no false
    alarm a single threshold must sit above 0.8 and loses the small defects; the policy raises only
    the large class's threshold."""
    inf = -np.inf
    peaks = np.array(
        [
            [0.3, inf, 0.8],  # normal: a big harmless region
            [0.2, inf, inf],  # normal
            [0.5, inf, inf],  # small defect
            [0.6, inf, inf],  # small defect
            [inf, inf, 0.9],  # large defect
        ]
    )
    y = np.array([0, 0, 1, 1, 1], bool)
    cls = np.array([-1, -1, 0, 0, 2])
    single = OP.single_threshold(peaks, y, 0, 0.1)
    assert single == 0.9
    pol = OP.fit_policy(peaks, y, cls, 0, 0.1, (0.01, 0.1))
    assert pol.thresholds[0] == 0.5 and pol.thresholds[2] == 0.9
    assert list(pol.decide_peaks(peaks)) == [False, False, True, True, True]


def test_policy_validation_and_budget_rounding():
    with pytest.raises(ValueError, match="below the segment threshold"):
        OP.SizePolicy(0.5, (0.1, 0.2), (0.4, 0.6, 0.7))
    with pytest.raises(ValueError, match="budget"):
        OP.allowed_false_alarms(-1, 20)
    assert OP.allowed_false_alarms(50, 20) == 1 and OP.allowed_false_alarms(49, 20) == 0
    pol = OP.SizePolicy(0.1, (0.01, 0.1), (0.2, np.inf, 0.3))
    assert OP.SizePolicy.from_json(pol.to_json()) == pol
    with pytest.raises(ValueError, match="not a size policy"):
        OP.SizePolicy.from_json({"edges": [1]})


def test_compare_of_equal_rules_has_zero_difference_and_counts_by_hand():
    dec = pd.DataFrame(
        {
            "model": "m",
            "masked": True,
            "seed": 0,
            "viewpoint": "front",
            "image_id": [f"i{k}" for k in range(6)],
            "label": ["normal"] * 3 + ["anomalous"] * 3,
            "size_class": ["", "", "", "small", "medium", "large"],
            "single": [True, False, False, False, True, True],
        }
    )
    dec["size_aware"] = dec.single
    t = OP.compare(dec, n_resamples=50).set_index("metric")
    assert t.loc["false_alarms_per_1000", "single"] == pytest.approx(1000 / 3)
    assert t.loc["fn_rate_small", "single"] == 1.0 and t.loc["fn_rate_large", "single"] == 0.0
    assert (t.difference == 0).all() and (t.difference_ci == "0 to 0").all()
    two = pd.concat([dec, dec.assign(seed=1)], ignore_index=True)  # an image resampled once for both seeds
    assert OP.compare(two, n_resamples=20).set_index("metric").loc["fn_rate_small", "single"] == 1.0


# ---------------------------------------------------------------- defect-type diagnosis
def clustered(n, seed, informative=True):
    rng = np.random.default_rng(seed)
    y = np.array([D.DEFECT_TYPES[i % 5] for i in range(n)])
    centres = rng.normal(0, 3, (5, 8))
    x = rng.normal(0, 1, (n, 8))
    if informative:
        x += centres[[D.DEFECT_TYPES.index(t) for t in y]]
    return x, y


def regions_frame(x_tr, y_tr, x_te, y_te):
    rows = [
        {"split": "val", "detected": True, "defect_type": t, "x": v} for v, t in zip(x_tr, y_tr, strict=True)
    ]
    rows += [
        {"split": "test", "detected": True, "defect_type": t, "x": v} for v, t in zip(x_te, y_te, strict=True)
    ]
    rows.append({"split": "test", "detected": False, "defect_type": "hole", "x": None})
    return pd.DataFrame(rows)


def test_the_classifier_learns_informative_features_and_shuffled_ones_fall_to_the_baseline():
    """Shuffling the training features against their labels leaves nothing to learn: over 30
    shuffles the mean test accuracy is the majority baseline's (one shuffle alone varies a lot:
    a classifier of clustered data maps whole clusters to one random type)."""
    x, y = clustered(600, 0)
    regions = regions_frame(x[:100], y[:100], x[100:], y[100:])
    res = D.train_and_test(regions)
    assert res["accuracy"] > 0.9 and res["undetected_test"] == 1
    assert res["majority"] == "missing" and res["baseline_accuracy"] == pytest.approx(0.2)
    shuffled = [D.train_and_test(regions, shuffle_seed=s)["accuracy"] for s in range(30)]
    assert abs(np.mean(shuffled) - res["baseline_accuracy"]) < 0.05
    assert max(shuffled) < res["accuracy"] - 0.3


@pytest.mark.parametrize("n_types", [2, 5])
def test_our_probabilities_equal_scikit_learn_s(n_types):
    from sklearn.linear_model import LogisticRegression

    x, y = clustered(200, 1)
    keep = np.isin(y, D.DEFECT_TYPES[:n_types])
    x, y = x[keep], y[keep]
    clf = D.TypeClassifier.fit(x, y)
    ref = LogisticRegression(C=D.C_REGULARISATION, max_iter=5000).fit((x - clf.mean) / clf.scale, y)
    assert np.allclose(clf.predict_proba(x), ref.predict_proba((x - clf.mean) / clf.scale), atol=1e-12)
    again = D.TypeClassifier.from_json(clf.to_json())
    assert np.array_equal(again.predict_proba(x), clf.predict_proba(x))


def test_wilson_and_the_confusion_matrix_by_hand():
    lo, hi = D.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert D.wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    res = D.evaluate_types(["hole", "hole", "missing"], ["hole", "missing", "missing"], "hole")
    assert res["confusion"].loc["hole", "missing"] == 1 and res["confusion"].loc["missing", "missing"] == 1
    pt = res["per_type"].set_index("type")
    assert pt.loc["hole", "recall"] == 0.5 and pt.loc["missing", "baseline_recall"] == 0.0
    assert res["accuracy"] == pytest.approx(2 / 3) and res["baseline_accuracy"] == pytest.approx(2 / 3)
    assert D.majority_type(["hole", "missing", "hole", "missing"]) == "missing"  # ties: DEFECT_TYPES order


def test_shape_features_read_the_seam_band():
    roi = np.zeros((80, 120), np.uint8)
    roi[30:50, :] = 255  # a horizontal seam band, half-width 10
    geo = D.SeamGeometry.from_roi(roi)
    grey = np.full((80, 120), 100, np.uint8)
    along = np.zeros((80, 120), bool)
    along[38:42, 20:80] = True  # long axis along the seam, on its centre line
    across = np.zeros((80, 120), bool)
    across[10:70, 58:62] = True  # across the seam, half of it outside
    f_along = dict(zip(D.SHAPE_FEATURES, D.shape_features(along, grey, geo), strict=True))
    f_across = dict(zip(D.SHAPE_FEATURES, D.shape_features(across, grey, geo), strict=True))
    assert f_along["seam_alignment"] > 0.95 and f_across["seam_alignment"] < 0.1
    assert f_along["inside_band"] == 1.0 and f_across["inside_band"] == pytest.approx(20 / 60)
    assert f_along["seam_distance"] > 0.7 and f_across["seam_distance"] < 0
    assert f_along["elongation"] > 10 and f_along["extent"] == 1.0
    ring = np.zeros((80, 120), bool)
    ring[35:45, 50:70] = True
    ring[38:42, 55:60] = False
    assert dict(zip(D.SHAPE_FEATURES, D.shape_features(ring, grey, geo), strict=True))["holes"] == 1


# ---------------------------------------------------------------- photometric shifts
def test_shifts_are_graded_deterministic_and_zero_is_the_identity():
    from lib.acquire.sealant_line import illumination_lut

    rng = np.random.default_rng(0)
    crop = rng.integers(20, 200, (60, 90, 3)).astype(np.uint8)
    assert P.apply_shift(crop, P.Shift(), "a") is crop
    assert np.array_equal(illumination_lut(1.0, 1.0, 0.0).ravel()[::3], np.arange(256))
    for kind, levels in P.DEFAULT_LEVELS.items():
        changes = [
            np.abs(P.apply_shift(crop, P.Shift(kind, lv), "a").astype(int) - crop).mean() for lv in levels
        ]
        assert changes[0] > 0 and all(a < b for a, b in zip(changes, changes[1:], strict=False)), kind
        assert np.array_equal(
            P.apply_shift(crop, P.Shift(kind, levels[0]), "a"),
            P.apply_shift(crop, P.Shift(kind, levels[0]), "a"),
        )
    assert not np.array_equal(
        P.apply_shift(crop, P.Shift("glare", 0.5), "a"), P.apply_shift(crop, P.Shift("glare", 0.5), "b")
    )
    with pytest.raises(ValueError, match="unknown shift kind"):
        P.Shift("fog", 0.1)
    with pytest.raises(ValueError, match="at most 1"):
        P.Shift("shadow", 1.5)


def test_the_budget_threshold_by_hand():
    normals = [0.1, 0.5, 0.5, 0.3, 0.9] * 4  # 20 normals: 50 per 1,000 allows one
    t = P.budget_threshold(normals, 50)
    assert t > 0.9 and sum(v >= t for v in normals) == 0  # four tied at 0.9: letting one in lets four
    assert P.budget_threshold([0.2] * 20 + [0.7], 50) == np.nextafter(0.2, 1)
    assert P.budget_threshold([0.1, 0.2], 1000) == -np.inf


def test_the_normalisation_cancels_a_global_gain_and_colour_tilt():
    rng = np.random.default_rng(1)
    crop = rng.integers(40, 160, (60, 90, 3)).astype(np.uint8)
    tilted = np.clip(crop * np.array([1.1, 1.0, 0.9]) * 1.2, 0, 255).round().astype(np.uint8)
    a, b = P.normalise_illumination(crop), P.normalise_illumination(tilted)
    assert np.abs(a.astype(int) - b).max() <= 2
    assert np.allclose(b.reshape(-1, 3).mean(axis=0), P.NORMALISED_MEAN, atol=0.5)
    assert np.allclose(b.reshape(-1, 3).std(axis=0), P.NORMALISED_STD, atol=0.5)


# ---------------------------------------------------------------- on the smoke line's trained cells
@pytest.fixture(scope="module")
def trained(built, smoke_profile, tmp_path_factory):
    """PatchCore and the baseline, raw and masked, center view, trained into their own store."""
    from lib.models import make_model
    from lib.models.train import run_cell
    from lib.store import Cell

    root, *_, manifest = built
    store = tmp_path_factory.mktemp("studies-store")
    cells = []
    for model in ("baseline", "patchcore"):
        for masked in (False, True):
            cell = Cell(model, "center", masked, 0)
            run_cell(make_model(model, smoke_profile), root, manifest, cell, store, False)
            cells.append(cell)
    return root, manifest, store, cells


def test_a_zero_shift_reproduces_the_run_s_scores_exactly(trained):
    root, manifest, store, cells = trained
    for cell in cells:
        rows = P.shift_cell(
            root, manifest, cell, [P.Shift(), P.Shift("lamp_intensity", 0.3)], store_root=store
        )
        zero = rows[rows.kind == "none"].iloc[0]
        assert np.array_equal(zero.scores, P.stored_test_scores(store, cell, manifest)), cell.key
        assert not np.array_equal(rows.iloc[1].scores, zero.scores), cell.key


def test_the_mitigation_trains_on_normalised_crops_and_reports_its_cost(trained, smoke_profile):
    root, manifest, store, cells = trained
    rows, cost = P.mitigated_cell(
        smoke_profile, root, manifest, cells[-1], [P.Shift(), P.Shift("colour_temperature", 0.1)]
    )
    assert list(rows.mitigation) == ["normalised"] * 2 and cost["fit_s"] > 0
    assert rows.auroc.between(0, 1).all() and np.isfinite(rows.false_alarms_per_1000).all()


def test_curves_of_a_variant_the_run_lacks_draw_nothing():
    """A masked-only (or raw-only, as the reduced dry run) run: no figure for the other variant."""
    peaks = pd.DataFrame(
        {
            "model": "m",
            "viewpoint": "front",
            "masked": True,
            "seed": 0,
            "split": "val",
            "label": ["normal", "anomalous", "anomalous", "anomalous"],
            "area_ratio": [np.nan, 0.01, 0.02, 0.03],
            "peak_small": [0.5, 0.7, -np.inf, -np.inf],
            "peak_medium": [-np.inf, -np.inf, 0.8, -np.inf],
            "peak_large": [-np.inf, -np.inf, -np.inf, 0.9],
            "segment_threshold": 0.4,
        }
    )
    curves = OP.fn_curves(peaks)
    assert OP.curves_figure(curves, masked=False) is None
    assert OP.curves_figure(curves, masked=True) is not None
    assert curves.false_alarms_per_1000.max() == 1000.0 and curves.fn_rate_large.min() == 0.0
