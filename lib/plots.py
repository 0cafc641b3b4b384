"""Figures shared by the notebooks: contact sheets, mask overlays, annotated crops."""

from __future__ import annotations

import cv2
import matplotlib.pyplot as plt
import numpy as np


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV BGR (or grey) -> RGB for matplotlib."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image[..., ::-1]


def overlay_mask(image: np.ndarray, mask: np.ndarray, colour=(0, 0, 255), alpha: float = 0.45, contour=True):
    """Blend a binary mask onto a BGR image, with its contour drawn for small regions."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    m = mask > 0
    if m.shape != out.shape[:2]:
        raise ValueError(f"mask shape {m.shape} differs from image shape {out.shape[:2]}")
    out[m] = (out[m] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
    if contour and m.any():
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cs, -1, colour, 1)
    return out


def contact_sheet(images, titles=None, ncols: int = 4, width: float = 16.0, suptitle: str | None = None):
    """A grid of images (BGR or grey) with optional titles; returns the figure."""
    images = list(images)
    if not images:
        raise ValueError("contact_sheet: no images given")
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    h, w = images[0].shape[:2]
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, width / ncols * h / w * nrows + 0.4 * nrows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for k, img in enumerate(images):
        ax = axes.ravel()[k]
        ax.imshow(to_rgb(img), cmap="gray" if img.ndim == 2 else None)
        if titles is not None:
            ax.set_title(str(titles[k]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def zoom_box(image: np.ndarray, bbox, pad: int = 12, size: int = 160) -> np.ndarray:
    """Crop around bbox (x0 y0 x1 y1) with padding and scale to ``size`` px tall (nearest)."""
    x0, y0, x1, y1 = (int(v) for v in bbox)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    crop = image[y0:y1, x0:x1]
    f = size / max(1, crop.shape[0])
    return cv2.resize(crop, (max(1, int(crop.shape[1] * f)), size), interpolation=cv2.INTER_NEAREST)


def variation_figure(crop_a: np.ndarray, crop_b: np.ndarray, std_map: np.ndarray, roi: np.ndarray):
    """Two normal cars side by side and the per-pixel std across cars with the ROI outlined."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.4))
    for ax, img, title in zip(axes, (crop_a, crop_b), ("normal car A", "normal car B"), strict=False):
        ax.imshow(to_rgb(img))
        ax.set_title(title)
        ax.axis("off")
    im = axes[2].imshow(std_map, cmap="magma")
    axes[2].contour(roi > 0, [0.5], colors="cyan", linewidths=0.5)
    axes[2].set_title("std across cars (ROI in cyan)")
    axes[2].axis("off")
    fig.colorbar(im, ax=axes[2])
    return fig


