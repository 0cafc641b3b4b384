"""Every results table of a run: its file name under ``<data root>/tables/`` and how to read it back.

Notebooks 08-11 write through ``write`` and read through ``read``; the report index reads the same
names, so a table is named once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.fileio import write_csv

_TEXT = {"keep_default_na": False}  # tables of formatted strings: "" stays "", never NaN
#: name -> (file, read options, float format when written; None: full precision)
TABLES = {
    "metrics": ("metrics.csv", {}, "%.6g"),
    "per_image": ("per_image.csv", {"keep_default_na": False, "na_values": {"pixel_iou": [""]}}, "%.6g"),
    "bootstrap": ("bootstrap.csv", {}, "%.6g"),
    "intervals": ("intervals.csv", {}, "%.6g"),
    "headline": ("headline.csv", _TEXT, "%.6g"),
    "masking_error_change": ("masking_error_change.csv", {}, "%.6g"),
    "tests_delong": ("tests_delong.csv", {}, "%.6g"),
    "tests_t_over_seeds": ("tests_t_over_seeds.csv", {}, "%.6g"),
    "claims": ("claims.csv", _TEXT, "%.6g"),
    "findings": ("findings.csv", _TEXT, None),
    **{f"paper_table{n}": (f"paper_table{n}.csv", _TEXT, None) for n in (4, 5, 6, 7)},
    "latency": ("latency.csv", {}, "%.6g"),
    "inspection_accuracy": ("inspection_accuracy.csv", {}, None),
    "inspection_summary": ("inspection_summary.csv", {}, None),
    "inspection_streams": ("inspection_streams.csv", {}, None),
    # the future-work studies (lib.studies; notebooks 09 and 11)
    "size_policy": ("size_policy.csv", _TEXT, "%.6g"),
    "size_policy_thresholds": ("size_policy_thresholds.csv", {}, "%.6g"),
    "diagnosis_per_type": ("diagnosis_per_type.csv", {}, "%.6g"),
    "diagnosis_summary": ("diagnosis_summary.csv", {}, "%.6g"),
    "photometric_shift": ("photometric_shift.csv", {}, "%.6g"),
    "photometric_mitigation": ("photometric_mitigation.csv", {}, "%.6g"),
    "photometric_cost": ("photometric_cost.csv", {}, "%.6g"),
    "study_times": ("study_times.csv", {}, None),
}


def _spec(name: str):
    if name not in TABLES:
        raise KeyError(f"unknown results table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name]


def path(data_root, name: str) -> Path:
    """Where table ``name`` lives under a data root."""
    return Path(data_root) / "tables" / _spec(name)[0]


def write(data_root, name: str, frame: pd.DataFrame) -> Path:
    """Write table ``name`` atomically (its float format; see ``TABLES``)."""
    _, _, float_format = _spec(name)
    if float_format is None:
        from lib.fileio import write_text

        return write_text(path(data_root, name), frame.to_csv(index=False))
    return write_csv(path(data_root, name), frame, float_format=float_format)


def read(data_root, name: str, missing_ok: bool = False) -> pd.DataFrame | None:
    """Table ``name`` with its read options; ``missing_ok``: None when the file is absent or empty."""
    p = path(data_root, name)
    if not p.is_file():
        if missing_ok:
            return None
        raise FileNotFoundError(f"results table {name!r} not found at {p}: run the notebook that writes it")
    t = pd.read_csv(p, **_spec(name)[1])
    return None if missing_ok and not len(t) else t
