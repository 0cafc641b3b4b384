"""Atomic file writes: a reader never sees a half-written file, a crash loses nothing old."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read without a lasting change: os.umask can only be read by setting it)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str | None = None):
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    The file gets the mode an ordinary ``open()`` would give it (0666 less the umask), not
    mkstemp's private 0600, so a teammate or a worker running as another user can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
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


class DataRootBusy(RuntimeError):
    """Another run holds the data root's lock."""


@contextlib.contextmanager
def data_root_lock(data_root: Path | str, purpose: str = "workbook run"):
    """Hold ``<data_root>/.lock`` for the duration; a second run fails at once naming the holder.

    An OS-level lock (flock): it is released when the holder exits, even if it is killed, so a
    stale lock file never blocks a later run.
    """
    import fcntl
    import socket
    import sys
    import time

    root = ensure_writable_dir(data_root)
    path = root / ".lock"
    fh = open(path, "a+")  # noqa: SIM115 - held open for the duration
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "an unknown process"
            raise DataRootBusy(
                f"data root {str(root)!r} is in use by {holder}; wait for that run to finish or stop it "
                "(two runs on one data root would overwrite each other's files)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(
            f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
            f"({purpose}: {' '.join(sys.argv)[:200]})\n"
        )
        fh.flush()
        yield path
    finally:
        fh.close()