def score_timeline(scores, pass_ids, threshold: float):
    """Template-matching score over time for each viewpoint template (one panel per pass)."""
    pass_ids = list(pass_ids)
    fig, axes = plt.subplots(1, len(pass_ids), figsize=(5 * len(pass_ids), 3), squeeze=False)
    for ax, pid in zip(axes[0], pass_ids, strict=True):
        s = scores[scores.pass_id == pid]
        for view, g in s.groupby("viewpoint"):
            ax.plot(g.frame_index, g.score, label=view)
        ax.axhline(threshold, color="k", ls="--", lw=0.8, label="threshold")
        ax.set_title(f"pass {pid}")
        ax.set_xlabel("frame")
        ax.set_ylabel("TM_CCOEFF_NORMED")
        ax.set_ylim(-0.3, 1.0)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap_panels(rows, title: str | None = None):
    """Rows of (image BGR, GT mask, {name: anomaly map}) -> input | GT | one heatmap per model."""
    rows = list(rows)
    if not rows:
        raise ValueError("heatmap_panels: nothing to show")
    names = list(rows[0][2])
    ncols = 2 + len(names)
    h, w = rows[0][0].shape[:2]
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(3.2 * ncols, 3.2 * h / w * len(rows) + 0.5), squeeze=False
    )
    # one colour scale per model across the rows, so heatmaps compare between images
    scale = {
        n: (min(float(r[2][n].min()) for r in rows), max(float(r[2][n].max()) for r in rows)) for n in names
    }
    for i, (img, gt, maps) in enumerate(rows):
        axes[i][0].imshow(to_rgb(img))
        axes[i][1].imshow(to_rgb(overlay_mask(img, gt)))
        for j, name in enumerate(names):
            axes[i][2 + j].imshow(to_rgb(img))
            vmin, vmax = scale[name]
            axes[i][2 + j].imshow(maps[name], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
            if i == 0:
                axes[i][2 + j].set_title(name, fontsize=9)
        if i == 0:
            axes[i][0].set_title("input", fontsize=9)
            axes[i][1].set_title("ground truth", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def model_panels(rows, title: str | None = None, width: float = 13.0):
    """One row per model: input | ground truth | anomaly map with its colour bar | map thresholded at
    tau*. ``rows``: (label, image BGR, GT mask, anomaly map, tau, note). Each map is shown on its own
    scale, min to max of that map, with tau* marked on the colour bar; the thresholded panel paints
    the pixels >= tau* red and outlines the ground truth in green."""
    rows = list(rows)
    if not rows:
        raise ValueError("model_panels: nothing to show")
    h, w = rows[0][1].shape[:2]
    panel_h = width / 4 * h / w
    fig, axes = plt.subplots(len(rows), 4, figsize=(width, panel_h * len(rows) + 0.9), squeeze=False)
    for i, (label, img, gt, amap, tau, note) in enumerate(rows):
        rgb = to_rgb(img)
        axes[i][0].imshow(rgb)
        axes[i][0].set_ylabel(label, fontsize=11, rotation=0, ha="right", va="center")
        axes[i][1].imshow(to_rgb(overlay_mask(img, gt, colour=(0, 200, 0))))
        lo, hi = float(amap.min()), float(amap.max())
        shown = axes[i][2].imshow(amap, cmap="jet", vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
        bar = fig.colorbar(shown, ax=axes[i][2], fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=8)
        if np.isfinite(tau) and lo <= tau <= hi:
            # tau* as a thick line across the bar and its own bold tick: visible on any colour
            bar.ax.axhline(tau, color="white", lw=4)
            bar.ax.axhline(tau, color="magenta", lw=2)
            span = (hi - lo) or 1.0
            ends = [t for t in (lo, hi) if abs(t - tau) > 0.12 * span]
            bar.set_ticks(sorted([*ends, tau]))
            bar.set_ticklabels([("tau*" if t == tau else f"{t:.3g}") for t in sorted([*ends, tau])])
            for text in bar.ax.get_yticklabels():
                if text.get_text() == "tau*":
                    text.set_color("magenta")
                    text.set_fontweight("bold")
        pred = (amap >= tau).astype(np.uint8) if np.isfinite(tau) else np.zeros_like(gt, np.uint8)
        axes[i][3].imshow(
            to_rgb(overlay_mask(overlay_mask(img, pred, colour=(0, 0, 255)), gt, (0, 200, 0), 0.0))
        )
        tau_text = f"tau* {tau:.3g}" if np.isfinite(tau) else "no tau*"
        axes[i][3].set_title(f"{note}, {tau_text}" if note else tau_text, fontsize=9)
    for j, head in enumerate(
        (
            "input",
            "ground truth",
            "anomaly map, own min-max\n(magenta tick: tau*)",
            "map >= tau* (red), GT (green)",
        )
    ):
        axes[0][j].set_title(
            head + (f"\n{axes[0][j].get_title()}" if axes[0][j].get_title() else ""), fontsize=10, pad=8
        )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def training_curves(summaries, keys=("loss", "p_true"), labels=None, xlabel: str = "epoch"):
    """One panel per key of ``history['curve']`` (list of dicts per epoch), one line per cell."""
    import pandas as pd

    labels = labels or {"loss": "loss", "p_true": "share of normal patches scored > margin"}
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 3.2), squeeze=False)
    for s in summaries:
        curve = pd.DataFrame(s["history"]["curve"])
        for ax, key in zip(axes[0], keys, strict=True):
            ax.plot(curve.index + 1, curve[key], label=s["cell"])
    for ax, key in zip(axes[0], keys, strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(labels.get(key, key))
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def interval_plot(iv, level: str, metric: str, title: str = ""):
    """Point and 95% interval per model variant (rows) and viewpoint (colours): where overlap shows."""
    sel = iv[(iv.level == level) & (iv.metric == metric)]
    if sel.empty:
        raise ValueError(f"interval_plot: no {level} {metric} rows")
    labels = sorted(sel.label.unique())
    views = sorted(sel.viewpoint.unique())
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(labels) * len(views) + 1.0))
    for k, view in enumerate(views):
        v = sel[sel.viewpoint == view].set_index("label").reindex(labels)
        y = np.arange(len(labels)) * (len(views) + 1) + k
        ax.errorbar(
            v["mean"],
            y,
            # a percentile interval need not hold its point (and a one-point interval has rounding noise)
            xerr=[(v["mean"] - v.ci_low).clip(lower=0), (v.ci_high - v["mean"]).clip(lower=0)],
            fmt="o",
            ms=4,
            capsize=2,
            label=view,
        )
    ax.set_yticks(np.arange(len(labels)) * (len(views) + 1) + (len(views) - 1) / 2)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    name = f"{level} {dict(auroc='AUROC', aupr='AU-PR', aupro='AUPRO').get(metric, metric)}"
    ax.set_xlabel(f"{name} (95% bootstrap interval over test underbodies)")
    ax.set_title(title or f"{name}, test split")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> str:
    """Write ``fig`` as PNG atomically (for the report's inline figures); returns the path."""
    from lib.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    return str(path)


