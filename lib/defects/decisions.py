"""The human review step's decisions (paper 4.3): one accept/reject per synthetic defect, stored as CSV.

Written by the review gallery (``lib.defects.review``), read by the dataset assembly (rejected
synthetic defects never enter the manifest).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.fileio import write_csv

REVIEW_FILE = "synthetic/review_decisions.csv"


def read_review(data_root) -> dict:
    """Stored review decisions {synthetic_id: 'accept'|'reject'}; missing file = all accepted."""
    path = Path(data_root) / REVIEW_FILE
    if not path.is_file():
        return {}
    df = pd.read_csv(path, keep_default_na=False)
    bad = df[~df.decision.isin(["accept", "reject"])]
    if len(bad):
        i = int(bad.index[0]) + 1
        raise ValueError(
            f"{path} row {i}, column 'decision': expected accept/reject, got {bad.decision.iloc[0]!r}"
        )
    return dict(zip(df.synthetic_id, df.decision, strict=True))


def write_review(data_root, decisions: dict) -> Path:
    df = pd.DataFrame(sorted(decisions.items()), columns=["synthetic_id", "decision"])
    return write_csv(Path(data_root) / REVIEW_FILE, df)
