"""Time of the pixel metrics on a paper-size test set (150 images at 848x480), in one run.

    .venv/bin/python benchmarks/pixel_metrics_speed.py

Prints seconds for pixel AUROC + AU-PR + AUPRO + tau* sweep, and for scikit-learn's
roc_auc_score alone on the same pixels (the ratio shows what the histogram sweep saves).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import roc_auc_score

from lib.evaluate.metrics import pixel_metrics


def main(n: int = 150, w: int = 848, h: int = 480) -> None:
    rng = np.random.default_rng(0)
    masks, maps = [], []
    for i in range(n):
        m = np.zeros((h, w), np.uint8)
        if i % 2:
            y0, x0 = rng.integers(0, h - 40), rng.integers(0, w - 80)
            m[y0 : y0 + rng.integers(4, 40), x0 : x0 + rng.integers(10, 80)] = 1
        masks.append(m)
        maps.append((rng.random((h, w), dtype=np.float32) + 0.6 * m).astype(np.float32))
    t0 = time.perf_counter()
    out = pixel_metrics(masks, maps)
    ours = time.perf_counter() - t0
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([a.ravel() for a in maps])
    t1 = time.perf_counter()
    ref = roc_auc_score(y, s)
    sk = time.perf_counter() - t1
    print(f"{n} images at {w}x{h} = {y.size / 1e6:.1f} M pixels")
    print(f"lib pixel_metrics (AUROC, AU-PR, AUPRO, tau* sweep, IoU/P/R/F1): {ours:.2f} s")
    print(f"sklearn roc_auc_score alone: {sk:.2f} s; AUROC ours {out['auroc']:.5f} vs sklearn {ref:.5f}")
    print(f"ratio ours/sklearn-AUROC-only: {ours / sk:.2f}")


if __name__ == "__main__":
    main()
