"""Our numbers in the paper's layout: Tables 4-7 averaged over viewpoints, in percent, with the paper's
value beside ours in every cell (read from ``paper_tables.csv``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.evaluate.claims.evidence import Evidence, interval
from lib.evaluate.claims.paper import PAPER_NAMES, paper_label, paper_value, read_paper_tables

#: table -> (level, our subset, the paper's subset, metrics in the paper's column order)
LAYOUT = {
    "Table 4": ("image", "test", "test", ("auroc", "aupr", "precision", "recall", "f1")),
    "Table 5": ("image", "test-real", "real", ("auroc", "aupr", "precision", "recall", "f1")),
    "Table 6": ("pixel", "test", "test", ("auroc", "aupr", "aupro", "iou", "precision", "recall", "f1")),
    "Table 7": ("pixel", "test-real", "real", ("auroc", "aupr", "aupro", "iou", "precision", "recall", "f1")),
}
COLUMN_NAMES = {
    "auroc": "AUROC",
    "aupr": "AU-PR",
    "aupro": "AUPRO",
    "iou": "IoU",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1-Score",
}


def _seed_std(E: Evidence, label: str, level: str, metric: str, subset: str) -> float:
    """Std over seeds of the view-averaged value (NaN with one seed)."""
    model, masked = label.rstrip("†"), label.endswith("†")
    m = E.metrics
    sel = m[(m.model == model) & (m.masked == masked) & (m.subset == subset) & (m.level == level)]
    sel = sel[sel.policy == "oracle"]
    if metric not in sel or sel.seed.nunique() < 2:
        return float("nan")
    return float(sel.groupby("seed")[metric].mean().std(ddof=1))


def ours_text(E: Evidence, label: str, level: str, metric: str, subset: str) -> str:
    """'61.2 [52.0, 70.1]' (one seed) or '61.2 ± 1.3 [52.0, 70.1]' (several), in percent; '—' if not run."""
    v = E.value(label, level, metric, subset)
    if v is None or not np.isfinite(v[0]):
        return "—"
    std = _seed_std(E, label, level, metric, subset)
    text = f"{100 * v[0]:.1f}" + (f" ± {100 * std:.1f}" if np.isfinite(std) else "")
    if v[1] is not None:
        lo, hi, _ = interval(v[1])
        if np.isfinite(lo) and np.isfinite(hi):
            text += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return text


def paper_layout(E: Evidence, source: str, paper_tables: pd.DataFrame | None = None) -> pd.DataFrame:
    """``source`` ('Table 4' ... 'Table 7') in the paper's rows and columns: each cell 'ours (paper)',
    ours averaged over viewpoints (mean over seeds) with its 95% interval, the paper's mean ± std."""
    if source not in LAYOUT:
        raise ValueError(f"no layout for {source!r}; choose one of {', '.join(LAYOUT)}")
    P = read_paper_tables() if paper_tables is None else paper_tables
    level, subset, paper_subset, metrics = LAYOUT[source]
    rows = []
    for model in PAPER_NAMES:
        for label in (model, model + "†"):
            row = {"model": paper_label(label)}
            for metric in metrics:
                mean = paper_value(P, source, metric, label, paper_subset)
                sel = P[(P.source == source) & (P.metric == metric) & (P.model == model)]
                sel = sel[(sel.subset == paper_subset) & (sel.masked == str(label.endswith("†")))]
                std = float(sel["std"].iloc[0])
                row[COLUMN_NAMES[metric]] = (
                    f"{ours_text(E, label, level, metric, subset)} (paper {mean:g} ± {std:g})"
                )
            rows.append(row)
    return pd.DataFrame(rows)
