"""Underbody passes from a frame stream, found by the template-matching scores (not by files).

Each viewpoint's score rises above the match threshold once per car, peaks and falls. A pass
keeps, per viewpoint, the crop of its peak frame. It closes when every viewpoint has risen and
fallen (complete), or earlier as a *partial* pass when a viewpoint already seen rises again (the
next car), when nothing matched for ``max_gap`` frames, or when the stream ends.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from lib.extract.template_matching import TemplateMatcher, crop


@dataclasses.dataclass
class ViewPeak:
    score: float
    frame_index: int
    x: int
    y: int
    crop: np.ndarray
    done: bool = False


@dataclasses.dataclass
class Pass:
    index: int
    first_frame: int
    last_frame: int
    views: dict[str, ViewPeak]
    complete: bool
    reason: str  # why it closed: "all views", "next car", "gap", "end of stream"
    match_ms: float  # template matching spent on its frames
    started_at: float  # time.time() of its first frame


class PassSegmenter:
    """Feed frames in order (``push``); closed passes come back from ``push`` and ``finish``."""

    def __init__(self, matchers: dict[str, TemplateMatcher], threshold: float, max_gap: int = 30):
        if max_gap < 1:
            raise ValueError(f"max_gap must be >= 1 frame, got {max_gap}")
        self.matchers = matchers
        self.threshold = threshold
        self.max_gap = max_gap
        self.n_passes = 0
        self._reset()

    def _reset(self):
        self.views: dict[str, ViewPeak] = {}
        self.first = self.last_seen = None
        self.match_ms = 0.0
        self.started_at = 0.0

    def _close(self, last_frame: int, reason: str) -> Pass:
        done = all(v in self.views and self.views[v].done for v in self.matchers)
        p = Pass(
            self.n_passes,
            self.first,
            last_frame,
            self.views,
            done,
            "all views" if done else reason,
            self.match_ms,
            self.started_at,
        )
        self.n_passes += 1
        self._reset()
        return p

    def push(self, k: int, frame: np.ndarray) -> list[Pass]:
        t0 = time.perf_counter()
        matches = {v: m.match(frame) for v, m in self.matchers.items()}
        ms = 1e3 * (time.perf_counter() - t0)
        closed = []
        above = {v for v, r in matches.items() if r.score >= self.threshold}
        if self.first is not None and any(v in self.views and self.views[v].done for v in above):
            closed.append(self._close(k - 1, "next car"))
        if above and self.first is None:
            self.first, self.started_at = k, time.time()
        if self.first is not None:
            self.match_ms += ms
        for v, r in matches.items():
            peak = self.views.get(v)
            if v in above:
                if peak is None or r.score > peak.score:
                    w, h = self.matchers[v].size
                    self.views[v] = ViewPeak(r.score, k, r.x, r.y, crop(frame, r.x, r.y, (w, h)))
            elif peak is not None:
                peak.done = True
        if above:
            self.last_seen = k
        if self.first is not None:
            if all(v in self.views and self.views[v].done for v in self.matchers):
                closed.append(self._close(k, "all views"))
            elif self.last_seen is not None and k - self.last_seen >= self.max_gap:
                closed.append(self._close(k, "gap"))
        return closed

    def finish(self, last_frame: int) -> list[Pass]:
        """The stream ended: the pass in progress, if any, as a partial pass."""
        return [self._close(last_frame, "end of stream")] if self.first is not None else []
