"""Claims table: the verdict rules, section 7.1's masking percentages by hand, and verdicts that follow the data."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lib.evaluate import bootstrap as B
from lib.evaluate import claims as C
from lib.evaluate import evaluate as ev
from lib.evaluate import metrics as M

VIEWS = ("front", "back")


def test_verdict_rules():
    assert C.verdict_size(-45.0, -20.0, -33.9) == C.REPRODUCED
    assert C.verdict_size(-45.0, 5.0, -33.9) == C.INCONCLUSIVE  # holds the paper's value and zero
    assert C.verdict_size(-80.0, -50.0, -33.9) == C.CONTRADICTED  # excludes the paper's value
    assert C.verdict_size(10.0, 30.0, -33.9) == C.CONTRADICTED
    assert C.verdict_size(np.nan, np.nan, -33.9) == C.INCONCLUSIVE
    assert C.verdict_comparisons([0.1, 0.2], [True, True]) == C.REPRODUCED
    assert C.verdict_comparisons([0.1, 0.2], [True, False]) == C.INCONCLUSIVE
    assert C.verdict_comparisons([0.1, -0.2], [True, True]) == C.CONTRADICTED
    assert C.verdict_comparisons([], []) == C.INCONCLUSIVE


def _manifest(n_norm=40, n_def=30):
    rows = []
    for v in VIEWS:
        for i in range(n_norm + n_def):
            rows.append(
                {
                    "image_id": f"{v}/{i:03d}",
                    "underbody_id": f"ub_{v}_{i}",
                    "viewpoint": v,
                    "split": "test",
                    "label": "anomalous" if i >= n_norm else "normal",
                    "source": "real" if i >= n_norm + n_def - 5 else ("synthetic" if i >= n_norm else "none"),
                    "defect_type": "missing" if i >= n_norm else "",
                    "area_ratio": 0.001 * (i - n_norm + 1) if i >= n_norm else 0.0,
                }
            )
    return pd.DataFrame(rows)


def _world(gains: dict, seed=0):
    """Per-image scores for model variants with a given separation; thresholds at the oracle (best F1)."""
    man = _manifest()
    rng = np.random.default_rng(seed)
    rows, mrows = [], []
    for (model, masked), gain in gains.items():
        for v in VIEWS:
            g = man[man.viewpoint == v].copy()
            y = (g.label == "anomalous").to_numpy()
            s = rng.normal(size=len(g)) + gain * y
            t = M.best_f1_threshold(y, s)
            g = g.assign(
                model=model, masked=masked, seed=0, score=s, pred_oracle=s >= t, pred_val_calibrated=s >= t
            )
            rows.append(g)
            for level in ("image", "pixel"):
                mrows.append(
                    {
                        "model": model,
                        "masked": masked,
                        "viewpoint": v,
                        "seed": 0,
                        "subset": "test",
                        "level": level,
                        "policy": "oracle",
                        "label": ev.label_of(model, masked),
                        "random_backbone": False,
                        "auroc": M.roc_auc(y, s),
                        "aupr": M.average_precision(y, s),
                        "aupro": M.roc_auc(y, s),
                        "median_ms": {"patchcore": 30.0, "efficientad_s": 5.0}.get(model, 10.0),
                    }
                )
    images = pd.concat(rows, ignore_index=True)
    reps = []
    for (model, masked, v), g in images.groupby(["model", "masked", "viewpoint"]):
        ids, counts = ev.underbody_resamples(man, v, 300)
        g = g.set_index("image_id").loc[ids]
        y = (g.label == "anomalous").to_numpy()
        auc = B.image_auroc(y, g.score.to_numpy(), counts)
        for level, metric in B.BOOTSTRAP_METRICS:
            reps.append(
                {
                    "model": model,
                    "masked": masked,
                    "seed": 0,
                    "viewpoint": v,
                    "level": level,
                    "metric": metric,
                }
                | {f"b{i}": x for i, x in enumerate(auc)}
            )
    return man, images, pd.DataFrame(mrows), pd.DataFrame(reps)


def test_masking_error_change_by_hand():
    man = _manifest(4, 3)
    rows = []
    # raw: FN on 2 of 3 defects, FP on 2 of 4 normals; masked: FN on 1, FP on 1 (front only)
    fn_raw, fp_raw, fn_masked, fp_masked = {4, 5}, {0, 1}, {4}, {0}
    for masked, fn, fp in ((False, fn_raw, fp_raw), (True, fn_masked, fp_masked)):
        g = man[man.viewpoint == "front"].copy()
        idx = np.arange(len(g))
        y = (g.label == "anomalous").to_numpy()
        pred = np.where(y, ~np.isin(idx, list(fn)), np.isin(idx, list(fp)))
        rows.append(
            g.assign(model="m", masked=masked, seed=0, score=0.0, pred_oracle=pred, pred_val_calibrated=pred)
        )
    out = C.masking_error_change(pd.concat(rows), man[man.viewpoint == "front"], "oracle", 200)
    row = lambda scope, kind: out[(out.scope == scope) & (out.kind == kind)].iloc[0]  # noqa: E731
    assert row("overall", "fn").raw == 2 and row("overall", "fn").masked == 1
    assert row("overall", "fn").change_pct == pytest.approx(-50.0)
    assert row("overall", "fp").change_pct == pytest.approx(-50.0)
    assert row("overall", "errors").change_pct == pytest.approx(-50.0)
    assert row("model m", "fn").change_pct == pytest.approx(-50.0)
    # area ratios 0.001, 0.002, 0.003 -> one defect per tertile: image 4 small, 5 medium
    assert row("size small", "fn").raw == 1 and row("size small", "fn").masked == 1
    assert row("size medium", "fn").change_pct == pytest.approx(-100.0)
    assert np.isnan(row("size large", "fn").change_pct)  # no raw FN: no percentage
    lo, hi = row("overall", "fn")[["ci_low", "ci_high"]]
    assert lo <= -50.0 <= hi


def test_claims_follow_the_data():
    strong = {
        ("patchcore", False): 2.5,
        ("patchcore", True): 4.0,
        ("simplenet", False): 0.3,
        ("simplenet", True): 0.8,
        ("efficientad_m", False): 0.3,
        ("efficientad_m", True): 0.8,
        ("efficientad_s", False): 0.2,
        ("efficientad_s", True): 0.4,
    }
    man, images, metrics, reps = _world(strong)
    claims = C.claims_table(metrics, images, reps, man, 300).set_index("claim")
    verdict = claims.verdict.to_dict()
    pc = [k for k in verdict if k.startswith("PatchCore† beats")][0]
    assert verdict[pc] == C.REPRODUCED
    best_auc = [k for k in verdict if k.startswith("PatchCore has the highest pixel AUROC")][0]
    assert verdict[best_auc] == C.REPRODUCED
    assert verdict["EfficientAD-M has the highest image-level AUROC (8.1)"] == C.CONTRADICTED
    speed = [k for k in verdict if k.startswith("EfficientAD-S is the fastest")][0]
    assert verdict[speed] == C.REPRODUCED
    assert set(claims.verdict) <= {C.REPRODUCED, C.CONTRADICTED, C.INCONCLUSIVE}
    # masking that hurts one model significantly contradicts "masking improves every model"
    worse = dict(strong)
    worse[("patchcore", True)] = 0.0
    _, images2, metrics2, reps2 = _world(worse)
    c2 = C.claims_table(metrics2, images2, reps2, man, 300).set_index("claim").verdict
    masking = [k for k in c2.index if k.startswith("Masking (†) improves")][0]
    assert c2[masking] == C.CONTRADICTED


def test_families_have_every_pair():
    _, images, *_ = _world({(m, k): 1.0 for m, k in itertools.product(("a", "b", "c"), (False, True))})
    from lib.evaluate import significance as S

    d = S.delong_families(images)
    assert len(d) == 2 * (3 + 3 + 3)  # per view: 3 raw pairs, 3 masked pairs, 3 masking pairs


def test_the_baseline_takes_no_part_in_the_claims():
    gains = {
        ("patchcore", False): 2.0,
        ("patchcore", True): 2.5,
        ("simplenet", True): 0.5,
        ("simplenet", False): 0.2,
    }
    man, images, metrics, reps = _world({**gains, ("baseline", False): 6.0, ("baseline", True): 6.0})
    claims = C.claims_table(metrics, images, reps, man, 200)
    assert not claims.ours.str.contains("baseline").any()
    best = claims[claims.claim.str.startswith("PatchCore has the highest pixel AUROC")].verdict.iloc[0]
    assert best == C.REPRODUCED


def test_a_run_with_one_model_gets_a_claims_table():
    """`--models patchcore`: no runner-up for the ranking claims; they say so instead of crashing."""
    man, images, metrics, reps = _world({("patchcore", False): 2.0, ("patchcore", True): 2.5})
    claims = C.claims_table(metrics, images, reps, man, 200)
    best = claims[claims.claim.str.startswith("PatchCore has the highest pixel AUROC")].iloc[0]
    assert best.verdict == C.INCONCLUSIVE and "no other model" in best.ours
