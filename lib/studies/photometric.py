"""Photometric robustness (paper 8.4, "lighting variability"): trained models under graded shifts.

A shift re-lights the run's own **test crops** with the simulator's lighting model
(``lib.acquire.sealant_line``): a gain and gamma (lamp intensity), a blue-against-red tilt (colour
temperature) through ``illumination_lut``, a soft multiplicative shadow band and an additive glare
veil at a per-image place. Each image draws its uniforms from ``(seed, image_id)`` in a fixed order,
every draw whatever the shift (as ``draw_pass_plan`` does), so two models see the same shifted
images and one kind of shift changes nothing else. A level ``s`` scales the draws exactly as the
scene setting of the same name scales a pass (``SceneConfig``): gain ``1 + s*u``, gamma
``1 + s/2*u``, tilt ``s*u``, glare strength and shadow depth ``s*(0.5 + 0.5u)``.

Applied to the crop after rendering, not inside it: the glare's brightening of glossy sealant
(the lamp's reflection in the simulator) has no counterpart here, only its veil; sensor noise is
shifted with the image. A zero shift returns the crop unchanged, so the run's own scores come back
exactly (tested).

The mitigation, per-image illumination normalisation, standardises each colour channel of the crop
to a fixed mean and spread before the model (at training and at test): it cancels a global gain and
colour tilt, not a local shadow or glare.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.acquire.sealant_line import illumination_lut
from lib.evaluate import metrics as M
from lib.fileio import read_image
from lib.masking import apply_roi
from lib.models.data import resize_image, select
from lib.store import Cell, cell_dir, read_results

SHIFT_KINDS = ("lamp_intensity", "colour_temperature", "glare", "shadow")
#: graded levels per kind (the default scene has all four at 0; the old default's per-pass gain
#: spread 0.82-1.15 is about lamp_intensity 0.16 and its colour tilt +-7 % colour_temperature 0.07)
DEFAULT_LEVELS = {
    "lamp_intensity": (0.15, 0.3, 0.45),
    "colour_temperature": (0.05, 0.1, 0.2),
    "glare": (0.25, 0.5, 1.0),
    "shadow": (0.2, 0.4, 0.6),
}
#: frame-space sizes of the simulator's spot and band (``FrameSynth.pass_lighting``) in crop units
#: at the paper's geometry (frame 1280x544, crop 848x480)
_GLARE_SIGMA = (0.05 * 1280 / 848, 0.12 * 544 / 480)
_SHADOW_SIGMA = 0.08 * 1280 / 848
#: the normalisation's targets (grey levels): about the training crops' own mean and spread
NORMALISED_MEAN, NORMALISED_STD = 100.0, 40.0


@dataclasses.dataclass(frozen=True)
class Shift:
    """One shift: a kind of ``SHIFT_KINDS`` and its level (0: none)."""

    kind: str = "none"
    level: float = 0.0

    def __post_init__(self):
        if self.kind != "none" and self.kind not in SHIFT_KINDS:
            raise ValueError(f"unknown shift kind {self.kind!r}; choose one of {SHIFT_KINDS}")
        if not np.isfinite(self.level) or self.level < 0:
            raise ValueError(f"shift level must be a finite number >= 0, got {self.level!r}")
        if self.kind in ("glare", "shadow") and self.level > 1:
            raise ValueError(f"a {self.kind} level is a share of full strength, at most 1, got {self.level}")

    @property
    def is_zero(self) -> bool:
        return self.kind == "none" or self.level == 0

    @property
    def label(self) -> str:
        return "none" if self.is_zero else f"{self.kind} {self.level:g}"


def shift_grid(levels: dict | None = None) -> list[Shift]:
    """The zero shift, then every kind at each of its levels."""
    levels = DEFAULT_LEVELS if levels is None else levels
    return [Shift()] + [Shift(k, float(v)) for k in SHIFT_KINDS for v in levels.get(k, ())]


def _uniforms(image_id: str, seed: int) -> dict:
    """The per-image draws, in a fixed order and all of them whatever the shift."""
    rng = np.random.default_rng([int(seed), zlib.crc32(str(image_id).encode("utf-8"))])
    u_gain, u_gamma, u_colour = rng.uniform(-1, 1, 3)
    u_glare, u_shadow = rng.random(3), rng.random(2)
    return {"gain": u_gain, "gamma": u_gamma, "colour": u_colour, "glare": u_glare, "shadow": u_shadow}


def apply_shift(crop: np.ndarray, shift: Shift, image_id: str, seed: int = 0) -> np.ndarray:
    """``crop`` (H, W, 3 uint8 BGR) re-lit by ``shift``; the same array back when the shift is zero."""
    if shift.is_zero:
        return crop
    u = _uniforms(image_id, seed)
    s = shift.level
    h, w = crop.shape[:2]
    out = crop
    if shift.kind == "shadow":
        depth, sx = s * (0.5 + 0.5 * u["shadow"][0]), u["shadow"][1]
        xx = np.arange(w, dtype=np.float32) / w
        band = np.exp(-(((xx - sx) / _SHADOW_SIGMA) ** 2))
        shade = np.clip(255.0 * (1 - depth * band), 0, 255).astype(np.uint8)
        shade = cv2.merge([np.broadcast_to(shade, (h, w)).copy()] * 3)
        out = cv2.multiply(out, shade, scale=1.0 / 255.0)
    if shift.kind in ("lamp_intensity", "colour_temperature"):
        gain = 1 + s * u["gain"] if shift.kind == "lamp_intensity" else 1.0
        gamma = 1 + 0.5 * s * u["gamma"] if shift.kind == "lamp_intensity" else 1.0
        tilt = s * u["colour"] if shift.kind == "colour_temperature" else 0.0
        out = cv2.LUT(out, illumination_lut(float(gain), float(gamma), float(tilt)))
    if shift.kind == "glare":
        strength, gx, gy = s * (0.5 + 0.5 * u["glare"][0]), u["glare"][1], u["glare"][2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        spot = np.exp(-(((xx / w - gx) / _GLARE_SIGMA[0]) ** 2) - (((yy / h - gy) / _GLARE_SIGMA[1]) ** 2))
        veil = np.clip(120.0 * strength * spot, 0, 255).astype(np.uint8)
        out = cv2.add(out, cv2.merge([veil, veil, veil]))
    return out


def normalise_illumination(crop: np.ndarray) -> np.ndarray:
    """Per-image illumination normalisation: each channel to mean ``NORMALISED_MEAN`` and standard
    deviation ``NORMALISED_STD`` (a flat channel keeps its offset only)."""
    x = crop.astype(np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    std = x.std(axis=(0, 1), keepdims=True)
    y = (x - mean) / np.maximum(std, 1e-3) * NORMALISED_STD + NORMALISED_MEAN
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def load_shifted(
    data_root, rows: pd.DataFrame, size, masked: bool, shift: Shift, seed: int = 0, normalise: bool = False
) -> np.ndarray:
    """Like ``lib.models.data.load_images`` (same reads, ROI and resize, so a zero shift gives the same
    bytes), with the shift applied to the full crop first and, optionally, the normalisation."""
    root = Path(data_root)
    out = np.empty((len(rows), size[1], size[0], 3), np.uint8)
    rois = {}
    for i, r in enumerate(rows.itertuples(index=False)):
        img = read_image(root / r.image_path, cv2.IMREAD_COLOR)
        img = apply_shift(img, shift, r.image_id, seed)
        if normalise:
            img = normalise_illumination(img)
        if masked:
            if r.roi_path not in rois:
                rois[r.roi_path] = read_image(root / r.roi_path, cv2.IMREAD_GRAYSCALE)
            img = apply_roi(img, rois[r.roi_path])
        out[i] = resize_image(img, size)
    return out


def predict_one_by_one(model, images: np.ndarray) -> np.ndarray:
    """Image scores at batch 1, as the grid predicted them (``lib.models.train.timed_predict``)."""
    return np.array([float(model.predict(images[i : i + 1])[0][0]) for i in range(len(images))])


def _row(cell: Cell, shift: Shift, y, s, mitigated: bool, ms: float) -> dict:
    normal = s[~y]
    return {
        "model": cell.model,
        "viewpoint": cell.viewpoint,
        "masked": cell.masked,
        "seed": cell.seed,
        "mitigation": "normalised" if mitigated else "none",
        "kind": shift.kind,
        "level": shift.level,
        "auroc": M.roc_auc(y, s),
        "n_normal": int(len(normal)),
        "n_anomalous": int(y.sum()),
        "ms_per_image": ms,
    }


def budget_threshold(normal_scores, budget_per_1000: float | None = None) -> float:
    """The lowest image threshold that flags at most the budget's share of these (validation) normal
    scores: just above the (k+1)-th highest, k = the false alarms the budget allows (the size study's
    default budget, ``operating_points.DEFAULT_BUDGET``, unless given)."""
    from lib.studies.operating_points import DEFAULT_BUDGET, allowed_false_alarms

    s = np.sort(np.asarray(normal_scores, np.float64))[::-1]
    k = allowed_false_alarms(DEFAULT_BUDGET if budget_per_1000 is None else budget_per_1000, len(s))
    return float(np.nextafter(s[k], np.inf)) if k < len(s) else float("-inf")


def operating_threshold(store_root, cell: Cell) -> float:
    """The cell's plant operating point: ``budget_threshold`` of its stored validation normal scores
    (false alarms at a budget, as a plant sets it, rather than the max-F1 point, which for a weak
    model flags nearly every image and leaves false alarms nowhere to rise)."""
    t = read_results(store_root, cell)["table"]
    return budget_threshold(t.score[(t.split == "val") & (t.label == "normal")].to_numpy(float))


def _score_shifts(
    model, data_root, cell: Cell, rows: pd.DataFrame, shifts, seed: int, thr: float, normalise: bool
):
    """``rows`` (a view's test images) under each shift, scored one by one: AUROC, false alarms per
    1,000 normals at ``thr``, ms per image and the scores; one row per shift."""
    y = (rows.label == "anomalous").to_numpy()
    out = []
    for shift in shifts:
        images = load_shifted(
            data_root, rows, model.input_size, cell.masked, shift, seed, normalise=normalise
        )
        t0 = time.perf_counter()
        s = predict_one_by_one(model, images)
        ms = 1e3 * (time.perf_counter() - t0) / len(images)
        r = _row(cell, shift, y, s, normalise, ms)
        r["false_alarms_per_1000"] = 1000.0 * float((s[~y] >= thr).mean())
        r["scores"] = s
        out.append(r)
    return pd.DataFrame(out)


def shift_cell(
    data_root, manifest: pd.DataFrame, cell: Cell, shifts, seed: int = 0, store_root=None, model=None
) -> pd.DataFrame:
    """One trained cell's test scores under each shift, without retraining: image AUROC and false
    alarms per 1,000 normal underbodies at the cell's operating point (``operating_threshold``,
    chosen on unshifted validation normals)."""
    from lib.models.base import AnomalyModel

    store = Path(store_root) if store_root else Path(data_root) / "results"
    model = model or AnomalyModel.load(cell_dir(store, cell) / "checkpoint")
    rows = select(manifest, cell.viewpoint, "test")
    thr = operating_threshold(store, cell)
    return _score_shifts(model, data_root, cell, rows, shifts, seed, thr, normalise=False)


def stored_test_scores(store_root, cell: Cell, manifest: pd.DataFrame) -> np.ndarray:
    """The cell's stored test scores in the manifest's test order (what a zero shift must give back)."""
    t = read_results(store_root, cell)["table"].set_index("image_id")
    rows = select(manifest, cell.viewpoint, "test")
    return t.loc[rows.image_id, "score"].to_numpy(float)


def shift_study(
    data_root, manifest: pd.DataFrame, cells, shifts, seed: int = 0, progress=True
) -> pd.DataFrame:
    """``shift_cell`` over ``cells``: one row per (cell, shift), with the scores kept in ``scores``."""
    frames = []
    for cell in tqdm(list(cells), desc="photometric shifts", unit="cell", disable=not progress):
        frames.append(shift_cell(data_root, manifest, cell, shifts, seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def mitigated_cell(
    profile, data_root, manifest: pd.DataFrame, cell: Cell, shifts, seed: int = 0
) -> tuple[pd.DataFrame, dict]:
    """The mitigation on one cell: the same model and seed trained on normalised crops, then tested
    under the same shifts (normalised too). Returns the rows and the cost (fit seconds)."""
    from lib.config import seed_everything
    from lib.models import REGISTRY, make_model

    model = make_model(cell.model, profile, **REGISTRY[cell.model].seed_overrides(cell.seed))
    seed_everything(cell.seed)
    size = model.input_size
    train = load_shifted(
        data_root,
        select(manifest, cell.viewpoint, "train", "normal"),
        size,
        cell.masked,
        Shift(),
        normalise=True,
    )
    val = load_shifted(
        data_root,
        select(manifest, cell.viewpoint, "val", "normal"),
        size,
        cell.masked,
        Shift(),
        normalise=True,
    )
    t0 = time.perf_counter()
    model.fit(train, val)
    fit_s = time.perf_counter() - t0
    rows = select(manifest, cell.viewpoint, "test")
    thr = budget_threshold(predict_one_by_one(model, val))  # the same operating point, on its own scores
    rows_out = _score_shifts(model, data_root, cell, rows, shifts, seed, thr, normalise=True)
    return rows_out, {"cell": cell.key, "fit_s": fit_s}


def normalisation_ms(data_root, manifest: pd.DataFrame, viewpoint: str, n: int = 20) -> float:
    """Milliseconds the normalisation adds per crop (median over ``n`` test crops)."""
    rows = select(manifest, viewpoint, "test").head(n)
    times = []
    for r in rows.itertuples(index=False):
        img = read_image(Path(data_root) / r.image_path, cv2.IMREAD_COLOR)
        t0 = time.perf_counter()
        normalise_illumination(img)
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over viewpoints (and seeds) per model, variant, mitigation, shift and level."""
    keys = ["model", "masked", "mitigation", "kind", "level"]
    g = rows.groupby(keys, sort=True)
    return g[["auroc", "false_alarms_per_1000", "ms_per_image"]].mean().reset_index()


