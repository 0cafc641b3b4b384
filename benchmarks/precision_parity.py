"""bf16 against fp32, per model, on a profile's test split: accuracy parity and speed in one run.

    .venv/bin/python benchmarks/precision_parity.py --data-root data/quick            # every grid model
    .venv/bin/python benchmarks/precision_parity.py --data-root data/quick --models patchcore --views front

For each model and viewpoint, the profile's cell (seed 0, the variant chosen) is trained and evaluated
twice into two temporary results stores, once per precision, same seed, same images. Reported, per
model (view-averaged, then per view):

- image and pixel AUROC (test split, the metric code of notebook 08) and their differences, bf16 - fp32
  (target: |difference| <= 0.01 each);
- the largest anomaly-map difference relative to the fp32 map's range (test images, model resolution);
- Spearman correlation of the image scores;
- ``infer only``: the fp32-trained model predicting in bf16 (same weights): image AUROC difference,
  map difference and Spearman, so that training and inference effects are told apart;
- with ``--seed-floor``: the fp32 cell trained again with seed 1, and its AUROC change: training noise
  alone, the floor against which a trained model's bf16 difference is read;
- fit seconds and median per-image latency (batch 1) in each precision, and their ratios.

A model meets the target when both AUROC differences are within 0.01 in every view; only those get
``auto_bf16 = True`` (lib/models). Prints the CPU line (``lib.precision.describe``) beside the table;
writes the rows as CSV with ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.config import cpu_description, load_profile  # noqa: E402
from lib.dataset.manifest import read_manifest  # noqa: E402
from lib.evaluate import evaluate as ev  # noqa: E402
from lib.evaluate.metrics import roc_auc  # noqa: E402
from lib.models import GRID_MODELS, REGISTRY, make_model  # noqa: E402
from lib.models.data import load_images, select  # noqa: E402
from lib.models.train import run_cell  # noqa: E402
from lib.precision import describe, module_precision  # noqa: E402
from lib.report import markdown_table  # noqa: E402
from lib.store import Cell, read_results  # noqa: E402

TARGET = 0.01


def test_metrics(data_root, store, cell, manifest) -> dict:
    """Image and pixel AUROC on the test split (notebook 08's code) and the test scores and maps."""
    out = ev.load_outputs(data_root, store, cell, manifest)
    rows = ev.evaluate_outputs(cell, out)
    sel = rows[(rows.subset == "test") & (rows.policy == "oracle")].set_index("level")
    res = read_results(store, cell)
    test = (res["table"].split == "test").to_numpy()
    return {
        "image_auroc": float(sel.loc["image", "auroc"]),
        "pixel_auroc": float(sel.loc["pixel", "auroc"]),
        "scores": res["table"].score.to_numpy(float)[test],
        "maps": np.asarray(res["maps"])[test],
    }


def agreement(s32, m32, s16, m16) -> dict:
    """Largest map difference relative to the fp32 map range, and Spearman of the image scores."""
    from scipy.stats import spearmanr

    span = float(m32.max() - m32.min()) or 1.0
    rho = spearmanr(s32, s16).statistic if np.ptp(s32) > 0 and np.ptp(s16) > 0 else float("nan")
    return {"map_diff_rel": float(np.abs(m32 - m16).max() / span), "spearman": float(rho)}


def one_cell(name, view, masked, profile, root, manifest, stores, seed_floor=False) -> dict:
    cls = REGISTRY[name]
    cell = Cell(name, view, masked, 0)
    row = {"model": name, "viewpoint": view, "variant": "masked" if masked else "raw"}
    models = {}
    for prec in ("fp32", "bf16"):
        model = make_model(name, profile, **cls.cell_overrides(profile, root, 0), precision=prec)
        t0 = time.perf_counter()
        summary = run_cell(model, root, manifest, cell, stores[prec], progress=False)
        row[f"fit_s_{prec}"] = summary["fit_s"]
        row[f"ms_{prec}"] = summary["median_ms"]
        row[f"cell_s_{prec}"] = time.perf_counter() - t0
        models[prec] = model
    got = {p: test_metrics(root, stores[p], cell, manifest) for p in ("fp32", "bf16")}
    for level in ("image", "pixel"):
        row[f"{level}_auroc_fp32"] = got["fp32"][f"{level}_auroc"]
        row[f"{level}_auroc_bf16"] = got["bf16"][f"{level}_auroc"]
        row[f"d_{level}_auroc"] = row[f"{level}_auroc_bf16"] - row[f"{level}_auroc_fp32"]
    row.update(
        agreement(got["fp32"]["scores"], got["fp32"]["maps"], got["bf16"]["scores"], got["bf16"]["maps"])
    )
    # the fp32-trained model predicting in bf16: inference alone
    test_rows = select(manifest, view, "test")
    images = load_images(root, test_rows, models["fp32"].input_size, masked)
    net = models["fp32"].net
    s32, m32 = models["fp32"].predict(images)
    with module_precision(net, "bf16"):
        s16, m16 = models["fp32"].predict(images)
    inf = agreement(s32, m32, s16, m16)
    row["infer_map_diff_rel"], row["infer_spearman"] = inf["map_diff_rel"], inf["spearman"]
    y = (test_rows.label == "anomalous").to_numpy()
    row["d_infer_image_auroc"] = roc_auc(y, s16) - roc_auc(y, s32)
    if seed_floor:  # fp32 again with training seed 1: how far training noise alone moves the AUROCs
        seeded = cls.seed_overrides(1)
        if seeded:
            model = make_model(
                name, profile, **{**cls.cell_overrides(profile, root, 0), **seeded}, precision="fp32"
            )
            run_cell(model, root, manifest, cell, stores["seed1"], progress=False)
            other = test_metrics(root, stores["seed1"], cell, manifest)
            for level in ("image", "pixel"):
                row[f"d_seed_{level}_auroc"] = other[f"{level}_auroc"] - row[f"{level}_auroc_fp32"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True, help="a data root with data_manifest.csv (e.g. data/quick)")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--models", default=",".join(m for m in GRID_MODELS if m != "baseline"))
    ap.add_argument("--views", default="front,center,back")
    ap.add_argument("--variant", choices=("raw", "masked"), default="masked")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--seed-floor",
        action="store_true",
        help="also train fp32 with seed 1: the AUROC change training noise alone makes (the floor a "
        "trained model's bf16 difference is read against)",
    )
    ap.add_argument("--out", help="write the per-view rows here (CSV)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    manifest_path = root / "data_manifest.csv"
    if not manifest_path.is_file():
        sys.exit(f"{manifest_path}: no manifest; run the workbook's notebooks 00-03 first (make run)")
    manifest = read_manifest(manifest_path)
    profile = load_profile(args.profile)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        sys.exit(f"--models: unknown {unknown}; choose from {sorted(REGISTRY)}")
    print(cpu_description(), "|", describe(), f"| torch threads {torch.get_num_threads()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="precision-") as tmp:
        stores = {p: Path(tmp) / p for p in ("fp32", "bf16", "seed1")}
        for name in models:
            for view in args.views.split(","):
                t0 = time.perf_counter()
                row = one_cell(
                    name, view, args.variant == "masked", profile, root, manifest, stores, args.seed_floor
                )
                rows.append(row)
                print(
                    f"{name:<14} {view:<7} image AUROC {row['image_auroc_fp32']:.3f} -> {row['image_auroc_bf16']:.3f}, "
                    f"pixel AUROC {row['pixel_auroc_fp32']:.3f} -> {row['pixel_auroc_bf16']:.3f}, "
                    f"map diff {row['map_diff_rel']:.3g}, fit {row['fit_s_fp32']:.1f} -> {row['fit_s_bf16']:.1f} s, "
                    f"latency {row['ms_fp32']:.1f} -> {row['ms_bf16']:.1f} ms ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print()
    print(markdown_table(summary(table)))
    return 0


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: view-averaged AUROCs and differences, worst map difference, lowest Spearman,
    fit and latency ratios bf16 / fp32, and whether the parity target holds in every view."""
    out = []
    for name, g in table.groupby("model", sort=False):
        worst = max(g.d_image_auroc.abs().max(), g.d_pixel_auroc.abs().max())
        floor = (
            f"{g.d_seed_image_auroc.abs().max():.3f} / {g.d_seed_pixel_auroc.abs().max():.3f}"
            if "d_seed_image_auroc" in g and g.d_seed_image_auroc.notna().any()
            else "no training seed"
        )
        out.append(
            {
                "model": name,
                "image AUROC fp32 / bf16": f"{g.image_auroc_fp32.mean():.3f} / {g.image_auroc_bf16.mean():.3f}",
                "pixel AUROC fp32 / bf16": f"{g.pixel_auroc_fp32.mean():.3f} / {g.pixel_auroc_bf16.mean():.3f}",
                "largest abs Δ AUROC (any view)": f"{worst:.4f}",
                "max map diff / range": f"{g.map_diff_rel.max():.3g}",
                "Spearman (min)": f"{g.spearman.min():.4f}",
                "infer-only: max abs Δ image AUROC, map diff, Spearman": (
                    f"{g.d_infer_image_auroc.abs().max():.4f}, {g.infer_map_diff_rel.max():.3g}, "
                    f"{g.infer_spearman.min():.4f}"
                ),
                "seed 1 vs 0 (fp32): max abs Δ image / pixel AUROC": floor,
                "fit s fp32 → bf16": f"{g.fit_s_fp32.sum():.0f} → {g.fit_s_bf16.sum():.0f} ({g.fit_s_bf16.sum() / g.fit_s_fp32.sum():.2f}×)",
                "latency ms fp32 → bf16": f"{g.ms_fp32.median():.1f} → {g.ms_bf16.median():.1f} ({g.ms_bf16.median() / g.ms_fp32.median():.2f}×)",
                "parity (≤ 0.01)": "met" if worst <= TARGET else "missed",
            }
        )
    return pd.DataFrame(out)


if __name__ == "__main__":
    sys.exit(main())
