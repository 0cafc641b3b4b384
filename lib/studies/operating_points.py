"""Size-aware operating points (paper 8.4, "size-dependent threshold tuning").

The paper leaves thresholds to a calibration with process engineers. This gives it a tool:

- **Regions.** A cell's anomaly map (at the ground truth's size, ROI-masked for † cells, as the
  evaluation reads it) is cut at its val-calibrated pixel threshold ``segment_threshold``; each
  8-connected region has an area (a share of the image, as the paper's area ratio, eq. 14) and a
  peak (its highest map value).
- **Area classes.** A region is small, medium or large by the tertile edges of the *validation*
  defects' area ratios of its viewpoint (eq. 15's rule on validation; the test split is never read).
- **Policy.** An image is anomalous when one of its regions reaches the threshold of its area class,
  ``peak >= thresholds[class]`` (each at least ``segment_threshold``). With the three thresholds
  equal to ``t`` that is exactly ``max(map) >= t``, the single threshold on the map (tested).
- **Fit.** On validation, for a false-alarm budget per 1,000 normal underbodies (each image is its
  own underbody): among all threshold triples whose false alarms stay within the budget, the one
  that detects the most small defects, then medium, then large, then has the lowest thresholds. The
  search is exact: a decision changes only at the per-image, per-class peak values, and every
  combination of those is tried. The single threshold at the same budget is the lowest one within it.
- **Evaluation** on test against that single threshold: false negatives per size class (the test
  defects' own tertiles, eq. 15) and false alarms per 1,000 normals, with percentile bootstrap
  intervals from resampling test images (normal and defective apart, per viewpoint).
"""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pandas as pd

from lib.evaluate import bootstrap as B
from lib.evaluate import metrics as M

SIZE_CLASSES = ("small", "medium", "large")
#: the default false-alarm budget per 1,000 normal underbodies: one in twenty normals flagged per view
DEFAULT_BUDGET = 50.0
#: budgets the notebook's control offers
BUDGETS = (0.0, 25.0, 50.0, 100.0, 150.0, 200.0)
#: eq. 15's tertile probabilities (as ``lib.evaluate.metrics.size_bins``)
TERTILES = (0.333, 0.667)


def area_edges(area_ratios) -> tuple[float, float]:
    """Eq. 15's tertile edges of a set of defect area ratios."""
    a = np.asarray(area_ratios, np.float64)
    if len(a) == 0:
        raise ValueError("no defect area ratios to take tertiles of")
    b1, b2 = np.quantile(a, TERTILES)
    return float(b1), float(b2)


def size_class(area_ratio, edges) -> np.ndarray:
    """0 small, 1 medium, 2 large: ``a <= b1``, ``a <= b2``, else (as ``metrics.size_bins``)."""
    a = np.asarray(area_ratio, np.float64)
    return np.where(a <= edges[0], 0, np.where(a <= edges[1], 1, 2))


