"""How notebooks show tables: no pandas row numbers as a column, counts as integers.

``open_profile`` (the first call of every notebook) installs this in IPython; outside IPython it does
nothing. A frame keeps its index when it carries meaning (named, or not 0..n-1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def tidy_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """(the frame with count-like float columns as integers, whether to show its index).

    A float column is count-like when every finite value is a whole number and one exceeds 1: a
    column of rates that are all 0 or 1 (a recall of 1.0) stays a float column."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_float_dtype(s.dtype):
            v = s.to_numpy(dtype=np.float64)
            finite = v[np.isfinite(v)]
            whole = finite.size and np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 2**53)
            if whole and np.abs(finite).max() > 1:
                if np.isinf(v).any():
                    continue  # Int64 cannot hold inf; keep the floats
                out[col] = s.astype("Int64")
    idx = out.index
    plain = isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1 and idx.name is None
    if plain and out.columns.nlevels == 1:
        out.columns.name = None  # an unstack's axis name would sit alone above the hidden index
    return out, not plain


def frame_html(df: pd.DataFrame) -> str:
    """HTML for one frame, as pandas' own notebook repr but tidied (see ``tidy_frame``)."""
    tidy, show_index = tidy_frame(df)
    return tidy.to_html(
        index=show_index,
        max_rows=pd.get_option("display.max_rows"),
        max_cols=pd.get_option("display.max_columns"),
        notebook=True,
        na_rep="NaN",
        float_format=None,
    )


def install() -> bool:
    """Register ``frame_html`` for DataFrames in the running IPython (False when there is none)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        return False
    ip = get_ipython()
    if ip is None or not hasattr(ip, "display_formatter"):
        return False
    ip.display_formatter.formatters["text/html"].for_type(pd.DataFrame, frame_html)
    return True
