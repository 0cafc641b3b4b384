"""Verdict rules and the shapes of claims (comparison, size, ranking, direction), shared by every claim."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from lib.evaluate import evaluate as ev
from lib.evaluate.claims.evidence import interval
from lib.evaluate.claims.paper import paper_label, variant_values

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
NOT_DECIDABLE, NOT_RUN = "not decidable here", "not run in this profile"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_DECIDABLE, NOT_RUN)
#: more undefined resamples than this (a zero denominator) and a number decides nothing
UNDEFINED_LIMIT = 0.05
#: "nearly balanced": FP share within [1/3, 2/3], neither error type twice the other


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checkable sentence of the paper."""

    id: str
    section: str
    sentence: str  # the paper's claim, in short
    paper: str  # the paper's number(s)
    models: tuple  # models the claim names (a model not run: "not run in this profile")
    decide: Callable  # Evidence -> dict(ours, evidence, verdict, rests_on[, reason])
    check: Callable  # paper tables -> (consistent, text)
    needs_all: bool = True  # False: decidable when any of ``models`` ran


def fmt(v, unit="") -> str:
    """0.812, +12.5% (unit '%') or +5.2 points (unit ' points'); +inf for a count rising from zero."""
    if v is None or not np.isfinite(v):
        return "+inf" if v == np.inf else "n/a"
    return f"{v:+.1f}{unit}" if unit else f"{v:.3f}"


def ci(lo, hi, unit="") -> str:
    return f"95% CI [{fmt(lo, unit)}, {fmt(hi, unit)}]"


def decide_interval(lo, hi, undefined, point=None):
    """A reason the interval cannot decide, or None."""
    if not (np.isfinite(lo) or np.isinf(lo)) or np.isnan(hi):
        return "no interval (no resamples, or none defined)"
    if np.isfinite(undefined) and undefined > UNDEFINED_LIMIT:
        return f"undefined (zero denominator) in {100 * undefined:.0f}% of resamples"
    if point is not None and np.isfinite(point) and not lo <= point <= hi:
        return "the point estimate lies outside its own interval"
    return None


def verdict_size(lo: float, hi: float, paper: float) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return INCONCLUSIVE
    if not lo <= paper <= hi:
        return CONTRADICTED
    return REPRODUCED if (hi < 0 or lo > 0) else INCONCLUSIVE


def verdict_comparisons(diffs, significant) -> str:
    diffs, significant = np.asarray(diffs, float), np.asarray(significant, bool)
    if len(diffs) == 0:
        return INCONCLUSIVE
    if (significant & (diffs < 0)).any():
        return CONTRADICTED
    if (significant & (diffs > 0)).all():
        return REPRODUCED
    return INCONCLUSIVE


def verdict_direction(lo: float, hi: float) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return INCONCLUSIVE
    return REPRODUCED if lo > 0 else (CONTRADICTED if hi < 0 else INCONCLUSIVE)


def combine(verdicts) -> str:
    v = list(verdicts)
    if CONTRADICTED in v:
        return CONTRADICTED
    return REPRODUCED if v and all(x == REPRODUCED for x in v) else INCONCLUSIVE


def diff(E, a, b, level, metric, subset="test"):
    va, vb = E.value(a, level, metric, subset), E.value(b, level, metric, subset)
    if va is None or vb is None:
        return None
    reps = None if va[1] is None or vb[1] is None else va[1] - vb[1]
    return va[0] - vb[0], reps