def regions(anomaly_map: np.ndarray, segment_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(area ratios, peaks, labels) of the 8-connected regions of ``map >= segment_threshold``."""
    hot = M.at_or_above(anomaly_map, segment_threshold).astype(np.uint8)
    n, labels = cv2.connectedComponents(hot, connectivity=8)
    if n <= 1:
        return np.zeros(0), np.zeros(0), labels
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n)[1:].astype(np.float64) / flat.size
    peaks = np.full(n, -np.inf)
    np.maximum.at(peaks, flat, np.asarray(anomaly_map, np.float64).ravel())
    return area, peaks[1:], labels


def class_peaks(anomaly_map: np.ndarray, segment_threshold: float, edges) -> np.ndarray:
    """Per area class, the highest region peak of the map (-inf where it has no region of the class):
    all a policy needs of an image."""
    area, peaks, _ = regions(anomaly_map, segment_threshold)
    out = np.full(3, -np.inf)
    for k, p in zip(size_class(area, edges), peaks, strict=True):
        out[k] = max(out[k], p)
    return out


@dataclasses.dataclass(frozen=True)
class SizePolicy:
    """Judge each region of ``map >= segment_threshold`` by the threshold of its area class."""

    segment_threshold: float
    edges: tuple[float, float]
    thresholds: tuple[float, float, float]

    def __post_init__(self):
        if len(self.thresholds) != 3 or len(self.edges) != 2:
            raise ValueError("a size policy has two area edges and three thresholds (small, medium, large)")
        if self.edges[0] > self.edges[1]:
            raise ValueError(f"area edges must be ascending, got {self.edges}")
        low = [t for t in self.thresholds if not t >= self.segment_threshold]
        if low:
            raise ValueError(
                f"threshold {low[0]} is below the segment threshold {self.segment_threshold}: a region "
                "only exists at or above it"
            )

    def decide_peaks(self, peaks: np.ndarray) -> np.ndarray:
        """Decisions from ``class_peaks`` rows (N, 3)."""
        return (np.asarray(peaks, np.float64) >= np.asarray(self.thresholds, np.float64)).any(axis=-1)

    def decide(self, anomaly_map: np.ndarray) -> bool:
        return bool(self.decide_peaks(class_peaks(anomaly_map, self.segment_threshold, self.edges)))

    def judge_regions(self, area_ratios, peaks) -> list[dict]:
        """Per region: its area class, the threshold that applies and whether it is flagged."""
        out = []
        for k, p in zip(size_class(area_ratios, self.edges), peaks, strict=True):
            out.append(
                {
                    "size_class": SIZE_CLASSES[k],
                    "threshold": self.thresholds[k],
                    "flagged": bool(p >= self.thresholds[k]),
                }
            )
        return out

    def to_json(self) -> dict:
        return {
            "segment_threshold": self.segment_threshold,
            "edges": list(self.edges),
            "thresholds": [t if math.isfinite(t) else "inf" for t in self.thresholds],
        }

    @classmethod
    def from_json(cls, d: dict) -> SizePolicy:
        try:
            thr = tuple(float(t) for t in d["thresholds"])
            return cls(float(d["segment_threshold"]), tuple(float(e) for e in d["edges"]), thr)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a size policy: {json.dumps(d)[:200]} ({exc})") from None


def allowed_false_alarms(budget_per_1000: float, n_normal: int) -> int:
    """How many of ``n_normal`` normal images a budget lets through (rounded down)."""
    if not budget_per_1000 >= 0:
        raise ValueError(
            f"false-alarm budget must be >= 0 per 1,000 normal underbodies, got {budget_per_1000}"
        )
    return int(math.floor(budget_per_1000 * n_normal / 1000.0 + 1e-9))


def _candidates(column: np.ndarray, floor: float) -> np.ndarray:
    vals = np.unique(column[np.isfinite(column)])
    return np.concatenate([vals[vals >= floor], [np.inf]])


def single_threshold(peaks: np.ndarray, y: np.ndarray, budget_per_1000: float, floor: float) -> float:
    """The lowest threshold on ``max(map)`` (>= ``floor``) whose false alarms stay within the budget."""
    peaks, y = np.asarray(peaks, np.float64), np.asarray(y, bool)
    allowed = allowed_false_alarms(budget_per_1000, int((~y).sum()))
    top = peaks.max(axis=1)
    for t in _candidates(top, floor):
        if int((top[~y] >= t).sum()) <= allowed:
            return float(t)
    return float("inf")


def fit_policy(
    peaks: np.ndarray,
    y: np.ndarray,
    defect_class: np.ndarray,
    budget_per_1000: float,
    segment_threshold: float,
    edges,
) -> SizePolicy:
    """The size-aware policy on validation (see the module's docstring). ``peaks``: ``class_peaks``
    rows; ``y``: anomalous; ``defect_class``: each defective image's size class (0-2, by its ground
    truth), ignored for normals."""
    peaks, y = np.asarray(peaks, np.float64), np.asarray(y, bool)
    cls = np.asarray(defect_class)
    allowed = allowed_false_alarms(budget_per_1000, int((~y).sum()))
    cand = [_candidates(peaks[:, k], segment_threshold) for k in range(3)]
    hit = [peaks[None, :, k] >= c[:, None] for k, c in enumerate(cand)]  # (candidates, images) per class
    weights = np.zeros(len(y), np.int64)
    # lexicographic: small first, then medium, then large; ties: the lowest thresholds (as the single
    # threshold, the lowest within the budget, so a policy of one class is exactly that threshold)
    n = int(y.sum()) + 1
    weights[y & (cls == 0)] = n * n
    weights[y & (cls == 1)] = n
    weights[y & (cls == 2)] = 1
    best, best_key = None, None
    ml = hit[1][:, None, :] | hit[2][None, :, :]  # (cm, cl, images)
    rank = np.arange(len(cand[1]))[:, None] + np.arange(len(cand[2]))[None, :]
    span = len(cand[0]) + len(cand[1]) + len(cand[2])
    for i in range(len(cand[0])):
        flagged = hit[0][i][None, None, :] | ml
        fa = flagged[..., ~y].sum(axis=-1)
        score = flagged.astype(np.int64) @ weights
        key = np.where(fa <= allowed, score * span + (span - 1 - rank - i), -1)
        j = np.unravel_index(int(np.argmax(key)), key.shape)
        if key[j] >= 0 and (best_key is None or key[j] > best_key):
            best_key, best = int(key[j]), (i, int(j[0]), int(j[1]))
    if best is None:  # nothing flagged at all meets it: every threshold at infinity
        return SizePolicy(float(segment_threshold), tuple(edges), (math.inf, math.inf, math.inf))
    thr = tuple(float(cand[k][best[k]]) for k in range(3))
    return SizePolicy(float(segment_threshold), tuple(float(e) for e in edges), thr)


def val_pixel_threshold(out: dict) -> float:
    """The val-calibrated pixel threshold of a loaded cell (``load_outputs``): tau* = argmax IoU on its
    validation images, as the evaluation's ``val-calibrated`` policy and the bundle set it."""
    t = out["table"]
    vi = np.nonzero((t.split == "val").to_numpy())[0]
    return float(
        M.PixelScores(
            [out["masks"][i] for i in vi], [out["maps"][i] for i in vi], None, False
        ).best_iou_threshold()
    )


def cell_peaks(out: dict, segment_threshold: float | None = None) -> tuple[pd.DataFrame, float, tuple]:
    """Per val and test image of a loaded cell (``lib.evaluate.evaluate.load_outputs``): its class
    peaks under the cell's val-calibrated pixel threshold and area edges from validation defects.
    Returns (table, segment threshold, edges)."""
    t = out["table"]
    val = (t.split == "val").to_numpy()
    seg = val_pixel_threshold(out) if segment_threshold is None else float(segment_threshold)
    anomalous = (t.label == "anomalous").to_numpy()
    # no validation defect (a dry run's few images): one class, every region "small"
    edges = (
        area_edges(t.area_ratio[val & anomalous].to_numpy(float))
        if (val & anomalous).any()
        else (np.inf, np.inf)
    )
    rows = []
    for i, r in enumerate(t.itertuples(index=False)):
        p = class_peaks(out["maps"][i], seg, edges)
        rows.append(
            {
                "image_id": r.image_id,
                "split": r.split,
                "label": r.label,
                "area_ratio": float(r.area_ratio) if r.label == "anomalous" else float("nan"),
                "peak_small": p[0],
                "peak_medium": p[1],
                "peak_large": p[2],
            }
        )
    return pd.DataFrame(rows), seg, edges


PEAK_COLUMNS = ["peak_small", "peak_medium", "peak_large"]


def cell_peak_table(out: dict, cell, segment_threshold: float | None = None) -> pd.DataFrame:
    """``cell_peaks`` with the cell, its segment threshold and area edges on every row: what
    ``fit_cell``, ``decisions`` and ``fn_curves`` read (one cell's part of the peaks table)."""
    t, seg, edges = cell_peaks(out, segment_threshold)
    return t.assign(
        model=cell.model,
        viewpoint=cell.viewpoint,
        masked=cell.masked,
        seed=cell.seed,
        segment_threshold=seg,
        edge_small=edges[0],
        edge_medium=edges[1],
    )


CELL_KEYS = ["model", "viewpoint", "masked", "seed"]


def _defect_classes(part: pd.DataFrame) -> np.ndarray:
    """Size class (0-2) of each defective image by eq. 15's tertiles of ``part``'s own defects."""
    y = (part.label == "anomalous").to_numpy()
    cls = np.full(len(part), -1)
    if y.any():
        cls[y] = size_class(
            part.area_ratio.to_numpy(float)[y], area_edges(part.area_ratio.to_numpy(float)[y])
        )
    return cls


def fit_cell(cell_rows: pd.DataFrame, budget: float) -> tuple[SizePolicy, float]:
    """(size-aware policy, single threshold) of one cell's validation rows at ``budget``."""
    v = cell_rows[cell_rows.split == "val"]
    first = cell_rows.iloc[0]
    edges = (float(first.edge_small), float(first.edge_medium))
    seg = float(first.segment_threshold)
    y = (v.label == "anomalous").to_numpy()
    p = v[PEAK_COLUMNS].to_numpy(float)
    policy = fit_policy(p, y, _defect_classes(v), budget, seg, edges)
    return policy, single_threshold(p, y, budget, seg)


def decisions(peaks_tab: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Test decisions of both rules per cell at ``budget``: columns ``size_aware``, ``single``, the
    test size class, and the fitted thresholds."""
    out = []
    for _, g in peaks_tab.groupby(CELL_KEYS, sort=True):
        policy, single = fit_cell(g, budget)
        t = g[g.split == "test"].copy()
        p = t[PEAK_COLUMNS].to_numpy(float)
        t["size_aware"] = policy.decide_peaks(p)
        t["single"] = p.max(axis=1) >= single
        cls = _defect_classes(t)
        t["size_class"] = [SIZE_CLASSES[c] if c >= 0 else "" for c in cls]
        t["thresholds"] = [policy.thresholds] * len(t)
        t["single_threshold"] = single
        out.append(t)
    return pd.concat(out, ignore_index=True)


RULES = ("single", "size_aware")


def _rates(d: pd.DataFrame, weights: np.ndarray | None = None) -> dict:
    w = np.ones(len(d)) if weights is None else weights
    y = (d.label == "anomalous").to_numpy()
    res = {}
    for rule in RULES:
        pred = d[rule].to_numpy(bool)
        nn = w[~y].sum()
        res[(rule, "false_alarms_per_1000")] = 1000.0 * (w[~y] * pred[~y]).sum() / nn if nn else np.nan
        for c in SIZE_CLASSES:
            sel = y & (d.size_class == c).to_numpy()
            nd = w[sel].sum()
            res[(rule, f"fn_rate_{c}")] = (w[sel] * ~pred[sel]).sum() / nd if nd else np.nan
    return res


def compare(dec: pd.DataFrame, n_resamples: int = 1000, seed: int = B.DEFAULT_SEED) -> pd.DataFrame:
    """Per model and variant (viewpoints and seeds pooled): FN rate per size class and false alarms
    per 1,000 normals for both rules, the difference (size-aware - single), each with a 95 %
    percentile bootstrap interval (test images resampled within viewpoint and label)."""
    rows = []
    for (model, masked), g in dec.groupby(["model", "masked"], sort=True):
        g = g.reset_index(drop=True)
        point = _rates(g)
        draws = []
        if n_resamples:
            # an image is one underbody: drawn once for every seed's row of it (paired across seeds)
            strata = g.viewpoint + "/" + g.label
            groups = g.image_id + "/" + g.viewpoint
            counts = B.resample_counts(groups.to_numpy(), strata.to_numpy(), n_resamples, seed)
            draws = [_rates(g, c.astype(float)) for c in counts]
        for metric in ["false_alarms_per_1000"] + [f"fn_rate_{c}" for c in SIZE_CLASSES]:
            r = {"model": model, "masked": masked, "metric": metric}
            for rule in RULES:
                r[rule] = point[(rule, metric)]
                if draws:
                    lo, hi = B.percentile_interval([d[(rule, metric)] for d in draws])
                    r[f"{rule}_ci"] = f"{lo:.3g}-{hi:.3g}"
            r["difference"] = point[("size_aware", metric)] - point[("single", metric)]
            if draws:
                lo, hi = B.percentile_interval(
                    [d[("size_aware", metric)] - d[("single", metric)] for d in draws]
                )
                r["difference_ci"] = f"{lo:.3g} to {hi:.3g}"
            rows.append(r)
    return pd.DataFrame(rows)


def fn_curves(peaks_tab: pd.DataFrame) -> pd.DataFrame:
    """Validation, per cell: as the single threshold sweeps every candidate, false alarms per 1,000
    normals and the FN rate of each size class (the calibration tool's curves)."""
    rows = []
    for (model, view, masked, seed), g in peaks_tab.groupby(CELL_KEYS, sort=True):
        v = g[g.split == "val"]
        y = (v.label == "anomalous").to_numpy()
        cls = _defect_classes(v)
        top = v[PEAK_COLUMNS].to_numpy(float).max(axis=1)
        for t in _candidates(top, float(g.segment_threshold.iloc[0])):
            pred = top >= t
            r = {
                "model": model,
                "viewpoint": view,
                "masked": masked,
                "seed": seed,
                "threshold": t,
                "false_alarms_per_1000": 1000.0 * pred[~y].mean() if (~y).any() else np.nan,
            }
            for k, c in enumerate(SIZE_CLASSES):
                sel = y & (cls == k)
                r[f"fn_rate_{c}"] = float((~pred[sel]).mean()) if sel.any() else np.nan
            rows.append(r)
    return pd.DataFrame(rows)


def curves_figure(curves: pd.DataFrame, masked: bool = True, budget: float | None = None):
    """Rows = models, columns = viewpoints: FN rate per size class against false alarms per 1,000
    normal underbodies as the threshold sweeps (validation; first seed); the budget as a line. A curve
    ends where the threshold reaches the cell's pixel threshold (no region exists below it): a model
    whose normal maps stay below it has all its points at zero false alarms. None when the run has no
    cell of the variant."""
    import matplotlib.pyplot as plt

    c = curves[(curves.masked == masked) & (curves.seed == curves.seed.min())] if len(curves) else curves
    if c.empty:  # no cell of this variant in the run (e.g. a masked-only or raw-only run)
        return None
    models, views = (
        sorted(c.model.unique()),
        [v for v in ("front", "center", "back") if v in set(c.viewpoint)],
    )
    fig, axes = plt.subplots(
        len(models),
        len(views),
        figsize=(4 * len(views), 2.3 * len(models)),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for i, m in enumerate(models):
        for j, v in enumerate(views):
            ax = axes[i, j]
            g = c[(c.model == m) & (c.viewpoint == v)].sort_values("false_alarms_per_1000")
            for cls, colour in zip(SIZE_CLASSES, ("tab:red", "tab:orange", "tab:blue"), strict=True):
                ax.plot(
                    g.false_alarms_per_1000,
                    g[f"fn_rate_{cls}"],
                    color=colour,
                    label=cls,
                    marker="o",
                    ms=3,
                    drawstyle="steps-post",
                    alpha=0.8,
                )
            if budget is not None:
                ax.axvline(budget, color="grey", ls=":")
            ax.set_title(f"{m}{'†' if masked else ''} · {v}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(models) - 1:
                ax.set_xlabel("false alarms / 1,000 normals (val)")
            if j == 0:
                ax.set_ylabel("FN rate")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def budget_control(peaks_tab: pd.DataFrame, n_resamples: int = 200):
    """An ipywidgets control: choose the false-alarm budget, see both rules on test. In a static
    report (papermill) the widget shows its default state; every number it shows comes from
    ``compare(decisions(peaks_tab, budget))``."""
    import ipywidgets as widgets
    from IPython.display import display

    slider = widgets.SelectionSlider(
        options=[(f"{b:g} / 1,000", b) for b in BUDGETS],
        value=DEFAULT_BUDGET,
        description="FA budget",
        continuous_update=False,
        style={"description_width": "initial"},
    )

    def show(budget):
        display(compare(decisions(peaks_tab, budget), n_resamples=n_resamples).round(3))

    out = widgets.interactive_output(show, {"budget": slider})
    return widgets.VBox([slider, out])
