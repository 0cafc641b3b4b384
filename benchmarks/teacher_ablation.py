"""What the offline teacher distillation buys EfficientAD: distilled teacher vs an untrained (random) PDN.

    python benchmarks/teacher_ablation.py --data-root data/quick [--model efficientad_s] [--workers 2]

The paper's teacher is distilled from WideResNet101 on ImageNet, which we cannot do offline; ours is
distilled from EfficientNet-Lite0 (see lib/models/efficientad/teacher.py). This measures the effect of
that distillation against the floor (a random teacher; 0 distillation iterations), with everything else
as the profile configures it: each viewpoint, masked and raw, seed 0, stores under a temporary folder.
Prints test image AUROC and pixel AUPRO per cell and the mean difference. An ablation to report, not a
setting to choose from: the workbook always uses the distilled teacher.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_cell(args):
    model_name, profile_name, data_root, store, view, masked, random_teacher = args
    import torch

    torch.set_num_threads(1)
    from lib.config import load_profile
    from lib.dataset.manifest import read_manifest
    from lib.evaluate.evaluate import evaluate_outputs, load_outputs
    from lib.models import make_model
    from lib.models.efficientad.teacher import prepare_teacher
    from lib.models.train import run_cell
    from lib.store import Cell

    prof = load_profile(profile_name)
    manifest = read_manifest(Path(data_root) / "data_manifest.csv")
    cell = Cell(model_name, view, masked, 0)
    if random_teacher:
        model = make_model(model_name, prof, teacher_iterations=0)
    else:
        teacher = prepare_teacher(model_name, prof, data_root, manifest, progress=False)
        model = make_model(model_name, prof, teacher_weights=str(teacher))
    run_cell(model, data_root, manifest, cell, store, progress=False)
    m = evaluate_outputs(cell, load_outputs(data_root, store, cell, manifest))
    m = m[(m.subset == "test") & (m.policy == "oracle")]
    return {
        "teacher": "random" if random_teacher else "distilled",
        "view": view,
        "variant": "masked" if masked else "raw",
        "image_auroc": float(m[m.level == "image"].auroc.iloc[0]),
        "pixel_aupro": float(m[m.level == "pixel"].aupro.iloc[0]),
    }


def main():
    import pandas as pd

    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default="data/quick")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--model", default="efficientad_s")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    root = str(Path(args.data_root).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [
            (args.model, args.profile, root, str(Path(tmp) / ("random" if r else "distilled")), v, m, r)
            for r in (False, True)
            for v in ("front", "center", "back")
            for m in (True, False)
        ]
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(one_cell, jobs))
    t = pd.DataFrame(rows)
    print(t.to_string(index=False))
    wide = t.pivot_table(index=["view", "variant"], columns="teacher", values=["image_auroc", "pixel_aupro"])
    for metric in ("image_auroc", "pixel_aupro"):
        d = wide[(metric, "distilled")] - wide[(metric, "random")]
        print(f"{metric}: distilled - random = {d.mean():+.3f} on average over {len(d)} cells")


if __name__ == "__main__":
    main()
