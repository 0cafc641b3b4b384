"""Time, peak memory and exactness of all pixel metrics on a paper-size test set, on one core.

    .venv/bin/python benchmarks/pixel_metrics_speed.py            # 150 maps of 848x480, 4 kinds
    .venv/bin/python benchmarks/pixel_metrics_speed.py --no-sklearn  # skip the (slow) reference

For ordinary maps and the three kinds that broke the old binned metrics (one extreme normal
pixel, softmax-saturated probabilities, log-normal scores) it prints the seconds of pixel AUROC
+ AU-PR + AUPRO + tau* + the counts at tau* (``PixelScores``, built once), the peak memory the
metrics allocate on top of the maps (tracemalloc, which numpy reports to), and the largest
difference from scikit-learn on the same pixels (AUROC, AU-PR, and IoU at tau* from
``precision_recall_curve``). Targets (issue 11): <= 5 s and <= 4 GB.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from lib.evaluate.metrics import PixelScores  # noqa: E402

KINDS = ("ordinary", "outlier", "saturated", "lognormal")


def make_set(kind: str, n: int = 150, w: int = 848, h: int = 480, seed: int = 0):
    """Masks with elliptic blobs on every other image, and maps of one kind."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(n):
        m = np.zeros((h, w), np.uint8)
        if i % 2:
            for _ in range(rng.integers(1, 4)):
                c = (int(rng.integers(40, w - 40)), int(rng.integers(30, h - 30)))
                axes = (int(rng.integers(3, 40)), int(rng.integers(2, 20)))
                cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        noise = rng.standard_normal((h, w), dtype=np.float32)
        signal = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 3) * np.float32(rng.uniform(0.5, 3))
        if kind == "ordinary":
            a = cv2.GaussianBlur(noise, (0, 0), 2) * 3 + signal
        elif kind == "outlier":
            a = np.clip(0.4 + 0.15 * noise + 0.3 * signal, 0, 1)
        elif kind == "saturated":  # logits ~ N(-16, 3) through a float32 sigmoid
            logits = -16 + 3 * noise + 8 * signal
            a = 1 / (1 + np.exp(-logits))
        elif kind == "lognormal":
            a = np.exp(2.5 * noise + signal)
        a = a.astype(np.float32)
        masks.append(m)
        maps.append(a)
    if kind == "outlier":
        maps[0][0, 0] = 1e6  # image 0 has no defect: one normal pixel far above everything
    return masks, maps


def all_metrics(masks, maps) -> dict:
    s = PixelScores(masks, maps)
    tau = s.best_iou_threshold()
    c = s.counts_at(tau)
    return {
        "auroc": s.auroc(),
        "aupr": s.aupr(),
        "aupro": s.aupro(0.3),
        "tau": tau,
        "iou": c["tp"] / (c["tp"] + c["fp"] + c["fn"]),
    }


def sklearn_reference(masks, maps) -> dict:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    y = np.concatenate([m.ravel() for m in masks]).astype(bool)
    s = np.concatenate([a.ravel() for a in maps])
    precision, recall, _ = precision_recall_curve(y, s)
    tp = recall * y.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        fp = np.where(precision > 0, tp / precision - tp, 0.0)
    iou = tp / (y.sum() + fp)
    return {"auroc": roc_auc_score(y, s), "aupr": average_precision_score(y, s), "iou": float(np.nanmax(iou))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn comparison")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(
        f"{args.n} maps of 848x480 ({args.n * 848 * 480 / 1e6:.1f} M pixels), one core, numpy {np.__version__}"
    )
    print(
        f"{'maps':<10} {'seconds':>8} {'peak GB':>8} {'AUROC':>8} {'AU-PR':>8} {'AUPRO':>8} {'IoU@tau*':>9} {'max |diff| vs sklearn':>22}"
    )
    worst_t, worst_m, worst_d = 0.0, 0.0, 0.0
    for kind in KINDS:
        masks, maps = make_set(kind, args.n)
        tracemalloc.start()
        t0 = time.perf_counter()
        out = all_metrics(masks, maps)
        sec = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 1e9
        tracemalloc.stop()
        diff = "not run"
        if not args.no_sklearn:
            ref = sklearn_reference(masks, maps)
            d = max(abs(out[k] - ref[k]) for k in ("auroc", "aupr", "iou"))
            worst_d = max(worst_d, d)
            diff = f"{d:.1e}"
        worst_t, worst_m = max(worst_t, sec), max(worst_m, peak)
        print(
            f"{kind:<10} {sec:8.2f} {peak:8.2f} {out['auroc']:8.4f} {out['aupr']:8.4f} {out['aupro']:8.4f} "
            f"{out['iou']:9.4f} {diff:>22}"
        )
        del masks, maps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        f"worst: {worst_t:.2f} s (target <= 5: {'met' if worst_t <= 5 else 'MISSED'}), "
        f"{worst_m:.2f} GB allocated by the metrics (target <= 4: {'met' if worst_m <= 4 else 'MISSED'}), "
        f"largest difference from scikit-learn {worst_d:.1e}; process peak RSS {rss:.2f} GB "
        "(maps, masks and the scikit-learn reference included)"
    )


if __name__ == "__main__":
    main()
