"""What a grid cell's results depend on, so that a finished cell is re-used only while it is current.

A cell's identity is the hash of the manifest rows it reads (its viewpoint's rows, which carry
each image's SHA-256, so re-rendered images, a new split or new review decisions change it), of
the ROI masks a masked cell applies, of its resolved model config (files it names, such as backbone
weights or a teacher, by their content) and the package version. ``run_cell`` records it in the
cell's ``DONE``; the grid computes the expected identity before running and re-runs any cell whose
``DONE`` differs, saying why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pandas as pd

import lib
from lib.fileio import sha256_file
from lib.store import Cell, cell_dir, content_hash

#: config fields that name a file: their identity is the file's content, not its path
FILE_FIELDS = ("weights", "teacher_weights")
_FILE_HASHES: dict[tuple, str] = {}


def file_identity(path) -> str:
    """SHA-256 of a file, cached by (path, size, mtime) so big backbone weights are hashed once."""
    p = Path(path)
    if not p.is_file():
        return f"missing:{p.name}"
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(p)
    return _FILE_HASHES[key]


#: config keys added after checkpoints were written, with the value those checkpoints ran at: a checkpoint
#: without the key loads at that value, and a config at that value keeps the identity it had before the key
LEGACY_DEFAULTS = {"precision": "fp32", "padding": False}


def config_identity(config) -> str:
    values = dataclasses.asdict(config)
    for key, old in LEGACY_DEFAULTS.items():  # fields added later, at the value cells before them ran
        if key in values and values[key] == old:  # with: those cells stay current
            values.pop(key)
    for name in FILE_FIELDS:
        if values.get(name):
            values[name] = {"sha256": file_identity(values[name])}
    return content_hash(values)


def cell_rows(manifest: pd.DataFrame, cell: Cell) -> str:
    """The manifest rows a cell reads (every row of its viewpoint), as canonical CSV text.

    Floats at the manifest file's own precision (%.6g), so a manifest in memory and the same
    manifest read back from disk give the same text.
    """
    from lib.dataset.manifest import COLUMNS

    rows = manifest.loc[manifest.viewpoint == cell.viewpoint, list(COLUMNS)].sort_values("image_id")
    return rows.to_csv(index=False, lineterminator="\n", float_format="%.6g", na_rep="")


def cell_identity(cell: Cell, config, data_root, manifest: pd.DataFrame) -> dict:
    rows = cell_rows(manifest, cell)
    roi = ""
    if cell.masked:
        roi_paths = manifest.roi_path[manifest.viewpoint == cell.viewpoint]
        files = sorted({str(p) for p in roi_paths if isinstance(p, str) and p})
        roi = content_hash({p: file_identity(Path(data_root) / p) for p in files})
    return {
        "manifest_rows_sha256": hashlib.sha256(rows.encode("utf-8")).hexdigest(),
        "roi_sha256": roi,
        "model_config_sha256": config_identity(config),
        "package_version": lib.__version__,
    }


REASONS = {
    "manifest_rows_sha256": "manifest rows changed",
    "roi_sha256": "ROI masks changed",
    "model_config_sha256": "model config changed",
    "package_version": "package version changed",
}


#: the reason of a cell that has never run (a first run)
NEW = "new (no results yet)"


def stale_reason(store_root, cell: Cell, expected: dict) -> str | None:
    """None if the cell's DONE matches ``expected``; else why the cell must (re-)run."""
    done = cell_dir(store_root, cell) / "DONE"
    if not done.is_file():
        return NEW
    try:
        recorded = json.loads(done.read_text()).get("identity")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return "DONE unreadable or from an older version"
    if not isinstance(recorded, dict):
        return "DONE records no identity (older version)"
    changed = [REASONS[k] for k in REASONS if recorded.get(k) != expected.get(k)]
    if "package version changed" in changed:
        i = changed.index("package version changed")
        changed[i] += f" ({recorded.get('package_version')} -> {expected.get('package_version')})"
    return "; ".join(changed) or None
