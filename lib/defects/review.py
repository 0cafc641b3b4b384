"""Human review of synthetic defects (paper Figure 4): a static gallery and an interactive reviewer.

Decisions go to ``synthetic/review_decisions.csv`` (accept/reject per synthetic id), which
dataset assembly honours. Under papermill the gallery renders statically and the stored
decisions apply.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib import plots
from lib.defects.decisions import read_review, write_review
from lib.fileio import read_image


def triplet(data_root, row) -> list[np.ndarray]:
    """(original, synthetic defect, GT overlay) of one synthetic row."""
    root = Path(data_root)
    orig = read_image(root / row.source_image, cv2.IMREAD_COLOR)
    made = read_image(root / row.image_path, cv2.IMREAD_COLOR)
    gt = read_image(root / row.mask_path, cv2.IMREAD_GRAYSCALE)
    return [orig, made, plots.overlay_mask(made, gt)]


def gallery(data_root, synth: pd.DataFrame, per_type: int = 1, zoom: bool = True):
    """Figure 4: one row per example, (original, defect, GT), zoomed on the defect."""
    picks = synth.groupby(["defect_type"], sort=True).head(per_type)
    images, titles = [], []
    decisions = read_review(data_root)
    for row in picks.itertuples(index=False):
        trip = triplet(data_root, row)
        if zoom:
            gt = read_image(Path(data_root) / row.mask_path, cv2.IMREAD_GRAYSCALE)
            ys, xs = np.nonzero(gt)
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            trip = [plots.zoom_box(t, box, pad=max(12, (box[2] - box[0]) // 2)) for t in trip]
        images += trip
        state = decisions.get(row.synthetic_id, "accept")
        titles += [f"{row.synthetic_id}: original", f"{row.defect_type} ({state})", "GT mask"]
    return plots.contact_sheet(images, titles, ncols=3, width=12)


def reviewer(data_root, synth: pd.DataFrame):
    """An ipywidgets reviewer: step through defects, accept or reject, save decisions."""
    import ipywidgets as w
    from IPython.display import display

    decisions = {sid: "accept" for sid in synth.synthetic_id}
    decisions.update(read_review(data_root))
    rows = list(synth.itertuples(index=False))
    state = {"i": 0}
    out = w.Output()
    label = w.HTML()
    accept, reject = w.Button(description="accept", button_style="success"), w.Button(description="reject")
    prev, nxt, save = (
        w.Button(description="◀"),
        w.Button(description="▶"),
        w.Button(description="save decisions"),
    )

    def show():
        row = rows[state["i"]]
        label.value = f"<b>{row.synthetic_id}</b> {row.defect_type}, {state['i'] + 1}/{len(rows)}: {decisions[row.synthetic_id]}"
        with out:
            out.clear_output(wait=True)
            fig = plots.contact_sheet(
                triplet(data_root, row), ["original", "defect", "GT"], ncols=3, width=14
            )
            display(fig)
            import matplotlib.pyplot as plt

            plt.close(fig)

    def decide(value):
        decisions[rows[state["i"]].synthetic_id] = value
        state["i"] = min(len(rows) - 1, state["i"] + 1)
        show()

    accept.on_click(lambda _: decide("accept"))
    reject.on_click(lambda _: decide("reject"))
    prev.on_click(lambda _: (state.update(i=max(0, state["i"] - 1)), show()))
    nxt.on_click(lambda _: (state.update(i=min(len(rows) - 1, state["i"] + 1)), show()))
    save.on_click(
        lambda _: (write_review(data_root, decisions), setattr(label, "value", label.value + " — saved"))
    )
    show()
    return w.VBox([w.HBox([prev, accept, reject, nxt, save]), label, out])