def shift_figure(table: pd.DataFrame, metric: str = "auroc"):
    """One panel per kind of shift: ``metric`` against the level, a line per model and variant (raw
    solid, masked dashed); the zero level is every model's unshifted value."""
    import matplotlib.pyplot as plt

    base = table[table.kind == "none"]
    fig, axes = plt.subplots(1, len(SHIFT_KINDS), figsize=(16, 3.6), sharey=True)
    for ax, kind in zip(axes, SHIFT_KINDS, strict=True):
        part = pd.concat([base.assign(kind=kind), table[table.kind == kind]])
        for (model, masked, mit), g in part.groupby(["model", "masked", "mitigation"], sort=True):
            g = g.sort_values("level")
            label = f"{model}{'†' if masked else ''}" + (" +norm" if mit != "none" else "")
            ax.plot(
                g.level,
                g[metric],
                "--" if masked else "-",
                marker="o",
                ms=3,
                label=label,
                lw=2.2 if mit != "none" else 1.2,
            )
        ax.set_title(kind.replace("_", " "))
        ax.set_xlabel("shift level")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel({"auroc": "image AUROC (test)"}.get(metric, "false alarms / 1,000 normals"))
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def stored_rows(store_root, cell: Cell, manifest: pd.DataFrame) -> pd.DataFrame:
    """The zero-shift row of a cell from its stored scores (what ``shift_cell`` with ``Shift()`` gives,
    without predicting again; notebook 11 checks the two are identical on one cell)."""
    rows = select(manifest, cell.viewpoint, "test")
    y = (rows.label == "anomalous").to_numpy()
    t = read_results(store_root, cell)["table"].set_index("image_id")
    s = t.loc[rows.image_id, "score"].to_numpy(float)
    ms = float(t.loc[rows.image_id, "time_ms"].median())
    r = _row(cell, Shift(), y, s, False, ms)
    r["false_alarms_per_1000"] = 1000.0 * float((s[~y] >= operating_threshold(store_root, cell)).mean())
    r["scores"] = s
    return pd.DataFrame([r])


