"""The catalogue: every checkable claim of sections 7.1-7.3 and 8.1-8.2, how our data decides it and
what the paper's own tables say of it; ``claims_table`` applies the rules of ``lib.evaluate.claims``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lib.evaluate import evaluate as ev
from lib.evaluate import significance as S
from lib.evaluate.claims.evidence import Evidence, interval
from lib.evaluate.claims.paper import (
    PAPER_NAMES,
    implied_fp_share,
    paper_label,
    paper_share,
    paper_value,
    read_paper_tables,
    variant_values,
)
from lib.evaluate.claims.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_DECIDABLE,
    NOT_RUN,
    REPRODUCED,
    Claim,
    change_row,
    ci,
    combine,
    decide_interval,
    diff,
    paper_ranking,
    rankings,
    verdict_comparisons,
    verdict_direction,
)

BALANCED = (1 / 3, 2 / 3)
#: "comparable" image AUROC: the interval of the difference within +-0.02
EQUIVALENCE_MARGIN = 0.02


def _masking_all_metrics(subset):
    def decide(E):
        up, down, n = [], [], 0
        rests = []
        per_metric = []
        for metric in ("auroc", "aupr", "precision", "recall", "f1"):
            ups = downs = tot = 0
            for m in E.models:
                d = diff(E, m + "†", m, "image", metric, subset)
                if d is None:
                    continue
                rests += [m, m + "†"]
                tot += 1
                lo, hi, _ = interval(d[1]) if d[1] is not None else (np.nan, np.nan, np.nan)
                ups += lo > 0
                downs += hi < 0
                (up if lo > 0 else down if hi < 0 else []).append(f"{paper_label(m)} {metric}")
            n += tot
            per_metric.append(f"{ev.METRIC_NAMES.get(metric, metric)} {ups}↑ {downs}↓ of {tot}")
        verdict = CONTRADICTED if down else (REPRODUCED if n and len(up) == n else INCONCLUSIVE)
        return {
            "ours": "masked minus raw, interval above / below zero: " + ", ".join(per_metric),
            "evidence": "lower with masking: " + (", ".join(down) if down else "none"),
            "verdict": verdict,
            "rests_on": sorted(set(rests)),
        }

    return decide


def _check_masking_all(source, subset="test"):
    def check(P):
        worse = []
        for metric in ("auroc", "aupr", "precision", "recall", "f1"):
            vals = variant_values(P, source, metric, subset)
            for m in PAPER_NAMES:
                if vals[m + "†"] <= vals[m]:
                    worse.append(f"{PAPER_NAMES[m]} {metric} {vals[m]:g} -> {vals[m + '†']:g}")
        return ("no", f"{source}: " + "; ".join(worse)) if worse else ("yes", f"{source}: all 25 higher")

    return check


def _superiority(E):
    pc = "patchcore†"
    pairs = [(pc, lb) for lb in E.labels if lb != pc]
    t = S.pair_tests(E.images, E.metrics, pairs)
    return {
        "ours": f"higher in {int((t['diff'] > 0).sum())} of {len(t)} (view, rival) pairs, "
        f"significantly in {int((t.significant & (t['diff'] > 0)).sum())}; "
        f"significantly lower in {int((t.significant & (t['diff'] < 0)).sum())}",
        "evidence": _p_range(t),
        "verdict": verdict_comparisons(t["diff"], t.significant),
        "rests_on": sorted({pc, *(b for _, b in pairs)}),
    }


def _p_range(t) -> str:
    if t.empty or t.p_bh.isna().all():
        return "no test"
    return f"p_BH {t.p_bh.min():.2g}-{t.p_bh.max():.2g} ({t.source.iloc[0]}, BH within each view)"


def _check_superiority(P):
    vals = variant_values(P, "Table 4", "auroc")
    top = vals.idxmax()
    t_needed = stats.t.isf(0.5e-6, df=2)  # two-sided p < 1e-6 with 3 seeds
    means = f"Table 4 AUROC: {paper_label(top)} {vals.max():g} first" if top == "patchcore†" else "no"
    return (
        "doubtful",
        f"{means}; but p_BH < 1e-6 from a paired t over 3 seeds needs |t| > {t_needed:.0f} (df 2) "
        "before correction: per-seed differences nearly constant, unlike Table 4's std 0.6-2.5",
    )


def _equivalence(E):
    a, b = "efficientad_m†", "simplenet†"
    t = S.pair_tests(E.images, E.metrics, [(a, b)])
    d = diff(E, a, b, "image", "auroc")
    lo, hi, und = interval(d[1]) if d and d[1] is not None else (np.nan, np.nan, np.nan)
    if t.significant.any():
        verdict = CONTRADICTED
    elif np.isfinite(lo) and -EQUIVALENCE_MARGIN <= lo and hi <= EQUIVALENCE_MARGIN:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return {
        "ours": f"view-averaged AUROC difference {d[0]:+.3f}" if d else "not computed",
        "evidence": f"{ci(lo, hi)} (equivalent when within ±{EQUIVALENCE_MARGIN}); {_p_range(t)}",
        "verdict": verdict,
        "rests_on": [a, b],
    }


def _check_equivalence(P):
    a, b = (paper_value(P, "Table 4", "auroc", x) for x in ("efficientad_m†", "simplenet†"))
    return "yes", f"Table 4 AUROC: EfficientAD-M† {a:g} vs SimpleNet† {b:g}"


def _check_no_counts(kind):
    def check(P):
        r = variant_values(P, "Table 4", "recall")
        raw = np.mean([100 - r[m] for m in PAPER_NAMES])
        msk = np.mean([100 - r[m + "†"] for m in PAPER_NAMES])
        note = f"Table 4's mean recall implies FN {100 * (msk - raw) / raw:+.1f}% (equal defect counts)"
        return "no check", "no counts published" + (f"; {note}" if kind == "fn" else "")

    return check


def _check_size(b):
    def check(P):
        fn_all = paper_value(P, "§7.1", "fn_change_pct", scope="overall")
        ch = paper_value(P, "§7.1", "fn_change_pct", scope=b)
        raw, msk = paper_share(P, "all", False, b), paper_share(P, "all", True, b)
        implied = raw * (1 + ch / 100) / (1 + fn_all / 100)
        ok = abs(implied - msk) <= 0.6
        return (
            "yes" if ok else "no",
            f"§7.1 shares: {raw:g}% × (1 {ch:+g}%) / (1 {fn_all:+g}%) = {implied:.1f}% (text: {msk:g}%)",
        )

    return check


def _check_model_errors(m, kind="errors"):
    def check(P):
        e, fp, fn = (
            paper_value(P, "§7.1", k, m, scope="model")
            for k in ("errors_change_pct", "fp_change_pct", "fn_change_pct")
        )
        lo, hi = min(fp, fn), max(fp, fn)
        ok = lo <= e <= hi
        text = f"errors {e:+g}% {'lies' if ok else 'does not lie'} between FN {fn:+g}% and FP {fp:+g}%"
        if kind == "fn" and fn == -100.0:  # no FN left after masking: the masked recall must be 100 %
            rec = paper_value(P, "Table 4", "recall", m + "†")
            if rec < 100.0:
                return "no", f"FN -100% means no FN, but Table 4 gives {paper_label(m + '†')} recall {rec:g}%"
        return ("yes" if ok else "no"), text

    return check


def _real_gain(E):
    d = diff(E, "patchcore†", "patchcore", "image", "auroc", "test-real")
    if d is None:
        return NO_DATA
    a = E.value("patchcore†", "image", "auroc", "test-real")[0]
    b = E.value("patchcore", "image", "auroc", "test-real")[0]
    return _direction(d, f"{a:.3f} vs {b:.3f} (real defects, view-averaged)", ["patchcore", "patchcore†"])


def _direction(d, ours: str, rests_on: list) -> dict:
    """A direction claim from a difference (point, replicates): its interval against zero decides."""
    lo, hi, und = interval(d[1]) if d[1] is not None else (np.nan, np.nan, np.nan)
    out = {
        "ours": ours,
        "evidence": f"difference {d[0]:+.3f}, {ci(lo, hi)}",
        "verdict": verdict_direction(lo, hi),
        "rests_on": rests_on,
    }
    reason = decide_interval(lo, hi, und, d[0])
    if reason:
        out.update(verdict=NOT_DECIDABLE, reason=reason)
    return out


def _check_real_gain(P):
    a, b = (
        paper_value(P, "Table 5", "auroc", "patchcore†", "real"),
        paper_value(P, "Table 5", "auroc", "patchcore", "real"),
    )
    return ("yes" if (a, b) == (97.1, 86.6) else "no"), f"Table 5: {a:g} vs {b:g} (text: 97.1 vs 86.6)"


def _perfect_recall(E):
    parts, verdicts = [], []
    for lb in ("efficientad_m†", "simplenet†"):
        v = E.value(lb, "image", "recall", "test-real")
        if v is None:
            return NO_DATA
        lo, hi, und = interval(v[1]) if v[1] is not None else (np.nan, np.nan, np.nan)
        parts.append(f"{paper_label(lb)} {v[0]:.3f} {ci(lo, hi)}")
        verdicts.append(REPRODUCED if v[0] == 1.0 else (CONTRADICTED if hi < 1.0 else INCONCLUSIVE))
    return {
        "ours": "real-defect recall at the test operating point: " + "; ".join(parts),
        "evidence": "reproduced when every real defect is found; contradicted when the interval stays below 1",
        "verdict": combine(verdicts),
        "rests_on": ["efficientad_m†", "simplenet†"],
    }


def _check_perfect_recall(P):
    r = [paper_value(P, "Table 5", "recall", lb, "real") for lb in ("efficientad_m†", "simplenet†")]
    return ("yes" if r == [100.0, 100.0] else "no"), f"Table 5 recall: {r[0]:g}, {r[1]:g}"


def _fp_dominated(E):
    fp_dom, fn_dom, parts = 0, 0, []
    for lb in E.labels:
        v = E.value(lb, "pixel", "fp_share")
        if v is None:
            continue
        lo, hi, _ = interval(v[1]) if v[1] is not None else (np.nan, np.nan, np.nan)
        fp_dom += lo > 0.5
        fn_dom += hi < 0.5
        parts.append(f"{paper_label(lb)} {v[0]:.2f}")
    n = len(parts)
    verdict = REPRODUCED if fp_dom > n / 2 else (CONTRADICTED if fn_dom >= n / 2 else INCONCLUSIVE)
    return {
        "ours": f"pixel FP share (oracle τ*): {', '.join(parts)}",
        "evidence": f"{fp_dom} of {n} variants above 0.5 with their interval, {fn_dom} below",
        "verdict": verdict,
        "rests_on": list(E.labels),
    }


def _check_fp_dominated(P):
    prec, rec = variant_values(P, "Table 6", "precision") / 100, variant_values(P, "Table 6", "recall") / 100
    n = int((prec < rec).sum())
    return (
        "yes" if n > len(prec) / 2 else "no"
    ), f"Table 6: precision < recall (FP > FN) for {n} of {len(prec)}"


def _check_lightest_fp(P):
    share = implied_fp_share(
        variant_values(P, "Table 6", "precision") / 100, variant_values(P, "Table 6", "recall") / 100
    )
    best = share.idxmin()
    return (
        "yes" if best.startswith("memseg") else "no",
        f"FP share implied by Table 6's precision and recall: lowest {paper_label(best)} {share.min():.2f}",
    )


def _image_balance(label, lean):
    def decide(E):
        labels = [label] if isinstance(label, str) else [lb for lb in E.labels if lb.rstrip("†") in label]
        parts, verdicts, reasons = [], [], []
        for lb in labels:
            v = E.value(lb, "image", "fp_share")
            if v is None:
                continue
            lo, hi, und = interval(v[1]) if v[1] is not None else (np.nan, np.nan, np.nan)
            parts.append(f"{paper_label(lb)} {v[0]:.2f} {ci(lo, hi)}")
            reason = decide_interval(lo, hi, und, v[0])
            if reason:
                reasons.append(f"{paper_label(lb)}: {reason}")
            elif lean == "balanced":
                inside = BALANCED[0] <= lo and hi <= BALANCED[1]
                outside = hi < BALANCED[0] or lo > BALANCED[1]
                verdicts.append(REPRODUCED if inside else (CONTRADICTED if outside else INCONCLUSIVE))
            else:
                more_fp, more_fn = lo > 0.5, hi < 0.5
                yes, no = (more_fp, more_fn) if lean == "fp" else (more_fn, more_fp)
                verdicts.append(REPRODUCED if yes else (CONTRADICTED if no else INCONCLUSIVE))
        out = {
            "ours": "image FP share (oracle threshold): " + "; ".join(parts),
            "evidence": "balanced: interval within [1/3, 2/3]"
            if lean == "balanced"
            else "interval against 0.5",
            "verdict": combine(verdicts),
            "rests_on": labels,
        }
        if reasons:
            out.update(verdict=NOT_DECIDABLE, reason="; ".join(reasons))
        return out

    return decide


def _check_balance(labels, lean):
    def check(P):
        share = implied_fp_share(
            variant_values(P, "Table 4", "precision") / 100, variant_values(P, "Table 4", "recall") / 100
        )
        sel = share[[lb for lb in share.index if lb in labels or lb.rstrip("†") in labels]]
        if lean == "balanced":
            ok = sel.between(*BALANCED).all()
        else:
            ok = (sel > 0.5).all() if lean == "fp" else (sel < 0.5).all()
        text = ", ".join(f"{paper_label(k)} {v:.2f}" for k, v in sel.items())
        return ("yes" if ok else "no"), f"FP share implied by Table 4's precision and recall: {text}"

    return check


NO_DATA = {
    "ours": "not computed (no per-image counts)",
    "evidence": "",
    "verdict": INCONCLUSIVE,
    "rests_on": [],
}


def _memseg_iou(E):
    d = diff(E, "memseg", "efficientad_m", "pixel", "iou")
    if d is None:
        return NO_DATA
    return _direction(d, f"pixel IoU MemSeg minus EfficientAD-M {d[0]:+.3f}", ["memseg", "efficientad_m"])


def _check_memseg_iou(P):
    a, b = paper_value(P, "Table 6", "iou", "memseg"), paper_value(P, "Table 6", "iou", "efficientad_m")
    return ("yes" if a > b else "no"), f"Table 6 IoU: MemSeg {a:g} vs EfficientAD-M {b:g} (not 'slightly')"


def _pixel_masking_gain(E):
    parts, verdicts, reasons = [], [], []
    for m in ("patchcore", "memseg"):
        d = diff(E, m + "†", m, "pixel", "auroc")
        if d is None:
            return NO_DATA
        lo, hi, und = interval(d[1]) if d[1] is not None else (np.nan, np.nan, np.nan)
        parts.append(f"{PAPER_NAMES[m]} {d[0]:+.3f} {ci(lo, hi)}")
        verdicts.append(verdict_direction(lo, hi))
        if r := decide_interval(lo, hi, und, d[0]):
            reasons.append(r)
    out = {
        "ours": "pixel AUROC masked minus raw: " + "; ".join(parts),
        "evidence": "interval of the difference against zero",
        "verdict": combine(verdicts),
        "rests_on": ["patchcore", "patchcore†", "memseg", "memseg†"],
    }
    if reasons:
        out.update(verdict=NOT_DECIDABLE, reason="; ".join(reasons))
    return out


def _check_pixel_masking_gain(P):
    t6 = [paper_value(P, "Table 6", "auroc", lb) for lb in ("patchcore", "patchcore†", "memseg", "memseg†")]
    t7 = [
        paper_value(P, "Table 7", "auroc", lb, "real")
        for lb in ("patchcore", "patchcore†", "memseg", "memseg†")
    ]
    return (
        "no",
        f"Table 6: PatchCore {t6[0]:g} -> {t6[1]:g}, MemSeg {t6[2]:g} -> {t6[3]:g} (both lower); "
        f"Table 7 (real): {t7[0]:g} -> {t7[1]:g}, {t7[2]:g} -> {t7[3]:g}",
    )


SPEED_ORDER = ("efficientad_s", "efficientad_m", "memseg", "simplenet", "patchcore")


def _speed(E):
    t = E.metrics[
        (E.metrics.subset == "test") & (E.metrics.level == "image") & (E.metrics.policy == "oracle")
    ]
    speed = t.groupby("model").median_ms.median().sort_values()
    ours = ", ".join(f"{PAPER_NAMES.get(k, k)} {v:.1f} ms" for k, v in speed.items())
    from lib.models import budget_line

    sizes = [m for m in speed.index if "Table 3" in budget_line(m, E.profile)]
    machine = E.machine or "this machine"
    reason = (
        f"timed on {machine}"
        + (
            f" at this profile's input sizes ({', '.join(PAPER_NAMES.get(m, m) for m in sizes)} not Table 3's)"
            if sizes
            else ""
        )
        + "; Table 8 is an RTX 3090 at Table 3's sizes"
    )
    order_ok = [m for m in SPEED_ORDER if m in speed.index] == list(speed.index)
    decidable = "3090" in machine and not sizes
    return {
        "ours": f"{ours} (median per image, batch 1 in the grid)",
        "evidence": f"order {'as' if order_ok else 'unlike'} the paper's",
        "verdict": (REPRODUCED if order_ok else CONTRADICTED) if decidable else NOT_DECIDABLE,
        "reason": "" if decidable else reason,
        "rests_on": [],
    }


def _check_speed(P):
    t8 = P[P.source == "Table 8"].set_index("model")["mean"].sort_values()
    ok = tuple(t8.index) == SPEED_ORDER
    return ("yes" if ok else "no"), "Table 8: " + ", ".join(
        f"{PAPER_NAMES[k]} {v:g} s" for k, v in t8.items()
    )


def _ranking_claim(
    cid, section, sentence, paper, source, level, metrics, winners, subset="test", lower=False, check=None
):
    models = tuple(sorted({w.rstrip("†") for w in winners}))
    return Claim(
        cid,
        section,
        sentence,
        paper,
        models,
        lambda E: rankings(E, level, metrics, winners, subset, lower),
        check
        or (
            lambda P: paper_ranking(
                P, source, metrics, winners, "real" if subset == "test-real" else subset, lower
            )
        ),
    )


def _size_claim(cid, sentence, scope, kind, paper_num, check, models=()):
    return Claim(
        cid,
        "7.1",
        sentence,
        f"{paper_num:+.1f}" + ("%" if kind != "fn_share" else " points"),
        models,
        lambda E: change_row(E, scope, kind, paper_num),
        check,
    )


CLAIMS = (
    Claim(
        "T4-masking",
        "7.1",
        "Masking (†) boosts performance: every masked variant outperforms its raw counterpart across all five image metrics",
        "Table 4: † above raw for every model and metric",
        (),
        _masking_all_metrics("test"),
        _check_masking_all("Table 4"),
    ),
    Claim(
        "T4-superiority",
        "7.1",
        "Paired t-tests with BH confirm the superiority of PatchCore† over all other models in every section and masking condition",
        "p_BH < 1e-6",
        ("patchcore",),
        _superiority,
        _check_superiority,
    ),
    _ranking_claim(
        "T4-recall",
        "7.1",
        "EfficientAD-S† attains the highest image recall",
        "96.3 ± 3.8",
        "Table 4",
        "image",
        ("recall",),
        ("efficientad_s†",),
    ),
    Claim(
        "T4-equivalence",
        "7.1",
        "The gap between EfficientAD-M† and SimpleNet† is not significant after correction",
        "p_BH > 0.05",
        ("efficientad_m", "simplenet"),
        _equivalence,
        _check_equivalence,
    ),
    _size_claim(
        "FN-overall",
        "Globally, masking reduces false negatives by -33.9%",
        "overall",
        "fn",
        -33.9,
        _check_no_counts("fn"),
    ),
    _size_claim(
        "FP-overall",
        "Globally, masking reduces false positives by -34.6%",
        "overall",
        "fp",
        -34.6,
        _check_no_counts("fp"),
    ),
    *(
        _size_claim(
            f"FN-{b}",
            f"By size class, masking changes FNs on {b} defects by {v:+.1f}%",
            f"size {b}",
            "fn",
            v,
            _check_size(b),
        )
        for b, v in (("large", -47.1), ("medium", -33.3), ("small", -25.0))
    ),
    _size_claim(
        "FN-share-small",
        "Small defects become relatively more prevalent among FNs (38.7% -> 43.9%)",
        "size small",
        "fn_share",
        43.9 - 38.7,
        _check_size("small"),
    ),
    _size_claim(
        "FN-share-large",
        "The share of FNs on large defects drops from 27.4% to 22.0%",
        "size large",
        "fn_share",
        22.0 - 27.4,
        _check_size("large"),
    ),
    *(
        _size_claim(
            f"errors-{m}",
            f"{PAPER_NAMES[m]}† changes total errors by {v:+.1f}%",
            f"model {m}",
            "errors",
            v,
            _check_model_errors(m),
            (m,),
        )
        for m, v in (
            ("efficientad_m", -78.1),
            ("efficientad_s", -76.3),
            ("patchcore", -34.8),
            ("memseg", -22.7),
        )
    ),
    _size_claim(
        "FN-simplenet",
        "SimpleNet† reduces FN to zero (-100.0%)",
        "model simplenet",
        "fn",
        -100.0,
        _check_model_errors("simplenet", "fn"),
        ("simplenet",),
    ),
    _size_claim(
        "FP-simplenet",
        "SimpleNet† increases FP (+24.1%)",
        "model simplenet",
        "fp",
        24.1,
        _check_model_errors("simplenet"),
        ("simplenet",),
    ),
    Claim(
        "T5-masking",
        "7.1",
        "On real defective samples, masking consistently improves image-level performance across methods",
        "Table 5: † above raw",
        (),
        _masking_all_metrics("test-real"),
        _check_masking_all("Table 5", "real"),
    ),
    Claim(
        "T5-patchcore",
        "7.1",
        "PatchCore† shows a marked gain over PatchCore on real defects",
        "AUROC 97.1 vs 86.6",
        ("patchcore",),
        _real_gain,
        _check_real_gain,
    ),
    _ranking_claim(
        "T5-simplenet",
        "7.1",
        "SimpleNet† achieves the highest AUROC and F1 on real defects",
        "99.5, 97.4",
        "Table 5",
        "image",
        ("auroc", "f1"),
        ("simplenet†",),
        "test-real",
    ),
    Claim(
        "T5-recall",
        "7.1",
        "EfficientAD-M† and SimpleNet† reach perfect recall on real defects",
        "100.0 ± 0.0",
        ("efficientad_m", "simplenet"),
        _perfect_recall,
        _check_perfect_recall,
    ),
    _ranking_claim(
        "T6-patchcore",
        "7.2",
        "PatchCore (raw) achieves the highest pixel AUROC and AUPRO",
        "99.7, 98.6",
        "Table 6",
        "pixel",
        ("auroc", "aupro"),
        ("patchcore",),
    ),
    _ranking_claim(
        "T6-patchcore†",
        "7.2",
        "PatchCore† attains the best pixel AU-PR and the highest pixel recall",
        "34.2, 58.6",
        "Table 6",
        "pixel",
        ("aupr", "recall"),
        ("patchcore†",),
    ),
    _ranking_claim(
        "T6-memseg",
        "7.2",
        "MemSeg yields the top pixel IoU, precision and F1",
        "27.8, 40.5, 43.4",
        "Table 6",
        "pixel",
        ("iou", "precision", "f1"),
        ("memseg",),
    ),
    _ranking_claim(
        "T7-patchcore†",
        "7.2",
        "On real defects PatchCore† achieves the highest pixel AUROC and AUPRO",
        "99.9, 99.4",
        "Table 7",
        "pixel",
        ("auroc", "aupro"),
        ("patchcore†",),
        "test-real",
    ),
    _ranking_claim(
        "T7-memseg†",
        "7.2",
        "On real defects MemSeg† reaches the top pixel AU-PR, IoU, precision and F1",
        "42.4, 31.3, 42.2, 47.6",
        "Table 7",
        "pixel",
        ("aupr", "iou", "precision", "f1"),
        ("memseg†",),
        "test-real",
    ),
    _ranking_claim(
        "T7-recall",
        "7.2",
        "On real defects EfficientAD-S† attains the highest pixel recall",
        "56.3 ± 11.8",
        "Table 7",
        "pixel",
        ("recall",),
        ("efficientad_s†",),
        "test-real",
    ),
    Claim(
        "T8-speed",
        "7.3",
        "EfficientAD-S is fastest, then EfficientAD-M, MemSeg, SimpleNet; PatchCore is slowest",
        "0.09, 0.10, 0.17, 0.26, 3.33 s",
        SPEED_ORDER,
        _speed,
        _check_speed,
        needs_all=False,
    ),
    Claim(
        "7.3-pixel-masking",
        "7.3",
        "Mask filtering raises the pixel AUROC of PatchCore and MemSeg",
        "+1.4%, +0.5%",
        ("patchcore", "memseg"),
        _pixel_masking_gain,
        _check_pixel_masking_gain,
    ),
    Claim(
        "8.1-fp-pixel",
        "8.1",
        "Most methods are FP-dominated at the pixel level",
        "most FP share > 0.5",
        (),
        _fp_dominated,
        _check_fp_dominated,
    ),
    _ranking_claim(
        "8.1-memseg-fp",
        "8.1",
        "MemSeg shows the lightest pixel FP load",
        "MemSeg",
        "Table 6",
        "pixel",
        ("fp_share",),
        ("memseg", "memseg†"),
        lower=True,
        check=_check_lightest_fp,
    ),
    Claim(
        "8.1-patchcore-balance",
        "8.1",
        "At image level PatchCore† is nearly balanced between FP and FN",
        "FP share ≈ 0.5",
        ("patchcore",),
        _image_balance("patchcore†", "balanced"),
        _check_balance(("patchcore†",), "balanced"),
    ),
    Claim(
        "8.1-efficientad-fp",
        "8.1",
        "At image level EfficientAD is more aggressive (more FP than FN)",
        "FP share > 0.5",
        ("efficientad_s", "efficientad_m"),
        _image_balance(("efficientad_s", "efficientad_m"), "fp"),
        _check_balance(("efficientad_s", "efficientad_m"), "fp"),
        needs_all=False,
    ),
    Claim(
        "8.1-simplenet-fn",
        "8.1",
        "At image level SimpleNet† is more conservative (more FN than FP)",
        "FP share < 0.5",
        ("simplenet",),
        _image_balance("simplenet†", "fn"),
        _check_balance(("simplenet†",), "fn"),
    ),
    _ranking_claim(
        "8.2-efficientad-m",
        "8.2",
        "EfficientAD-M achieves the highest image-level AUROC and AU-PR",
        "EfficientAD-M",
        "Table 4",
        "image",
        ("auroc", "aupr"),
        ("efficientad_m", "efficientad_m†"),
    ),
    Claim(
        "8.2-memseg-iou",
        "8.2",
        "EfficientAD-M slightly compromises on pixel IoU compared to MemSeg",
        "MemSeg IoU > EfficientAD-M",
        ("memseg", "efficientad_m"),
        _memseg_iou,
        _check_memseg_iou,
    ),
)

COLUMNS = [
    "id",
    "section",
    "claim",
    "paper",
    "ours",
    "evidence",
    "verdict",
    "reason",
    "models",
    "paper_consistent",
    "paper_check",
]


def claims_table(evidence: Evidence, paper_tables: pd.DataFrame | None = None, claims=CLAIMS) -> pd.DataFrame:
    """One row per claim (``COLUMNS``), verdicts by the rules of this module's docstring."""
    from lib.models import budget_line

    E = evidence
    P = read_paper_tables() if paper_tables is None else paper_tables
    rows = []
    for c in claims:
        run = [m for m in c.models if m in E.models]
        absent = [m for m in c.models if m not in E.models]
        if (absent and c.needs_all) or (c.models and not run) or not E.labels:
            out = {
                "ours": "—",
                "evidence": "—",
                "verdict": NOT_RUN,
                "reason": f"{', '.join(PAPER_NAMES.get(m, m) for m in absent or c.models)} not in this run",
                "rests_on": [],
            }
        else:
            out = {"reason": "", **c.decide(E)}
            if out["verdict"] in (REPRODUCED, CONTRADICTED, INCONCLUSIVE):
                at_chance = [r for r in (E.chance(lb) for lb in out["rests_on"]) if r]
                if at_chance:
                    out.update(
                        verdict=NOT_DECIDABLE,
                        reason="rests on variants at chance (image-AUROC interval holds 0.5): "
                        + "; ".join(at_chance),
                    )
                elif not E.n_resamples:
                    out.update(verdict=NOT_DECIDABLE, reason="no bootstrap intervals (n_resamples = 0)")
                elif getattr(E.profile, "dry_run", False):
                    out.update(
                        verdict=NOT_DECIDABLE,
                        reason="a dry run (2 training iterations, random backbones): shapes, not results",
                    )
        consistent, check = c.check(P)
        named = sorted({lb.rstrip("†") for lb in out["rests_on"]} | set(run), key=list(PAPER_NAMES).index)
        budget = (
            "; ".join(f"{PAPER_NAMES[m]} {budget_line(m, E.profile)}" for m in named) if E.profile else ""
        )
        rows.append(
            {
                "id": c.id,
                "section": c.section,
                "claim": c.sentence,
                "paper": c.paper,
                "ours": out["ours"],
                "evidence": out["evidence"],
                "verdict": out["verdict"],
                "reason": out.get("reason", ""),
                "models": budget,
                "paper_consistent": consistent,
                "paper_check": check,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def findings(evidence: Evidence, claims: pd.DataFrame) -> list[str]:
    """The summary a reader needs first: what the claims table says, and the caveats that matter most
    for this run (models at chance, training budgets, seeds), each one sentence, from the data."""
    E = evidence
    counts = ", ".join(f"{n} {k}" for k, n in claims.verdict.value_counts().items())
    lines = [f"Of the paper's {len(claims)} checkable claims, this run finds: {counts}."]
    decided = claims[claims.verdict.isin([REPRODUCED, CONTRADICTED])]
    if len(decided):
        lines.append(
            "Decided here: "
            + "; ".join(f"{r.claim} ({r.section}): {r.verdict}" for r in decided.itertuples())
            + "."
        )
    own = claims[claims.paper_consistent.isin(["no", "doubtful"])]
    if len(own):
        lines.append(
            f"The paper's own tables do not support {len(own)} of its sentences ("
            + ", ".join(own.id)
            + "): see the paper_check column."
        )
    chance = [paper_label(lb) for lb in E.labels if E.chance(lb)]
    if chance:
        lines.append(
            f"Caveat 1: {len(chance)} of {len(E.labels)} variants are at chance at image level (their image-AUROC "
            f"95% interval holds 0.5 on average or in a viewpoint): {', '.join(chance)}. No verdict rests on them."
        )
    lines.append(
        "Caveat 2: models run at this profile's input sizes and training budgets, far below Table 3's "
        "(see 'How this run differs from the paper'); a verdict says what this simulated line shows."
    )
    seeds = E.n_seeds
    lines.append(
        f"Caveat 3: {seeds} training seed{'s' if seeds != 1 else ''} (the paper: 3). Intervals resample test "
        "underbodies"
        + (
            "; the paper's paired t-tests over seeds need 3 and are replaced by DeLong's test on one seed."
            if seeds < 3
            else "; model comparisons use the paper's paired t-test over seeds."
        )
    )
    return lines
