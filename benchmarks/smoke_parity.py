"""Bit-for-bit parity of the smoke chain: same seeds, same scores and maps, before and after a change.

    .venv/bin/python benchmarks/smoke_parity.py snapshot OUT.json      # run the smoke chain, hash every cell
    .venv/bin/python benchmarks/smoke_parity.py compare A.json B.json  # exit 1 if any cell differs

``snapshot`` runs the whole smoke chain (00-03, every grid model on all views, raw and masked, 08-10)
in a temporary folder, then records per results-store cell the SHA-256 of its image scores (image_id,
split, label, score; not time_ms) and of every anomaly map's bytes. It reads the store with numpy and
pandas only, so the same script runs on any commit. Sequential executor, one torch thread: the
digests do not depend on scheduling.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def digest_store(results: Path) -> dict:
    import numpy as np
    import pandas as pd

    out = {}
    for done in sorted(results.glob("*/*/*/*/DONE")):
        cell = done.parent
        key = str(cell.relative_to(results))
        scores = pd.read_csv(cell / "scores.csv", dtype={"image_id": str})
        scores = scores[["image_id", "split", "label", "score"]]
        h_scores = hashlib.sha256(scores.to_csv(index=False, float_format="%.17g").encode()).hexdigest()
        with np.load(cell / "maps.npz") as maps:
            h = hashlib.sha256()
            for name in sorted(maps.files):
                arr = maps[name]
                h.update(name.encode() + str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
        out[key] = {"scores": h_scores, "maps": h.hexdigest(), "images": len(scores)}
    return out


def snapshot(out_path: str) -> int:
    import torch

    torch.set_num_threads(1)
    from lib.workbook import run_workbook

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        results = run_workbook("smoke", Path(tmp) / "data", Path(tmp) / "runs", progress=False)
        failed = [r for r in results if r["error"]]
        if failed:
            print("failed:", [(r.get("notebook") or r.get("cell"), r["error"]) for r in failed])
            return 1
        cells = digest_store(Path(tmp) / "data" / "results")
    Path(out_path).write_text(json.dumps(cells, indent=1, sort_keys=True) + "\n")
    print(f"{len(cells)} cells hashed in {time.perf_counter() - t0:.0f} s -> {out_path}")
    return 0


def compare(a_path: str, b_path: str) -> int:
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    bad = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"{key}: only in {'A' if key in a else 'B'}")
            bad += 1
            continue
        diff = [k for k in ("scores", "maps", "images") if a[key][k] != b[key][k]]
        if diff:
            print(f"{key}: {', '.join(diff)} differ")
            bad += 1
    same = len(set(a) & set(b)) - sum(1 for k in set(a) & set(b) if a[k] != b[k])
    print(f"{same} of {len(set(a) | set(b))} cells identical bit for bit (scores and maps)")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "snapshot":
        sys.exit(snapshot(sys.argv[2]))
    if len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    sys.exit(__doc__)