def _shift_job(args) -> pd.DataFrame:
    data_root, manifest, key, shifts, seed, threads = args
    import torch

    torch.set_num_threads(threads)
    return shift_cell(data_root, manifest, Cell.from_key(key), shifts, seed)


def _mitigation_job(args) -> tuple[pd.DataFrame, dict]:
    profile, data_root, manifest, key, shifts, seed, threads = args
    import torch

    torch.set_num_threads(threads)
    return mitigated_cell(profile, data_root, manifest, Cell.from_key(key), shifts, seed)


def run_study(data_root, manifest, cells, shifts, seed: int = 0, workers: int | None = None, progress=True):
    """Every cell under every non-zero shift on ``workers`` processes (one thread each), plus each
    cell's zero-shift row from the store; rows in cell order whatever the number of workers."""
    from lib.parallel import default_workers, ordered_map

    store = Path(data_root) / "results"
    moved = [s for s in shifts if not s.is_zero]
    cells = list(cells)
    workers = workers or default_workers()
    jobs = [(str(data_root), manifest, c.key, moved, seed, GRID_THREADS) for c in cells]
    frames = ordered_map(_shift_job, jobs, workers, desc="photometric shifts", unit="cell", progress=progress)
    out = [pd.concat([stored_rows(store, c, manifest), f]) for c, f in zip(cells, frames, strict=True)]
    return pd.concat(out, ignore_index=True)


