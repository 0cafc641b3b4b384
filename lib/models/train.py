"""Training glue shared by every model: one grid cell from manifest to results store."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.config import seed_everything
from lib.models.base import AnomalyModel
from lib.models.data import load_images, select
from lib.store import Cell, cell_dir, content_hash, mark_not_done, write_results


def _sync(model) -> None:
    if str(getattr(model, "device", "cpu")).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed_predict(model: AnomalyModel, images: np.ndarray, warmup: int = 2, progress=False):
    """Predict one image at a time (batch 1), timing each; the first ``warmup`` calls are excluded."""
    if len(images) == 0:
        raise ValueError("no images to predict")
    for i in range(min(warmup, len(images))):
        model.predict(images[i : i + 1])
    _sync(model)
    scores, maps, times = [], [], []
    for i in tqdm(range(len(images)), desc="inference (batch 1)", disable=not progress, leave=False):
        t0 = time.perf_counter()
        s, m = model.predict(images[i : i + 1])
        _sync(model)
        times.append((time.perf_counter() - t0) * 1000.0)
        scores.append(float(s[0]))
        maps.append(m[0])
    return np.array(scores), np.stack(maps), np.array(times)


def run_cell(
    model: AnomalyModel, data_root, manifest: pd.DataFrame, cell: Cell, store_root, progress=True
) -> dict:
    """Fit on train normals (validation normals available for calibration), predict val + test, store.

    The cell's DONE goes first, so an interruption anywhere (fit, checkpoint, results) leaves the
    cell not done; DONE is written last and records the cell's identity (``lib.identity``).
    """
    from lib.identity import cell_identity

    mark_not_done(store_root, cell)
    identity = cell_identity(cell, model.config, data_root, manifest)
    seed_everything(cell.seed)
    size = model.input_size
    train_rows = select(manifest, cell.viewpoint, "train", "normal")
    val_normal = select(manifest, cell.viewpoint, "val", "normal")
    train = load_images(data_root, train_rows, size, cell.masked, progress)
    val_n = load_images(data_root, val_normal, size, cell.masked)
    t0 = time.perf_counter()
    history = model.fit(train, val_n)
    fit_s = time.perf_counter() - t0
    evaluated = pd.concat([select(manifest, cell.viewpoint, "val"), select(manifest, cell.viewpoint, "test")])
    images = load_images(data_root, evaluated, size, cell.masked)
    scores, maps, times = timed_predict(model, images, progress=progress)
    table = pd.DataFrame(
        {
            "image_id": evaluated.image_id.to_numpy(),
            "split": evaluated.split.to_numpy(),
            "label": evaluated.label.to_numpy(),
            "score": scores,
            "time_ms": np.round(times, 4),
        }
    )
    model.save(Path(cell_dir(store_root, cell)) / "checkpoint")
    read = pd.concat([train_rows, val_normal, evaluated]).drop_duplicates("image_id")
    meta = {
        "manifest_sha256": content_hash(read.sort_values("image_id").reset_index(drop=True)),
        "manifest_rows": len(read),
        "model_config_sha256": content_hash(dataclasses.asdict(model.config)),
        "model": model.name,
        "input_size": list(size),
        "fit_seconds": round(fit_s, 3),
        "n_train": len(train),
        "history": _jsonable(history),
        "backbone": getattr(model, "backbone_description", "none"),
        "precision": model.precision,
    }
    write_results(store_root, cell, table, maps, meta, identity=identity)
    return {"cell": cell.key, "fit_s": fit_s, "median_ms": float(np.median(times)), "n_eval": len(table)}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def train_grid(
    model_name: str, profile, data_root, manifest, viewpoints, variants, seeds, progress=True, **overrides
):
    """Run every (viewpoint, raw|masked, seed) cell of one model; returns one summary row per cell."""
    from lib.models import REGISTRY, make_model

    if model_name not in REGISTRY:
        raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(REGISTRY)}")
    store_root = Path(data_root) / "results"
    unknown = set(variants) - {"raw", "masked"}
    if unknown:
        raise ValueError(f"variants must be 'raw' and/or 'masked', got {sorted(unknown)}")
    rows = []
    for view in viewpoints:
        for variant in variants:
            for seed in seeds:
                cell = Cell(model_name, view, variant == "masked", int(seed))
                seeded = REGISTRY[model_name].seed_overrides(seed)
                model = make_model(model_name, profile, **seeded, **overrides)
                summary = run_cell(model, data_root, manifest, cell, store_root, progress)
                summary["history"] = model.history
                summary["backbone"] = getattr(model, "backbone_description", "none")
                rows.append(summary)
    return rows
