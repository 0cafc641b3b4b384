"""The results store: one folder per grid cell (model, viewpoint, raw|masked, seed).

Each cell holds ``scores.csv`` (image_id, split, label, score, time_ms), ``maps.npz``
(float16 anomaly maps, compressed), ``meta.json`` and, written last, ``DONE``. Evaluation
reads only this, so re-evaluating never re-runs a model, and a cell without DONE is unfinished.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lib.fileio import write_bytes, write_csv, write_json, write_text


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    model: str
    viewpoint: str
    masked: bool
    seed: int

    @property
    def key(self) -> str:
        return f"{self.model}/{self.viewpoint}/{'masked' if self.masked else 'raw'}/seed{self.seed}"

    @property
    def label(self) -> str:
        """The paper's notation: a dagger marks the masked variant."""
        return f"{self.model}{'†' if self.masked else ''}"

    @classmethod
    def from_key(cls, key: str) -> Cell:
        model, view, variant, seed = key.split("/")
        return cls(model, view, variant == "masked", int(seed.removeprefix("seed")))


def cell_dir(store_root, cell: Cell) -> Path:
    return Path(store_root) / cell.key


def is_done(store_root, cell: Cell) -> bool:
    return (cell_dir(store_root, cell) / "DONE").is_file()


def write_results(store_root, cell: Cell, table: pd.DataFrame, maps: np.ndarray, meta: dict) -> Path:
    """Write one cell's outputs; DONE last, so a crash leaves the cell visibly unfinished."""
    need = {"image_id", "split", "label", "score", "time_ms"}
    missing = need - set(table.columns)
    if missing:
        raise ValueError(f"results table misses columns {sorted(missing)}")
    if len(table) != len(maps):
        raise ValueError(f"{len(table)} result rows but {len(maps)} anomaly maps")
    d = cell_dir(store_root, cell)
    (d / "DONE").unlink(missing_ok=True)
    write_csv(d / "scores.csv", table)
    buf = io.BytesIO()
    np.savez_compressed(buf, maps=np.asarray(maps, dtype=np.float16))
    write_bytes(d / "maps.npz", buf.getvalue())
    write_json(d / "meta.json", {**meta, "cell": dataclasses.asdict(cell)})
    write_text(d / "DONE", "ok\n")
    return d


def read_results(store_root, cell: Cell) -> dict:
    d = cell_dir(store_root, cell)
    if not (d / "DONE").is_file():
        raise FileNotFoundError(f"no finished results for {cell.key} under {store_root}")
    table = pd.read_csv(d / "scores.csv", keep_default_na=False)
    with np.load(d / "maps.npz") as z:
        maps = z["maps"].astype(np.float32)
    return {"table": table, "maps": maps, "meta": json.loads((d / "meta.json").read_text())}


def list_cells(store_root) -> list[Cell]:
    root = Path(store_root)
    if not root.is_dir():
        return []
    return sorted(Cell.from_key(p.parent.relative_to(root).as_posix()) for p in root.glob("*/*/*/*/DONE"))
