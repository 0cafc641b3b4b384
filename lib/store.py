"""The results store: one folder per grid cell (model, viewpoint, raw|masked, seed).

Each cell holds ``scores.csv`` (image_id, split, label, score, time_ms; floats at full
precision), ``maps.npz`` (float32 anomaly maps as the model produced them, compressed),
``meta.json`` (with the hashes of the manifest rows and the model config the cell used) and,
written last, ``DONE``: the SHA-256 and size of the other three files. Evaluation reads only
this, so re-evaluating never re-runs a model; a cell without DONE is unfinished, and a file
that is missing, truncated or disagrees with DONE is a ``StoreError`` naming the file and cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from lib.fileio import sha256_file, write_bytes, write_csv, write_json

RESULT_FILES = ("scores.csv", "maps.npz", "meta.json")
SCORE_COLUMNS = ("image_id", "split", "label", "score", "time_ms")
STORE_FORMAT = 2  # 1: float16 maps, %.6g scores, DONE = "ok"


class StoreError(ValueError):
    """A cell's stored results cannot be trusted; says which cell and which file."""

    def __init__(self, cell: Cell, path: Path | str, problem: str):
        self.cell, self.path, self.problem = cell, Path(path), problem
        super().__init__(f"results of cell {cell.key}: {self.path}: {problem}")


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


def mark_not_done(store_root, cell: Cell) -> None:
    """Remove DONE before anything of the cell is rewritten: an interruption then leaves it not done."""
    (cell_dir(store_root, cell) / "DONE").unlink(missing_ok=True)


def content_hash(obj) -> str:
    """SHA-256 of a JSON-able object or a DataFrame, independent of key order (for meta.json)."""
    if isinstance(obj, pd.DataFrame):
        text = obj.to_csv(index=False, lineterminator="\n")
    else:
        text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_results(
    store_root, cell: Cell, table: pd.DataFrame, maps: np.ndarray, meta: dict, identity: dict | None = None
) -> Path:
    """Write one cell's outputs losslessly; DONE last, so a crash leaves the cell visibly unfinished.

    ``identity`` (see ``lib.identity``) goes into DONE: the grid re-runs the cell when it changes.
    """
    missing = set(SCORE_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"results table of {cell.key} misses columns {sorted(missing)}")
    maps = np.asarray(maps)
    if maps.ndim != 3 or len(table) != len(maps):
        raise ValueError(f"{cell.key}: {len(table)} result rows but anomaly maps of shape {maps.shape}")
    if table.image_id.duplicated().any():
        raise ValueError(
            f"{cell.key}: image_id {table.image_id[table.image_id.duplicated()].iloc[0]!r} twice"
        )
    d = cell_dir(store_root, cell)
    (d / "DONE").unlink(missing_ok=True)
    write_csv(d / "scores.csv", table[list(SCORE_COLUMNS)], float_format=None)
    buf = io.BytesIO()
    kept = np.float64 if maps.dtype == np.float64 else np.float32  # float16/ints widen exactly
    np.savez_compressed(buf, maps=maps.astype(kept, copy=False))
    write_bytes(d / "maps.npz", buf.getvalue())
    write_json(d / "meta.json", {**meta, "cell": dataclasses.asdict(cell), "store_format": STORE_FORMAT})
    files = {
        name: {"sha256": sha256_file(d / name), "bytes": (d / name).stat().st_size} for name in RESULT_FILES
    }
    done = {"store_format": STORE_FORMAT, "n_images": len(table), "files": files, "identity": identity}
    write_json(d / "DONE", done)
    return d


def _done_record(d: Path, cell: Cell) -> dict:
    path = d / "DONE"
    if not path.is_file():
        raise FileNotFoundError(f"no finished results for {cell.key} under {d.parent.parent.parent.parent}")
    try:
        done = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreError(
            cell,
            path,
            "not a DONE record of this store format (written by an older version? re-run the cell)",
        ) from None
    if not isinstance(done, dict) or done.get("store_format") != STORE_FORMAT or "files" not in done:
        raise StoreError(
            cell,
            path,
            f"store format {done.get('store_format') if isinstance(done, dict) else '?'}, expected {STORE_FORMAT}; re-run the cell",
        )
    return done


def read_results(store_root, cell: Cell, verify: bool = True) -> dict:
    """One cell's table, maps and meta, checked against DONE (hashes), each other and for finiteness."""
    d = cell_dir(store_root, cell)
    done = _done_record(d, cell)
    for name in RESULT_FILES:
        path = d / name
        if not path.is_file():
            raise StoreError(cell, path, "missing")
        want = done["files"].get(name, {})
        size = path.stat().st_size
        if size != want.get("bytes"):
            raise StoreError(
                cell, path, f"{size} bytes, DONE recorded {want.get('bytes')} (truncated or altered)"
            )
        if verify and sha256_file(path) != want.get("sha256"):
            raise StoreError(cell, path, "content differs from the SHA-256 that DONE recorded (altered)")
    try:
        table = pd.read_csv(d / "scores.csv", keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StoreError(cell, d / "scores.csv", f"unreadable CSV: {exc}") from None
    missing = set(SCORE_COLUMNS) - set(table.columns)
    if missing:
        raise StoreError(cell, d / "scores.csv", f"misses columns {sorted(missing)}")
    try:
        with np.load(d / "maps.npz", allow_pickle=False) as z:
            maps = z["maps"]
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError) as exc:
        raise StoreError(cell, d / "maps.npz", f"unreadable anomaly maps: {exc}") from None
    try:
        meta = json.loads((d / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(cell, d / "meta.json", f"invalid JSON: {exc}") from None
    if maps.ndim != 3 or len(maps) != len(table) or len(table) != done.get("n_images"):
        raise StoreError(
            cell,
            d / "maps.npz",
            f"{len(maps)} maps of shape {maps.shape[1:]} for {len(table)} score rows (DONE: {done.get('n_images')})",
        )
    if table.image_id.duplicated().any():
        raise StoreError(
            cell, d / "scores.csv", f"image_id {table.image_id[table.image_id.duplicated()].iloc[0]!r} twice"
        )
    score = pd.to_numeric(table.score, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(score)
    if bad.any():
        raise StoreError(
            cell,
            d / "scores.csv",
            f"image {table.image_id.iloc[int(np.argmax(bad))]!r}: score {table.score.iloc[int(np.argmax(bad))]!r} is not a finite number",
        )
    table["score"] = score
    finite = np.isfinite(maps).reshape(len(maps), -1).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise StoreError(
            cell,
            d / "maps.npz",
            f"image {table.image_id.iloc[i]!r}: anomaly map holds NaN or infinite values",
        )
    return {"table": table, "maps": maps, "meta": meta}


def list_cells(store_root) -> list[Cell]:
    root = Path(store_root)
    if not root.is_dir():
        return []
    return sorted(Cell.from_key(p.parent.relative_to(root).as_posix()) for p in root.glob("*/*/*/*/DONE"))