def run_mitigation(profile, data_root, manifest, cells, shifts, seed: int = 0, workers=None, progress=True):
    """``mitigated_cell`` for each cell on ``workers`` processes: (rows, cost table)."""
    from lib.parallel import default_workers, ordered_map

    workers = workers or default_workers()
    jobs = [(profile, str(data_root), manifest, c.key, list(shifts), seed, GRID_THREADS) for c in cells]
    res = ordered_map(_mitigation_job, jobs, workers, desc="mitigation", unit="cell", progress=progress)
    return pd.concat([r for r, _ in res], ignore_index=True), pd.DataFrame([c for _, c in res])


def mitigation_table(shifted: pd.DataFrame, mitigated: pd.DataFrame) -> pd.DataFrame:
    """Per variant, kind and level (viewpoints averaged): the model's AUROC and false alarms without
    and with the normalisation, and the gain."""
    keys = ["model", "masked", "kind", "level"]
    cols = ["auroc", "false_alarms_per_1000"]
    base = shifted[shifted.model.isin(mitigated.model.unique())].groupby(keys)[cols].mean()
    mit = mitigated.groupby(keys)[cols].mean()
    t = base.join(mit, lsuffix="", rsuffix="_normalised").reset_index()
    t["auroc_gain"] = t.auroc_normalised - t.auroc
    t["false_alarm_change"] = t.false_alarms_per_1000_normalised - t.false_alarms_per_1000
    return t