def inspection_timeline(records: list[dict], matched, outcomes, cars, seams, baseline: dict):
    """Per-seam scores (standardised by their validation-normal baseline) over the stream's
    underbodies, the drift episode shaded, defective cars dotted and alerts marked (green: true,
    red: false alarm). ``matched``: the records' rows joined to their cars (same order)."""
    fig, ax = plt.subplots(figsize=(14, 4.5))
    x = matched.car.to_numpy()
    for seam in seams:
        b = baseline[seam]
        z = [
            next(
                (
                    (view["seam_scores"][seam] - b["mean"]) / b["std"]
                    for view in r["views"].values()
                    if seam in view["seam_scores"]
                ),
                np.nan,
            )
            for r in records
        ]
        ax.plot(x, z, lw=1.2, label=seam)
    drift = cars[cars.drift == 1]
    if len(drift):
        ax.axvspan(
            drift.car.min() - 0.5, drift.car.max() + 0.5, color="orange", alpha=0.15, label="drift episode"
        )
    for c in cars[(cars.defective == 1) & (cars.drift == 0)].car:
        ax.axvline(c, color="grey", lw=0.6, ls=":")
    top = ax.get_ylim()[1]
    if len(outcomes):
        for rule, marker in (("k_of_n", "v"), ("ewma", "^")):
            sel = outcomes[outcomes.rule == rule]
            for ok, colour in ((True, "green"), (False, "red")):
                s = sel[sel["true"] == ok]
                if len(s):
                    label = f"{rule} alert ({'true' if ok else 'false'})"
                    ax.scatter(
                        s.car, np.full(len(s), top), marker=marker, color=colour, s=50, label=label, zorder=3
                    )
    ax.set_xlabel("underbody (stream order); dotted lines: single defects")
    ax.set_ylabel("seam score (validation-normal sd units)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def calibration_curve(calibration: dict, chosen: float | None = None):
    """The simulator's knob against raw PatchCore's validation image AUROC (per view and mean), with the
    paper's value, the accepted band and the default marked."""
    pts = sorted(calibration["points"], key=lambda p: p["nuisance"])
    x = [p["nuisance"] for p in pts]
    fig, ax = plt.subplots(figsize=(7, 4))
    for view, style in (("front", ":"), ("center", "--"), ("back", "-.")):
        ax.plot(x, [p[f"val_auroc_{view}"] for p in pts], style, marker=".", alpha=0.6, label=view)
    ax.plot(x, [p["val_auroc_mean"] for p in pts], "k-", marker="o", lw=2, label="mean over views")
    lo, hi = calibration["accept_band"]
    ax.axhspan(lo, hi, color="tab:green", alpha=0.12, label=f"accepted {lo}-{hi}")
    ax.axhline(calibration["target"], color="tab:green", lw=1, label=f"paper {calibration['target']}")
    chosen = calibration["chosen_nuisance"] if chosen is None else chosen
    ax.axvline(chosen, color="tab:red", lw=1, label=f"default {chosen:g}")
    ax.set_xlabel("scene nuisance (per-car variation at manual sites, stray-mark rate)")
    ax.set_ylabel("raw PatchCore validation image AUROC")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"calibration on {calibration['profile']} ({calibration['cpu']})", fontsize=9)
    fig.tight_layout()
    return fig
