"""Underbody passes from a frame stream, found by the template-matching scores (not by files).

Each viewpoint's score rises above the match threshold once per car, peaks and falls. Two
thresholds make that robust to a score hovering at the limit (hysteresis): a viewpoint *enters*
when its score reaches ``enter``, and *leaves* only once it has stayed below ``leave`` (< ``enter``)
for ``min_gap`` consecutive frames. A pass keeps, per viewpoint, the crop of its peak frame. It
closes when every viewpoint has entered and left (complete), or earlier as a *partial* pass when a
viewpoint that already left enters again (the next car), when nothing matched for ``max_gap``
frames, when frames were lost (``lost``), or when the stream ends.

Each frame may carry where it came from (``where``: file name and frame offset in it); a pass
records where its first and last frames came from, which makes its identity (``car_id``) and lets
``inspect`` resume after a restart exactly behind the last closed pass.
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
    below: int = 0  # consecutive frames below the leave threshold


@dataclasses.dataclass
class Pass:
    index: int
    first_frame: int
    last_frame: int
    views: dict[str, ViewPeak]
    complete: bool
    reason: str  # why it closed: "all views", "next car", "gap", "frames lost", "end of stream"
    match_ms: float  # template matching spent on its frames
    started_at: float  # time.time() of its first frame
    first_where: tuple = ()  # (file, offset) of its first frame, when the source says
    last_where: tuple = ()
    frames_lost: int = 0  # frames lost (corrupt video) while it was open

    @property
    def car_id(self) -> str:
        """Stable across restarts: the pass index and where its first frame lies in the stream."""
        where = (
            f"@{self.first_where[0]}:{self.first_where[1]}" if self.first_where else f"@{self.first_frame}"
        )
        return f"{self.index:06d}{where}"


class PassSegmenter:
    """Feed frames in order (``push``); closed passes come back from ``push``, ``lost`` and ``finish``."""

    def __init__(
        self,
        matchers: dict[str, TemplateMatcher],
        threshold: float,
        max_gap: int = 30,
        leave: float | None = None,
        min_gap: int = 3,
        first_index: int = 0,
    ):
        """``threshold``: the enter threshold; ``leave`` (default ``threshold - 0.1``) must be lower."""
        leave = threshold - 0.1 if leave is None else leave
        if max_gap < 1:
            raise ValueError(f"max_gap must be >= 1 frame, got {max_gap}")
        if min_gap < 1:
            raise ValueError(f"min_gap must be >= 1 frame, got {min_gap}")
        if not leave < threshold:
            raise ValueError(f"the leave threshold ({leave}) must be below the enter threshold ({threshold})")
        self.matchers = matchers
        self.threshold = threshold
        self.leave = leave
        self.max_gap = max_gap
        self.min_gap = min_gap
        self.n_passes = first_index
        self._prev_where: tuple = ()
        self._reset()

    def _reset(self):
        self.views: dict[str, ViewPeak] = {}
        self.first = self.last_seen = None
        self.first_where: tuple = ()
        self.frames_lost = 0
        self.match_ms = 0.0
        self.started_at = 0.0

    def _close(self, last_frame: int, reason: str, last_where: tuple) -> Pass:
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
            self.first_where,
            last_where,
            self.frames_lost,
        )
        self.n_passes += 1
        self._reset()
        return p

    def push(self, k: int, frame: np.ndarray, where: tuple = ()) -> list[Pass]:
        t0 = time.perf_counter()
        matches = {v: m.match(frame) for v, m in self.matchers.items()}
        ms = 1e3 * (time.perf_counter() - t0)
        closed = []
        enters = {v for v, r in matches.items() if r.score >= self.threshold}
        if self.first is not None and any(v in self.views and self.views[v].done for v in enters):
            closed.append(self._close(k - 1, "next car", self._prev_where))
        if enters and self.first is None:
            self.first, self.started_at, self.first_where = k, time.time(), tuple(where)
        if self.first is not None:
            self.match_ms += ms
        active = False
        for v, r in matches.items():
            peak = self.views.get(v)
            if peak is None:
                if v in enters:
                    w, h = self.matchers[v].size
                    self.views[v] = ViewPeak(r.score, k, r.x, r.y, crop(frame, r.x, r.y, (w, h)))
                    active = True
            elif not peak.done:
                if r.score >= self.leave:
                    active = True
                    peak.below = 0
                    if r.score > peak.score:
                        w, h = self.matchers[v].size
                        self.views[v] = ViewPeak(r.score, k, r.x, r.y, crop(frame, r.x, r.y, (w, h)))
                else:
                    peak.below += 1
                    peak.done = peak.below >= self.min_gap
        if active:
            self.last_seen = k
        if self.first is not None:
            if all(v in self.views and self.views[v].done for v in self.matchers):
                closed.append(self._close(k, "all views", tuple(where)))
            elif self.last_seen is not None and k - self.last_seen >= self.max_gap:
                closed.append(self._close(k, "gap", tuple(where)))
        self._prev_where = tuple(where)
        return closed

    def lost(self, last_good: int, n: int) -> list[Pass]:
        """``n`` frames were lost after frame ``last_good``. The pass in progress goes on over a short
        loss (it counts the frames) and closes there, partial, when ``n`` reaches ``max_gap``."""
        if self.first is None:
            return []
        if n < self.max_gap:
            self.frames_lost += n
            return []
        self.frames_lost += n
        return [self._close(last_good, "frames lost", self._prev_where)]

    def finish(self, last_frame: int) -> list[Pass]:
        """The stream ended: the pass in progress, if any, as a partial pass."""
        return [self._close(last_frame, "end of stream", self._prev_where)] if self.first is not None else []
