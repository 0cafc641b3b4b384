"""The paper's own numbers: Tables 4-8 and the percentages of its text, as data (``paper_tables.csv``).

Each row cites its source (a table, or a section for numbers quoted only in the text); the paper's
percent units are kept. The claims table reads them to test the paper against itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: our per-pixel Gaussian baseline is a floor, not one of the paper's models
NOT_IN_PAPER = ("baseline",)
PAPER_NAMES = {
    "patchcore": "PatchCore",
    "memseg": "MemSeg",
    "efficientad_s": "EfficientAD-S",
    "efficientad_m": "EfficientAD-M",
    "simplenet": "SimpleNet",
}
PAPER_TABLES = Path(__file__).with_name("paper_tables.csv")


def paper_label(label: str) -> str:
    """'efficientad_m†' -> 'EfficientAD-M†'."""
    base = label.rstrip("†")
    return PAPER_NAMES.get(base, base) + label[len(base) :]


def read_paper_tables(path: Path | str = PAPER_TABLES) -> pd.DataFrame:
    """The paper's Tables 4-8 and text numbers: source, model, masked, subset, level, metric, scope,
    mean, std, n_runs (one row per number, cited by table or section)."""
    path = Path(path)
    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    need = ["source", "model", "masked", "subset", "level", "metric", "scope", "mean", "std", "n_runs"]
    missing = [c for c in need if c not in t.columns]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {missing}")
    for i, v in enumerate(t["mean"]):
        try:
            float(v)
        except ValueError:
            raise ValueError(f"{path}, row {i + 2}: mean {v!r} is not a number") from None
    t["mean"] = t["mean"].astype(float)
    t["std"] = pd.to_numeric(t["std"].replace("", np.nan))
    return t


def paper_value(P: pd.DataFrame, source: str, metric: str, label: str = "all", subset="test", scope=""):
    """One number of the paper: ``label`` is a variant ('memseg†'), 'all', or a model for text numbers
    whose ``masked`` is blank; a table row's ``masked`` follows the label's †."""
    base = label.rstrip("†")
    sel = (P.source == source) & (P.metric == metric) & (P.model == base) & (P.scope == scope)
    sel &= P.subset == subset
    if source.startswith("Table"):
        sel &= P.masked == str(label.endswith("†"))
    rows = P[sel]
    if len(rows) != 1:
        raise KeyError(
            f"paper_tables.csv has {len(rows)} rows for {source} {label} {subset} {metric} {scope!r}"
        )
    return float(rows["mean"].iloc[0])


def paper_share(P, label: str, masked: bool, scope: str) -> float:
    rows = P[(P.source == "§7.1") & (P.metric == "fn_share_pct") & (P.scope == scope)]
    return float(rows[rows.masked == str(masked)]["mean"].iloc[0])


def variant_values(P, source, metric, subset="test") -> pd.Series:
    rows = P[(P.source == source) & (P.metric == metric) & (P.subset == subset)]
    return pd.Series(
        rows["mean"].to_numpy(),
        index=[m + ("†" if k == "True" else "") for m, k in zip(rows.model, rows.masked, strict=True)],
    )


def implied_fp_share(precision, recall):
    """FP / (FP + FN) from precision and recall as fractions (FP/TP = 1/P - 1, FN/TP = 1/R - 1)."""
    fp, fn = 1 / precision - 1, 1 / recall - 1
    return fp / (fp + fn)
