"""Per-robot alerts over the stream of underbody verdicts (paper 8.4): rules per seam, named by robot.

Two rules, thresholds from a TOML file (``alerts.toml``):

* **k of n**: a seam flagged on at least ``k`` of the last ``n`` underbodies;
* **EWMA**: the seam score standardised by its validation-normal mean and std, clipped, smoothed
  with ``lam``; alarm above ``L`` times the EWMA's stationary standard deviation.

An alert fires when a rule enters its alarm state, not on every underbody while it stays there.
"""

from __future__ import annotations

import collections
import dataclasses
import tomllib
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class AlertConfig:
    k: int = 3
    n: int = 10
    lam: float = 0.2
    L: float = 4.0
    clip: float = 6.0

    def __post_init__(self):
        if not 1 <= self.k <= self.n:
            raise ValueError(f"k_of_n: need 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0 < self.lam <= 1:
            raise ValueError(f"ewma.lam must be in (0, 1], got {self.lam}")
        if self.L <= 0 or self.clip <= 0:
            raise ValueError(f"ewma.L and ewma.clip must be > 0, got {self.L}, {self.clip}")

    @property
    def ewma_limit(self) -> float:
        return self.L * (self.lam / (2 - self.lam)) ** 0.5


def load_alert_config(path) -> AlertConfig:
    """Read ``alerts.toml``; unknown sections or keys and wrong types are errors naming the file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"alert config {p}: {exc}") from None
    known = {"k_of_n": {"k", "n"}, "ewma": {"lam", "L", "clip"}}
    values = {}
    for section, keys in raw.items():
        if section not in known or not isinstance(keys, dict):
            raise ValueError(f"alert config {p}: unknown section [{section}]; known: {sorted(known)}")
        for key, value in keys.items():
            if key not in known[section]:
                raise ValueError(f"alert config {p}: unknown key {section}.{key}")
            want = int if key in ("k", "n") else float
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (want is int and not isinstance(value, int))
            ):
                raise ValueError(f"alert config {p}: {section}.{key} must be a number, got {value!r}")
            values[key] = want(value)
    try:
        return AlertConfig(**values)
    except ValueError as exc:
        raise ValueError(f"alert config {p}: {exc}") from None


class AlertMonitor:
    """Feed one underbody at a time (``update``); returns the alerts it raises."""

    def __init__(self, config: AlertConfig, seams: dict[str, dict]):
        """``seams``: seam -> {"robot", "mean", "std"} (the validation-normal baseline of its score)."""
        self.config = config
        self.seams = seams
        self.history = {s: collections.deque(maxlen=config.n) for s in seams}
        self.ewma = dict.fromkeys(seams, 0.0)
        self.in_alarm = {(s, r): False for s in seams for r in ("k_of_n", "ewma")}

    def update(self, pass_id: int, seam_scores: dict[str, float], flagged: set[str]) -> list[dict]:
        c = self.config
        alerts = []
        for seam, base in self.seams.items():
            if seam not in seam_scores:  # view missing from this pass: the seam was not seen
                continue
            self.history[seam].append(seam in flagged)
            z = (seam_scores[seam] - base["mean"]) / base["std"]
            z = max(-c.clip, min(c.clip, z))
            self.ewma[seam] = c.lam * z + (1 - c.lam) * self.ewma[seam]
            states = {
                "k_of_n": (sum(self.history[seam]) >= c.k, sum(self.history[seam]), c.k),
                "ewma": (self.ewma[seam] > c.ewma_limit, self.ewma[seam], c.ewma_limit),
            }
            for rule, (on, value, limit) in states.items():
                if on and not self.in_alarm[(seam, rule)]:
                    alerts.append(
                        {
                            "pass": pass_id,
                            "robot": base["robot"],
                            "seam": seam,
                            "rule": rule,
                            "value": round(float(value), 4),
                            "limit": round(float(limit), 4),
                            "message": f"robot {base['robot']}: seam {seam} "
                            + (
                                f"flagged on {value} of the last {len(self.history[seam])} underbodies"
                                if rule == "k_of_n"
                                else f"score EWMA {value:.2f} above {limit:.2f} (validation-normal sd units)"
                            ),
                        }
                    )
                self.in_alarm[(seam, rule)] = on
        return alerts
