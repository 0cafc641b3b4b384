"""Choose EfficientAD's training budget in a profile on the validation split, never on test.

    python benchmarks/efficientad_budget.py --data-root data/quick --iterations 120,250,400 [--workers 2]

Trains the profile's EfficientAD (its input size, padding, lr and stored teacher) on each viewpoint,
masked (the † variant the claims rest on), seed 0, once per candidate number of iterations, into a
temporary store, and prints each cell's **validation** image AUROC, pixel AUROC and AUPRO (validation
normals + synthetic validation defects; test outputs are written by the cell but never read here) and
its seconds. Pick the budget from this table and the learning test (tests/test_models_learn.py), then
write it into profiles.toml; the choice and the table behind it are in docs/models.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_cell(args):
    model_name, profile_name, data_root, store, view, iterations = args
    import torch

    torch.set_num_threads(1)  # two cells at a time on two cores, as the grid runs them
    from lib.config import load_profile
    from lib.dataset.manifest import read_manifest
    from lib.evaluate.evaluate import evaluate_outputs, load_outputs
    from lib.models import make_model
    from lib.models.efficientad.teacher import prepare_teacher
    from lib.models.train import run_cell
    from lib.store import Cell

    prof = load_profile(profile_name)
    manifest = read_manifest(Path(data_root) / "data_manifest.csv")
    cell = Cell(model_name, view, True, 0)
    teacher = prepare_teacher(model_name, prof, data_root, manifest, progress=False)
    model = make_model(model_name, prof, teacher_weights=str(teacher), iterations=iterations)
    t0 = time.perf_counter()
    run_cell(model, data_root, manifest, cell, Path(store) / str(iterations), progress=False)
    seconds = time.perf_counter() - t0
    m = evaluate_outputs(cell, load_outputs(data_root, Path(store) / str(iterations), cell, manifest))
    m = m[(m.subset == "val") & (m.policy == "oracle")]  # the validation split only
    return {
        "iterations": iterations,
        "view": view,
        "val image AUROC": round(float(m[m.level == "image"].auroc.iloc[0]), 3),
        "val pixel AUROC": round(float(m[m.level == "pixel"].auroc.iloc[0]), 3),
        "val pixel AUPRO": round(float(m[m.level == "pixel"].aupro.iloc[0]), 3),
        "map coverage": model.map_coverage,
        "cell seconds": round(seconds, 1),
    }


def main():
    import pandas as pd

    from lib.config import cpu_description, load_profile
    from lib.dataset.manifest import read_manifest
    from lib.models.efficientad.teacher import prepare_teacher
    from lib.parallel import ordered_map

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="data/quick")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--model", default="efficientad_s")
    ap.add_argument("--iterations", default="120,250,400", help="comma-separated candidate budgets")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.data_root).resolve()
    if not (root / "data_manifest.csv").is_file():
        sys.exit(f"no data_manifest.csv under {root}: run `make run` (or notebooks 00-03) first")
    budgets = [int(b) for b in args.iterations.split(",")]
    print(f"{cpu_description()}; {args.model}, profile {args.profile}, budgets {budgets}", flush=True)
    t0 = time.perf_counter()  # the teacher once, before the cells share it
    prepare_teacher(args.model, load_profile(args.profile), root, read_manifest(root / "data_manifest.csv"))
    print(f"teacher ready in {time.perf_counter() - t0:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [
            (args.model, args.profile, str(root), tmp, v, b)
            for b in budgets
            for v in ("front", "center", "back")
        ]
        rows = ordered_map(one_cell, jobs, workers=args.workers, desc="cells", unit="cell")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    mean = table.groupby("iterations")[
        ["val image AUROC", "val pixel AUROC", "val pixel AUPRO", "cell seconds"]
    ]
    print("\nmean over viewpoints:\n" + mean.mean().round(3).to_string())


if __name__ == "__main__":
    main()
