"""Small generated data shared by tests."""

import numpy as np


def toy_images(n, seed=0, defect=False):
    """Aligned 'crops': a fixed pattern plus noise; a defect is a bright square at (20, 30)."""
    rng = np.random.default_rng(seed)
    base = (np.indices((48, 64)).sum(axis=0) % 16 * 8).astype(np.float32)
    out = np.empty((n, 48, 64, 3), np.uint8)
    for i in range(n):
        img = base[..., None] + rng.normal(0, 3, (48, 64, 3))
        if defect:
            img[20:26, 30:36] += 90
        out[i] = np.clip(img, 0, 255)
    return out


def baseline_cell_fn(cell, profile, data_root, runs_dir, notebook_dir):
    """A grid cell that trains the Gaussian baseline directly (no notebook) into the data root's store.

    If ``runs_dir/kill-<model>-<viewpoint>`` exists, the worker deletes it and kills itself with
    SIGKILL in the middle of the cell's predictions (fault injection; the re-run then finishes).
    """
    import os
    import signal
    from pathlib import Path

    from lib.dataset.manifest import read_manifest
    from lib.models import GaussianBaseline
    from lib.models.train import run_cell

    root, runs = Path(data_root), Path(runs_dir)
    manifest = read_manifest(root / "data_manifest.csv")
    model = GaussianBaseline(input_size=(106, 60))
    flag = runs / f"kill-{cell.model}-{cell.viewpoint}"
    if flag.exists():
        predict = model.predict
        calls = []

        def dying_predict(images):
            calls.append(1)
            if len(calls) == 5:
                flag.unlink()
                print("about to be killed mid-cell", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return predict(images)

        model.predict = dying_predict
    run_cell(model, root, manifest, cell, root / "results", progress=False)
    return {"cell": cell.key, "error": None, "html": None, "seconds": 0.0}