def ranking(E, level, metric, winners, subset="test", lower=False) -> dict:
    """Is one of ``winners`` first (highest, or lowest with ``lower``) among the variants run?"""
    vals = {lb: E.value(lb, level, metric, subset) for lb in E.labels}
    vals = {k: v for k, v in vals.items() if v is not None and np.isfinite(v[0])}
    sign = -1.0 if lower else 1.0
    order = sorted(vals, key=lambda k: -sign * vals[k][0])
    name = f"{level} {ev.METRIC_NAMES.get(metric, metric)}" + (" (real)" if subset == "test-real" else "")
    present = [w for w in winners if w in vals]
    others = [k for k in order if k not in winners]
    if not present or not others:
        return {
            "ours": f"{name}: no other model in this run" if present else f"{name}: not computed",
            "evidence": "no comparison",
            "verdict": INCONCLUSIVE,
            "rests_on": present,
        }
    first = order[0]
    if first in winners:
        other, lead_of = others[0], first
    else:
        other, lead_of = max(present, key=lambda w: sign * vals[w][0]), first
    a, b = (lead_of, other) if first in winners else (first, other)
    lead = sign * (vals[a][0] - vals[b][0])
    reps = None if vals[a][1] is None or vals[b][1] is None else sign * (vals[a][1] - vals[b][1])
    lo, hi, und = interval(reps) if reps is not None else (np.nan, np.nan, np.nan)
    reason = decide_interval(lo, hi, und, lead)
    ours = f"{name}: {paper_label(first)} first ({vals[first][0]:.3f}); " + (
        f"runner-up {paper_label(other)} ({vals[other][0]:.3f})"
        if first in winners
        else f"best named: {paper_label(other)} ({vals[other][0]:.3f})"
    )
    verdict = INCONCLUSIVE
    if reason is None and lo > 0:
        verdict = REPRODUCED if first in winners else CONTRADICTED
    out = {
        "ours": ours,
        "evidence": f"lead {lead:+.3f}, {ci(lo, hi)}",
        "verdict": verdict,
        "rests_on": [a, b],
    }
    if reason:
        out.update(verdict=NOT_DECIDABLE, reason=reason)
    return out


def rankings(E, level, metrics, winners, subset="test", lower=False) -> dict:
    parts = [ranking(E, level, m, winners, subset, lower) for m in metrics]
    undecided = [p for p in parts if p["verdict"] == NOT_DECIDABLE]
    out = {
        "ours": "; ".join(p["ours"] for p in parts),
        "evidence": "; ".join(p["evidence"] for p in parts),
        "verdict": combine(p["verdict"] for p in parts if p["verdict"] != NOT_DECIDABLE),
        "rests_on": sorted({lb for p in parts for lb in p["rests_on"]}),
    }
    if undecided:
        out.update(verdict=NOT_DECIDABLE, reason="; ".join(p["reason"] for p in undecided))
    return out


def paper_ranking(P, source, metrics, winners, subset="test", lower=False):
    """Does the paper's table put one of ``winners`` first on every metric?"""
    notes, ok = [], True
    for metric in metrics:
        vals = variant_values(P, source, metric, subset)
        best = vals.min() if lower else vals.max()
        tops = list(vals.index[vals == best])
        if not any(w in tops for w in winners):
            ok = False
            w = max((w for w in winners if w in vals), key=lambda k: -vals[k] if lower else vals[k])
            notes.append(f"{metric}: {paper_label(tops[0])} {best:g} beats {paper_label(w)} {vals[w]:g}")
        elif len(tops) > 1:
            notes.append(f"{metric}: tie at {best:g} ({', '.join(map(paper_label, tops))})")
        else:
            notes.append(f"{metric}: {paper_label(tops[0])} {best:g}")
    return ("yes" if ok else "no"), f"{source}: " + "; ".join(notes)


def change_row(E, scope, kind, paper) -> dict:
    ch = E.masking
    r = ch[(ch.scope == scope) & (ch.kind == kind)]
    if r.empty:
        return {"ours": "not computed", "evidence": "", "verdict": INCONCLUSIVE, "rests_on": []}
    r = r.iloc[0]
    pct = kind != "fn_share"
    models = E.models if not scope.startswith("model ") else [scope.split()[1]]
    rests = [lb for lb in E.labels if lb.rstrip("†") in models]
    if pct:
        ours = f"{fmt(r.change, '%')} ({r.raw:.0f} -> {r.masked:.0f}, pooled, oracle threshold)"
    else:
        ours = f"{r.raw:.1f}% -> {r.masked:.1f}% of FNs ({r.change:+.1f} points)"
    what = "raw count 0 (rule: 0 -> 0 is 0%, 0 -> k is +inf)" if pct else "no FN at all (share undefined)"
    undefined = f"; {what} in {100 * r.undefined:.1f}% of resamples" if r.undefined > 0 else ""
    out = {
        "ours": ours,
        "evidence": ci(r.ci_low, r.ci_high, "%" if pct else " points") + undefined,
        "verdict": verdict_size(r.ci_low, r.ci_high, paper),
        "rests_on": rests,
    }
    reason = decide_interval(r.ci_low, r.ci_high, r.undefined if not pct else 0.0, r.change)
    if reason:
        out.update(verdict=NOT_DECIDABLE, reason=reason)
    return out
