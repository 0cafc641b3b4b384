"""The notebooks' table display: no row-number column, counts as integers, rates left alone."""

import numpy as np
import pandas as pd
import pytest

from lib import display
from lib.evaluate import evaluate as ev
from lib.evaluate import metrics as M


def test_plain_row_numbers_are_hidden_meaningful_index_kept():
    df = pd.DataFrame({"a": [1, 2]})
    assert display.tidy_frame(df)[1] is False
    assert "<th>0</th>" not in display.frame_html(df)
    assert display.tidy_frame(df.set_index("a"))[1] is True
    assert display.tidy_frame(df.iloc[[1]])[1] is True  # a selection: its row labels say which rows
    wide = pd.DataFrame({"k": ["a", "b"], "v": [1, 2]}).pivot(columns="k", values="v").reset_index(drop=True)
    assert wide.columns.name == "k" and display.tidy_frame(wide)[0].columns.name is None
    assert ">k<" not in display.frame_html(wide)
    named = df.copy()
    named.index.name = "row"
    assert display.tidy_frame(named)[1] is True


def test_counts_become_integers_rates_stay_floats():
    df = pd.DataFrame(
        {
            "fn": [40.0, 3.0, np.nan],
            "recall": [1.0, 0.0, 1.0],
            "auroc": [0.5, 0.75, 1.0],
            "inf": [np.inf, 2.0, 3.0],
        }
    )
    tidy, _ = display.tidy_frame(df)
    assert str(tidy.fn.dtype) == "Int64" and tidy.fn.iloc[0] == 40 and tidy.fn.isna().iloc[2]
    assert (
        tidy.recall.dtype == np.float64 and tidy.auroc.dtype == np.float64 and tidy["inf"].dtype == np.float64
    )
    html = display.frame_html(df)
    assert "40.0" not in html and ">40<" in html
    assert df.fn.dtype == np.float64  # the caller's frame is not changed


def test_install_outside_ipython_is_a_no_op():
    assert display.install() is False


def test_mean_std_counts_and_metrics():
    assert M.mean_std([40.0], counts=True) == "40"
    assert M.mean_std([40, 42], counts=True) == "41.0 ± 1.4"
    assert M.mean_std([1.0]) == "1.000"  # a metric of exactly 1 is still a metric
    t = pd.DataFrame({"m": ["a", "a", "b"], "fn": [3, 4, 5], "share": [0.5, 0.25, 1.0]})
    out = ev.over_seeds(t, ["m"], ["fn", "share"]).set_index("m")
    assert out.loc["b", "fn"] == "5" and out.loc["a", "fn"] == "3.5 ± 0.7"
    assert out.loc["b", "share"] == "1.000" and out.loc["a", "share"] == "0.375 ± 0.177"


def test_model_panels_mark_tau_on_each_colour_bar():
    import matplotlib

    matplotlib.use("Agg")
    from lib import plots

    rng = np.random.default_rng(0)
    img = (rng.random((30, 50, 3)) * 255).astype(np.uint8)
    gt = np.zeros((30, 50), np.uint8)
    gt[10:15, 20:30] = 1
    amap = rng.random((30, 50)).astype(np.float32)
    rows = [("a", img, gt, amap, 0.5, "n"), ("b", img, gt, amap * 3, float("nan"), "")]
    fig = plots.model_panels(rows, "t")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2 and len(fig.axes) == 2 * 4 + 2
    labels = [[t.get_text() for t in bar.get_yticklabels()] for bar in bars]
    assert "tau*" in labels[0] and "tau*" not in labels[1]  # no tau*, no mark
    tick = dict(zip(labels[0], bars[0].get_yticks(), strict=True))["tau*"]
    assert abs(tick - 0.5) < 1e-9
    with pytest.raises(ValueError, match="nothing to show"):
        plots.model_panels([])
    matplotlib.pyplot.close("all")
