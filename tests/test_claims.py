"""Claims table: the verdict rules, pooled count changes by hand, the cluster bootstrap, worlds whose
verdict is known, and the paper's own tables read as the paper prints them."""

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
    assert C.verdict_size(50.0, np.inf, -33.9) == C.CONTRADICTED  # a count rising from zero
    assert C.verdict_size(np.nan, np.nan, -33.9) == C.INCONCLUSIVE
    assert C.verdict_comparisons([0.1, 0.2], [True, True]) == C.REPRODUCED
    assert C.verdict_comparisons([0.1, 0.2], [True, False]) == C.INCONCLUSIVE
    assert C.verdict_comparisons([0.1, -0.2], [True, True]) == C.CONTRADICTED
    assert C.verdict_comparisons([], []) == C.INCONCLUSIVE
    assert C.verdict_direction(0.01, 0.2) == C.REPRODUCED
    assert C.verdict_direction(-0.2, -0.01) == C.CONTRADICTED
    assert C.verdict_direction(-0.01, 0.2) == C.INCONCLUSIVE


def test_count_change_rule_and_intervals_keep_every_resample():
    assert list(C.count_change([4, 0, 0, 2], [3, 0, 5, 2])) == [-25.0, 0.0, np.inf, 0.0]
    lo, hi, undefined = C.interval([1.0, 2.0, np.inf, np.nan])
    assert undefined == 0.25 and hi == np.inf and lo == 1.0  # NaN counted, +inf kept
    assert list(C.from_counts("precision", [2, 0], [2, 0], [1, 1])) == pytest.approx(
        [0.5, np.nan], nan_ok=True
    )
    assert C.from_counts("fp_share", 3, 1, 2) == pytest.approx(1 / 3)
    assert C.from_counts("iou", 3, 1, 2) == pytest.approx(0.5)
    assert C.from_counts("f1", 3, 1, 2) == pytest.approx(6 / 9)