def mitigation_cost(store_root, costs: pd.DataFrame, shifted, mitigated, norm_ms: float) -> pd.DataFrame:
    """What the mitigation costs: fit time against the grid cell's, inference per image, and image
    AUROC without any shift (its effect where no shift exists)."""
    import json

    rows = []
    for r in costs.itertuples(index=False):
        cell = Cell.from_key(r.cell)
        meta = json.loads((cell_dir(store_root, cell) / "meta.json").read_text())
        base = shifted[
            (shifted.kind == "none")
            & (shifted.model == cell.model)
            & (shifted.masked == cell.masked)
            & (shifted.viewpoint == cell.viewpoint)
        ].iloc[0]
        mit = mitigated[
            (mitigated.kind == "none")
            & (mitigated.model == cell.model)
            & (mitigated.masked == cell.masked)
            & (mitigated.viewpoint == cell.viewpoint)
        ].iloc[0]
        rows.append(
            {
                "cell": cell.key,
                "fit_s_grid": meta["fit_seconds"],
                "fit_s_normalised": round(r.fit_s, 3),
                "normalise_ms_per_image": round(norm_ms, 2),
                "auroc_unshifted": base.auroc,
                "auroc_unshifted_normalised": mit.auroc,
            }
        )
    return pd.DataFrame(rows)


def shift_examples(data_root, manifest: pd.DataFrame, viewpoint: str, shifts, seed: int = 0):
    """(images, titles): one defective test crop of ``viewpoint`` under each shift."""
    rows = select(manifest, viewpoint, "test", "anomalous").head(1)
    r = rows.iloc[0]
    crop = read_image(Path(data_root) / r.image_path, cv2.IMREAD_COLOR)
    return [apply_shift(crop, s, r.image_id, seed) for s in shifts], [s.label for s in shifts]


def levels_for(profile) -> dict:
    """The graded levels a profile runs: all three of ``DEFAULT_LEVELS`` for ``paper``, the middle and
    the strongest for ``quick`` (its time budget), the strongest only for ``smoke``, and one kind at its
    strongest for a dry run (which proves the path at the paper's sizes, not the effect)."""
    if getattr(profile, "dry_run", False):
        return {"lamp_intensity": DEFAULT_LEVELS["lamp_intensity"][-1:]}
    if profile.name == "smoke":
        return {k: v[-1:] for k, v in DEFAULT_LEVELS.items()}
    if profile.name == "paper":
        return dict(DEFAULT_LEVELS)
    return {k: v[1:] for k, v in DEFAULT_LEVELS.items()}


#: the grid's workers run one thread each (cores / workers), and a convolution summed by another
#: number of threads can differ in its last bits: the study predicts with the same
GRID_THREADS = 1


def zero_shift_check(data_root, manifest: pd.DataFrame, cell: Cell, threads: int = GRID_THREADS) -> dict:
    """Re-predict ``cell``'s test images with no shift (``threads`` torch threads, as the grid) and
    compare with its stored scores: {"identical": bool, "max_difference": float}."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        again = shift_cell(data_root, manifest, cell, [Shift()]).scores.iloc[0]
    finally:
        torch.set_num_threads(before)
    stored = stored_test_scores(Path(data_root) / "results", cell, manifest)
    return {
        "identical": bool(np.array_equal(again, stored)),
        "max_difference": float(np.max(np.abs(again - stored))),
    }


def mitigation_cells(cells, model: str, profile) -> list[Cell]:
    """The cells the mitigation retrains: ``model``'s masked cells (one only in a dry run)."""
    chosen = [c for c in cells if c.model == model and c.masked]
    return chosen[:1] if getattr(profile, "dry_run", False) else chosen
