"""Atomic file writes: a reader never sees a half-written file, a crash loses nothing old."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str | None = None):
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_image(path: Path | str, image: np.ndarray) -> Path:
    """Write a PNG/JPEG with OpenCV (BGR or single channel), atomically."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise OSError(f"OpenCV could not encode an image for {path}")
    return write_bytes(path, buf.tobytes())


def read_image(path: Path | str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Read an image or raise a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"OpenCV cannot decode image file: {path}")
    return image


def write_csv(path: Path | str, frame, float_format: str | None = "%.6g") -> Path:
    """Write a pandas DataFrame as CSV, byte-stable. ``float_format=None`` keeps full precision
    (shortest round-trip repr, which pandas reads back exactly)."""
    return write_text(path, frame.to_csv(index=False, lineterminator="\n", float_format=float_format))


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def ensure_writable_dir(path: Path | str, what: str = "data root") -> Path:
    """Create ``path`` if needed and check we can write there; name it in the error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise PermissionError(f"{what} {str(path)!r} is not writable: {exc.strerror or exc}") from exc
    return path
