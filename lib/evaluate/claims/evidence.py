"""The numbers the claims are decided on, each with a 95% interval, computed once per run.

A view-averaged number is the mean over viewpoints of the mean over seeds (as Tables 4-7). Its interval
resamples test underbodies jointly across viewpoints (cluster = underbody), thresholds held fixed:
threshold-free metrics from the stored replicates, the others from per-image TP/FP/FN counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.evaluate import bootstrap as B
from lib.evaluate import evaluate as ev
from lib.evaluate import significance as S
from lib.evaluate.claims.paper import NOT_IN_PAPER, paper_label

FREE_METRICS = ("auroc", "aupr", "aupro")  # threshold-free: stored replicates
COUNT_METRICS = ("precision", "recall", "f1", "iou", "fp_share")  # at fixed thresholds: per-image counts


# ----------------------------------------------------------------------------- numbers with intervals
def interval(reps) -> tuple[float, float, float]:
    """(low, high, undefined share) of a replicate vector: NaN replicates (a zero denominator) are
    counted, not dropped silently; +inf (a count rising from zero) is kept and sorts last."""
    v = np.asarray(reps, np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    undefined = float(np.isnan(v).mean())
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), undefined
    if np.isinf(v).any():
        lo, hi = np.quantile(v, [0.025, 0.975], method="inverted_cdf")
        return float(lo), float(hi), undefined
    lo, hi = B.percentile_interval(v)
    return lo, hi, undefined


def from_counts(metric: str, tp, fp, fn):
    """precision, recall, F1, IoU or FP share from TP/FP/FN (NaN where the denominator is zero)."""
    tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
    num, den = {
        "precision": (tp, tp + fp),
        "recall": (tp, tp + fn),
        "f1": (2 * tp, 2 * tp + fp + fn),
        "iou": (tp, tp + fp + fn),
        "fp_share": (fp, fp + fn),
    }[metric]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def count_change(raw, masked):
    """100 (masked - raw) / raw, with the stated rule for raw = 0: 0 % when masked is 0 too, +inf
    otherwise (never dropped)."""
    raw, masked = np.asarray(raw, np.float64), np.asarray(masked, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 100.0 * (masked - raw) / np.where(raw > 0, raw, 1)
    return np.where(raw > 0, out, np.where(masked > 0, np.inf, 0.0))


def error_indicators(images: pd.DataFrame, policy: str) -> pd.DataFrame:
    x = ev.with_size_bins(images)
    pred, y = ev._pred(x, policy).to_numpy(bool), (x.label == "anomalous").to_numpy()
    return x.assign(tp=(y & pred).astype(int), fp=(~y & pred).astype(int), fn=(y & ~pred).astype(int))


def masking_error_change(
    images: pd.DataFrame,
    manifest: pd.DataFrame,
    policy: str = "oracle",
    n_resamples: int = B.DEFAULT_RESAMPLES,
    seed: int = B.DEFAULT_SEED,
    draws: dict | None = None,
) -> pd.DataFrame:
    """Section 7.1's percentages from pooled counts: image-level FN, FP and errors, raw and masked,
    summed over seeds, viewpoints and the models that have both variants (per model: over that model's
    cells); change = 100 (masked - raw) / raw of the pooled counts (``count_change``); the FN share of
    each size class (percent of all FNs) and its change in points. Intervals: test underbodies
    resampled jointly across viewpoints, thresholds fixed; ``undefined`` = share of resamples whose
    raw count is zero (a ratio: counted by ``count_change``'s rule; a share: undefined, reported)."""
    images = images[~images.model.isin(NOT_IN_PAPER)]
    x = error_indicators(images, policy)
    both = x.groupby(["model", "viewpoint", "seed"]).masked.nunique()
    paired = sorted(m for m, ok in (both == 2).groupby(level="model").all().items() if ok)
    x = x[x.model.isin(paired)]
    cols = [
        "threshold",
        "scope",
        "kind",
        "raw",
        "masked",
        "change",
        "ci_low",
        "ci_high",
        "undefined",
        "n_seeds",
    ]
    if x.empty:
        return pd.DataFrame(columns=cols)
    if draws is None and n_resamples:
        draws = ev.cluster_resamples(manifest, n_resamples, seed)
    n_b = next(iter(draws.values()))[1].shape[0] if draws else 0
    acc: dict = {}  # (scope, kind, masked) -> [point, (B,) replicates]

    def add(key, ind, weights):
        point, reps = acc.setdefault(key, [0.0, np.zeros(n_b)])
        acc[key] = [point + float(ind.sum()), reps + (weights @ ind if n_b else 0.0)]

    for (view, model, masked), g in x.groupby(["viewpoint", "model", "masked"], sort=True):
        if draws:
            ids, counts = draws[view]
        for _, gs in g.groupby("seed", sort=True):
            if draws:
                gs = gs.set_index("image_id").reindex(ids)
                if gs.label.isna().any():
                    raise ValueError(f"{model} ({view}) lacks test images the manifest has")
            w = counts if draws else None
            fn, fp = gs.fn.to_numpy(float), gs.fp.to_numpy(float)
            for scope in ("overall", f"model {model}"):
                add((scope, "fn", bool(masked)), fn, w)
                add((scope, "fp", bool(masked)), fp, w)
                add((scope, "errors", bool(masked)), fn + fp, w)
            for b in ev.SIZE_BINS:
                add((f"size {b}", "fn", bool(masked)), fn * (gs.size_bin == b).to_numpy(), w)
    n_seeds = x.seed.nunique()
    rows = []
    scopes = ["overall", *(f"size {b}" for b in ev.SIZE_BINS), *(f"model {m}" for m in paired)]
    for scope in scopes:
        for kind in ("fn", "fp", "errors"):
            if (scope, kind, False) not in acc:
                continue
            (r0, rr), (m0, mr) = acc[(scope, kind, False)], acc[(scope, kind, True)]
            lo, hi, _ = interval(count_change(rr, mr)) if n_b else (np.nan, np.nan, np.nan)
            undefined = float((rr == 0).mean()) if n_b else np.nan
            rows.append(
                [policy, scope, kind, r0, m0, float(count_change(r0, m0)), lo, hi, undefined, n_seeds]
            )
    (t0, tr), (tm0, tmr) = acc[("overall", "fn", False)], acc[("overall", "fn", True)]
    for b in ev.SIZE_BINS:
        (b0, br), (bm0, bmr) = acc[(f"size {b}", "fn", False)], acc[(f"size {b}", "fn", True)]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = lambda a, t: np.where(t > 0, 100.0 * a / np.where(t > 0, t, 1), np.nan)  # noqa: E731
            point = share(np.float64(bm0), np.float64(tm0)) - share(np.float64(b0), np.float64(t0))
            lo, hi, und = interval(share(bmr, tmr) - share(br, tr)) if n_b else (np.nan, np.nan, np.nan)
        rows.append(
            [policy, f"size {b}", "fn_share", float(share(b0, t0)), float(share(bm0, tm0)), float(point)]
            + [lo, hi, und, n_seeds]
        )
    return pd.DataFrame(rows, columns=cols)


class Evidence:
    """Everything the claims are decided on, computed once (notebook 09 shows the same objects)."""

    def __init__(
        self,
        metrics: pd.DataFrame,
        images: pd.DataFrame,
        replicates: pd.DataFrame,
        manifest: pd.DataFrame,
        profile=None,
        n_resamples: int = B.DEFAULT_RESAMPLES,
        seed: int = B.DEFAULT_SEED,
        machine: str | None = None,
    ):
        self.metrics = metrics[~metrics.model.isin(NOT_IN_PAPER)] if len(metrics) else metrics
        self.images = images[~images.model.isin(NOT_IN_PAPER)] if len(images) else images
        reps = replicates[~replicates.model.isin(NOT_IN_PAPER)] if len(replicates) else replicates
        if len(reps) and "subset" not in reps:
            reps = reps.assign(subset="test").copy()  # a table from before replicates had subsets
        self.replicates = reps
        self.bcols = [c for c in reps.columns if c.startswith("b") and c[1:].isdigit()]
        self.manifest, self.profile, self.machine = manifest, profile, machine
        self.n_resamples = len(self.bcols) and n_resamples
        self.draws = ev.cluster_resamples(manifest, n_resamples, seed) if n_resamples else {}
        self.labels = sorted(
            {ev.label_of(m, k) for m, k in zip(self.images.model, self.images.masked, strict=True)}
        )
        self.models = sorted({lb.rstrip("†") for lb in self.labels})
        self.n_seeds = int(self.images.seed.nunique()) if len(self.images) else 0
        self.delong = S.delong_families(self.images)
        self.t_tests = S.t_test_families(self.metrics)
        self.masking = masking_error_change(self.images, manifest, "oracle", n_resamples, seed, self.draws)
        self._cache: dict = {}

    # a variant's view-averaged number and its replicates --------------------------------------------
    def value(self, label: str, level: str, metric: str, subset: str = "test"):
        """(point, (B,) replicates or None) of ``label``'s view-averaged ``metric``; None if not run."""
        key = (label, level, metric, subset)
        if key not in self._cache:
            fn = self._free if metric in FREE_METRICS else self._counted
            self._cache[key] = fn(label, level, metric, subset)
        return self._cache[key]

    def _free(self, label, level, metric, subset):
        model, masked = label.rstrip("†"), label.endswith("†")
        m = self.metrics
        sel = m[(m.model == model) & (m.masked == masked) & (m.subset == subset) & (m.level == level)]
        sel = sel[sel.policy == "oracle"]
        if sel.empty:
            return None
        point = float(sel.groupby("viewpoint")[metric].mean().mean())
        r = self.replicates
        if not len(r):
            return point, None
        r = r[(r.model == model) & (r.masked == masked) & (r.subset == subset) & (r.level == level)]
        r = r[r.metric == metric]
        if r.empty:
            return point, None
        return point, r.groupby("viewpoint")[self.bcols].mean().to_numpy(float).mean(0)

    def _counted(self, label, level, metric, subset):
        model, masked = label.rstrip("†"), label.endswith("†")
        x = self.images[(self.images.model == model) & (self.images.masked == masked)]
        if x.empty:
            return None
        if subset == "test-real":
            x = x[(x.label == "normal") | (x.source == "real")]
        if level == "image":
            x = error_indicators(x, "oracle")
            cols = ["tp", "fp", "fn"]
        else:
            cols = ["tp_px", "fp_px", "fn_px"]
            if not set(cols) <= set(x.columns):
                return None  # a per-image table from before pixel counts were kept
        points, reps = {}, {}
        for (view, _seed), g in x.groupby(["viewpoint", "seed"], sort=True):
            c = g[cols].to_numpy(np.float64)
            points.setdefault(view, []).append(from_counts(metric, *c.sum(0)))
            if self.draws:
                ids, counts = self.draws[view]
                pos = pd.Series(np.arange(len(ids)), index=ids)[g.image_id].to_numpy()
                w = counts[:, pos] @ c
                reps.setdefault(view, []).append(from_counts(metric, *w.T))
        point = float(np.mean([np.mean(v) for v in points.values()]))
        if not reps:
            return point, None
        return point, np.mean([np.mean(v, axis=0) for v in reps.values()], axis=0)

    def chance(self, label: str) -> str | None:
        """Why ``label`` is at chance, or None: its image-AUROC 95% interval holds 0.5 on the view
        average or in any viewpoint (a claim made "in every view" must not lean on a blind view)."""
        v = self.value(label, "image", "auroc")
        if v is None or v[1] is None:
            return None
        lo, hi, _ = interval(v[1])
        if lo <= 0.5 <= hi:
            return f"{paper_label(label)} {v[0]:.2f} [{lo:.2f}, {hi:.2f}]"
        model, masked = label.rstrip("†"), label.endswith("†")
        m, r = self.metrics, self.replicates
        points = m[(m.model == model) & (m.masked == masked) & (m.subset == "test") & (m.level == "image")]
        points = points[points.policy == "oracle"].groupby("viewpoint").auroc.mean()
        r = r[(r.model == model) & (r.masked == masked) & (r.subset == "test") & (r.level == "image")]
        for view, reps in r[r.metric == "auroc"].groupby("viewpoint")[self.bcols].mean().iterrows():
            lo, hi, _ = interval(reps.to_numpy(float))
            if lo <= 0.5 <= hi:
                return f"{paper_label(label)} in {view} {points.get(view, np.nan):.2f} [{lo:.2f}, {hi:.2f}]"
        return None