def _manifest(n_norm=40, n_def=30, shared=True):
    """Two views; with ``shared`` an underbody appears in both views (as on the line)."""
    rows = []
    for v in VIEWS:
        for i in range(n_norm + n_def):
            rows.append(
                {
                    "image_id": f"{v}/{i:03d}",
                    "underbody_id": f"ub_{i}" if shared else f"ub_{v}_{i}",
                    "viewpoint": v,
                    "split": "test",
                    "label": "anomalous" if i >= n_norm else "normal",
                    "source": "real"
                    if i >= n_norm + n_def - 10
                    else ("synthetic" if i >= n_norm else "none"),
                    "defect_type": "missing" if i >= n_norm else "",
                    "area_ratio": 0.001 * (i - n_norm + 1) if i >= n_norm else 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_cluster_resamples_draw_an_underbody_in_every_view_at_once():
    man = _manifest(6, 4)
    man = man[~((man.viewpoint == "back") & (man.image_id.str.endswith("000")))]  # ub_0 only in front
    draws = ev.cluster_resamples(man, 200, seed=3)
    (ids_f, cf), (ids_b, cb) = draws["front"], draws["back"]
    ub = man.set_index("image_id").underbody_id
    front = pd.DataFrame(cf, columns=ub[ids_f].to_numpy())
    back = pd.DataFrame(cb, columns=ub[ids_b].to_numpy())
    common = [u for u in front.columns if u in back.columns]
    assert len(common) == 9 and (front[common].to_numpy() == back[common].to_numpy()).all()
    for v, (ids, c) in draws.items():  # every view keeps its numbers of normal and defective images
        y = (man.set_index("image_id").label[ids] == "anomalous").to_numpy()
        assert (c[:, y].sum(1) == y.sum()).all() and (c[:, ~y].sum(1) == (~y).sum()).all(), v
    assert (ev.underbody_resamples(man, "back", 200, 3)[1] == cb).all()


def _world(gains: dict, seed=0, seeds=(0,), pixel_fp=None):
    """Per-image rows, metrics and cluster replicates for model variants with a given separation."""
    man = _manifest()
    rng = np.random.default_rng(seed)
    draws = ev.cluster_resamples(man, 300, seed=11)
    rows, mrows, reps = [], [], []
    for (model, masked), gain in gains.items():
        for v, s_ in itertools.product(VIEWS, seeds):
            g = man[man.viewpoint == v].set_index("image_id").loc[draws[v][0]].reset_index()
            y = (g.label == "anomalous").to_numpy()
            view_gain = gain[VIEWS.index(v)] if isinstance(gain, tuple) else gain  # per view, or one
            s = rng.normal(size=len(g)) + view_gain * y
            t = M.best_f1_threshold(y, s)
            fp_px = np.where(y, 10, 5) * (pixel_fp or 1)
            g = g.assign(
                model=model,
                masked=masked,
                seed=s_,
                score=s,
                pred_oracle=s >= t,
                pred_val_calibrated=s >= t,
                tp_px=np.where(y, 20, 0),
                fp_px=fp_px,
                fn_px=np.where(y, 10, 0),
            )
            rows.append(g)
            real = (g.label == "normal") | (g.source == "real")
            for subset, sel in (("test", np.ones(len(g), bool)), ("test-real", real.to_numpy())):
                auc = B.image_auroc(y[sel], s[sel], draws[v][1][:, sel])
                for level in ("image", "pixel"):
                    mrows.append(
                        {
                            "model": model,
                            "masked": masked,
                            "viewpoint": v,
                            "seed": s_,
                            "subset": subset,
                            "level": level,
                            "policy": "oracle",
                            "label": ev.label_of(model, masked),
                            "auroc": M.roc_auc(y[sel], s[sel]),
                            "aupr": M.average_precision(y[sel], s[sel]),
                            "aupro": M.roc_auc(y[sel], s[sel]),
                            "median_ms": {"patchcore": 30.0, "efficientad_s": 5.0}.get(model, 10.0),
                        }
                    )
                for level, metric in B.BOOTSTRAP_METRICS:
                    reps.append(
                        {
                            "model": model,
                            "masked": masked,
                            "seed": s_,
                            "viewpoint": v,
                            "subset": subset,
                            "level": level,
                            "metric": metric,
                        }
                        | {f"b{i}": x for i, x in enumerate(auc)}
                    )
    images = pd.concat(rows, ignore_index=True)
    return man, images, pd.DataFrame(mrows), pd.DataFrame(reps)


def _claims(gains, **kw):
    man, images, metrics, reps = _world(gains, **kw)
    E = C.Evidence(metrics, images, reps, man, n_resamples=300, seed=11)
    return E, C.claims_table(E).set_index("id")


WORKING = {  # separation of defective from normal scores, in standard deviations
    ("patchcore", False): 1.2,
    ("patchcore", True): 4.0,
    ("memseg", False): 1.0,
    ("memseg", True): 1.1,
    ("simplenet", False): 0.9,
    ("simplenet", True): 1.0,
    ("efficientad_s", False): 0.8,
    ("efficientad_s", True): 0.9,
    ("efficientad_m", False): 0.8,
    ("efficientad_m", True): 1.0,
}


def test_known_worlds_get_their_verdicts():
    E, claims = _claims(WORKING)
    v = claims.verdict
    assert set(v) <= set(C.VERDICTS)
    assert v["T4-superiority"] == C.REPRODUCED  # PatchCore† far ahead of every variant
    assert v["T6-patchcore"] == C.CONTRADICTED  # PatchCore† (not raw PatchCore) leads pixel AUROC
    assert v["8.2-efficientad-m"] == C.CONTRADICTED  # PatchCore† leads image AUROC
    assert v["T5-patchcore"] == C.REPRODUCED  # a real masking gain on real defects
    assert v["T8-speed"] == C.NOT_DECIDABLE and "RTX 3090" in claims.reason["T8-speed"]
    # the same gain reversed contradicts the claim
    reversed_ = {**WORKING, ("patchcore", False): 4.0, ("patchcore", True): 1.2}
    _, c2 = _claims(reversed_)
    assert c2.verdict["T5-patchcore"] == C.CONTRADICTED
    assert c2.verdict["T4-masking"] == C.CONTRADICTED


def test_a_dry_run_decides_nothing():
    """The same decisive world, labelled a dry run (paper-dry: 2 iterations, random backbones): every
    verdict that would have been reproduced, contradicted or inconclusive becomes not decidable."""
    from lib.config import load_profile

    _, claims = _claims(WORKING)
    man, images, metrics, reps = _world(WORKING)
    E = C.Evidence(metrics, images, reps, man, profile=load_profile("paper-dry"), n_resamples=300, seed=11)
    dry = C.claims_table(E).set_index("id")
    decided = claims.verdict.isin([C.REPRODUCED, C.CONTRADICTED, C.INCONCLUSIVE])
    assert decided.sum() >= 5
    assert (dry.verdict[decided] == C.NOT_DECIDABLE).all()
    assert dry.reason[decided].str.contains("dry run").all()
    assert (dry.verdict[~decided] == claims.verdict[~decided]).all()


def test_a_model_at_chance_decides_nothing():
    at_chance = {**WORKING, ("patchcore", False): 0.0}
    E, claims = _claims(at_chance)
    assert E.chance("patchcore") and not E.chance("patchcore†")
    for cid in ("T5-patchcore", "T4-masking", "T4-superiority", "FN-overall", "errors-patchcore"):
        assert claims.verdict[cid] == C.NOT_DECIDABLE, cid
        assert "PatchCore 0." in claims.reason[cid] and "chance" in claims.reason[cid], cid
    # a claim that does not rest on raw PatchCore is still decided
    assert claims.verdict["8.2-efficientad-m"] == C.CONTRADICTED
    # blind in one view only: still at chance for claims made "in every view"
    E2, c2 = _claims({**WORKING, ("patchcore", False): (3.0, 0.0)})
    assert "PatchCore in back" in E2.chance("patchcore")
    assert c2.verdict["T4-superiority"] == C.NOT_DECIDABLE


def test_claims_of_models_not_run_say_so_and_one_model_runs_to_the_end():
    _, claims = _claims({("patchcore", False): 2.0, ("patchcore", True): 2.5})
    assert (
        claims.verdict["T4-equivalence"] == C.NOT_RUN and "EfficientAD-M" in claims.reason["T4-equivalence"]
    )
    assert claims.verdict["T6-memseg"] == C.NOT_RUN
    assert "PatchCore† first" in claims.ours["T6-patchcore"]  # raw PatchCore has PatchCore† as rival
    _, only_masked = _claims({("patchcore", True): 2.5})
    assert only_masked.verdict["T7-patchcore†"] == C.INCONCLUSIVE
    assert "no other model" in only_masked.ours["T7-patchcore†"]
    assert len(claims) == len(C.CLAIMS) and claims.paper_consistent.ne("").all()


def test_the_baseline_takes_no_part_in_the_claims():
    E, claims = _claims({**WORKING, ("baseline", False): 6.0, ("baseline", True): 6.0})
    assert "baseline" not in E.models and not claims.ours.str.contains("baseline").any()
    assert not E.delong.a.str.contains("baseline").any() and not (E.masking.scope == "model baseline").any()
    assert claims.verdict["T4-superiority"] == C.REPRODUCED


def test_masking_error_change_pools_counts_over_seeds():
    """The issue's two-seed toy: raw 1 and 3 FNs, masked 2 and 1. Pooled: 4 -> 3 = -25 %, not the mean
    of per-seed ratios (+16.7 %); the point lies inside its interval."""
    man = _manifest(4, 3, shared=False)
    front = man[man.viewpoint == "front"]
    rows = []
    for s_, masked, fn in ((0, False, {4}), (1, False, {4, 5, 6}), (0, True, {4, 5}), (1, True, {6})):
        g = front.copy()
        idx = np.arange(len(g))
        y = (g.label == "anomalous").to_numpy()
        pred = np.where(y, ~np.isin(idx, list(fn)), False)
        rows.append(
            g.assign(model="m", masked=masked, seed=s_, score=0.0, pred_oracle=pred, pred_val_calibrated=pred)
        )
    out = C.masking_error_change(pd.concat(rows), front, "oracle", 400)
    row = lambda scope, kind: out[(out.scope == scope) & (out.kind == kind)].iloc[0]  # noqa: E731
    fn = row("overall", "fn")
    assert (fn.raw, fn.masked, fn.change) == (4, 3, -25.0)
    assert fn.ci_low <= fn.change <= fn.ci_high
    assert row("overall", "fp").change == 0.0  # 0 -> 0 FPs: 0 %, by the stated rule
    assert row("model m", "errors").change == -25.0
    # area ratios 0.001, 0.002, 0.003 -> one defect per tertile: image 4 small, 5 medium, 6 large
    assert (row("size small", "fn").raw, row("size small", "fn").masked) == (2, 1)
    share = row("size small", "fn_share")
    assert (share.raw, share.masked) == (50.0, pytest.approx(100 / 3))


def test_pixel_fp_claims_read_pixel_counts():
    _, fp_heavy = _claims(WORKING, pixel_fp=3)
    assert "pixel FP share" in fp_heavy.ours["8.1-fp-pixel"]
    assert fp_heavy.verdict["8.1-fp-pixel"] == C.REPRODUCED  # FP 30/15 per image vs FN 10


def test_families_have_every_pair():
    _, images, *_ = _world({(m, k): 1.0 for m, k in itertools.product(("a", "b", "c"), (False, True))})
    from lib.evaluate import significance as S

    d = S.delong_families(images)
    assert len(d) == 2 * (3 + 3 + 3)  # per view: 3 raw pairs, 3 masked pairs, 3 masking pairs


# ----------------------------------------------------------------------------- the paper's own tables
@pytest.fixture(scope="module")
def paper():
    return C.read_paper_tables()


def test_paper_tables_hold_tables_4_to_8(paper):
    t = paper[paper.source.str.startswith("Table")]
    assert t.groupby("source").size().to_dict() == {
        "Table 4": 100,
        "Table 5": 50,
        "Table 6": 140,
        "Table 7": 70,
        "Table 8": 5,
    }
    assert C.paper_value(paper, "Table 4", "auroc", "patchcore†") == 95.6
    assert C.paper_value(paper, "Table 4", "auroc", "memseg", "val") == 95.3
    assert C.paper_value(paper, "Table 7", "aupr", "memseg†", "real") == 42.4
    assert C.paper_value(paper, "Table 6", "iou", "simplenet") == 0.0
    assert C.paper_value(paper, "Table 8", "seconds_per_image", "patchcore") == 3.33
    assert C.paper_value(paper, "§7.1", "fn_change_pct", scope="large") == -47.1


def test_paper_tables_name_the_bad_row(tmp_path, paper):
    bad = paper.astype(str).copy()
    bad.loc[3, "mean"] = "n/a"
    p = tmp_path / "paper.csv"
    bad.to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"paper.csv, row 5: mean 'n/a'"):
        C.read_paper_tables(p)


def test_claims_read_the_paper_as_it_is_written(paper):
    claims = {c.id: c for c in C.CLAIMS}
    # 7.2: the pixel AUROC/AUPRO lead belongs to raw PatchCore; AU-PR and recall to PatchCore†
    assert claims["T6-patchcore"].models == ("patchcore",)
    E, table = _claims({("patchcore", False): 2.0, ("patchcore", True): 2.5})
    assert "PatchCore† first" in table.ours["T6-patchcore"]  # PatchCore† leading is not raw PatchCore
    consistent = table.paper_consistent
    check = table.paper_check
    assert consistent["T4-masking"] == "no" and "MemSeg auroc 92.7 -> 90.1" in check["T4-masking"]
    assert consistent["8.2-efficientad-m"] == "no" and "PatchCore† 95.6" in check["8.2-efficientad-m"]
    assert consistent["T4-superiority"] == "doubtful" and "|t| > 1000" in check["T4-superiority"]
    assert consistent["7.3-pixel-masking"] == "no" and "99.7 -> 99.2" in check["7.3-pixel-masking"]
    assert consistent["FN-simplenet"] == "no" and "recall 90.9" in check["FN-simplenet"]
    assert consistent["FP-simplenet"] == "yes"  # its own number is consistent; only the FN sentence is not
    assert consistent["FN-small"] == "yes" and "43.9%" in check["FN-small"]
    assert consistent["T6-patchcore"] == "yes" and "tie at 99.7" in check["T6-patchcore"]
    assert consistent["T8-speed"] == "yes"
    sections = {c.section for c in C.CLAIMS}
    assert sections == {"7.1", "7.2", "7.3", "8.1", "8.2"}
    assert len({c.id for c in C.CLAIMS}) == len(C.CLAIMS)
