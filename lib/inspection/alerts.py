"""Per-robot alerts over the stream of underbody verdicts (paper 8.4): rules per seam, named by robot.

Two rules, thresholds from a TOML file (``alerts.toml``):

* **k of n**: a seam flagged on at least ``k`` of the last ``n`` underbodies;
* **EWMA**: the seam score standardised by its validation-normal mean and std, clipped, smoothed
  with ``lam``; alarm above ``L`` times the EWMA's stationary standard deviation.

An alert fires when a rule enters its alarm state, not on every underbody while it stays there. A
rule in alarm sends one ``cleared`` message once its condition has been false for ``rearm`` consecutive
underbodies, and only then can it fire again (a seam hovering at the limit does not re-fire every few
cars). The monitor's state round-trips through ``state()`` / ``load_state()`` so that ``inspect``
resumes it after a restart.
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
    clip: float = 3.0
    rearm: int = 5
    baseline: str = "line"  # or "validation": the seam baseline from the bundle (validation normals)
    warmup: int = 50
    spread: str = "sd"  # the line baseline's sd: the sample sd ("sd") or 1.4826 * MAD ("mad")

    def __post_init__(self):
        if self.spread not in ("mad", "sd"):
            raise ValueError(f"ewma.spread must be 'mad' or 'sd', got {self.spread!r}")
        if self.baseline not in ("validation", "line"):
            raise ValueError(f"ewma.baseline must be 'validation' or 'line', got {self.baseline!r}")
        if self.warmup < 5:
            raise ValueError(f"ewma.warmup must be >= 5 underbodies, got {self.warmup}")
        if not 1 <= self.k <= self.n:
            raise ValueError(f"k_of_n: need 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0 < self.lam <= 1:
            raise ValueError(f"ewma.lam must be in (0, 1], got {self.lam}")
        if self.L <= 0 or self.clip <= 0:
            raise ValueError(f"ewma.L and ewma.clip must be > 0, got {self.L}, {self.clip}")
        if self.rearm < 1:
            raise ValueError(f"rearm.cars must be >= 1, got {self.rearm}")
        if self.lam * self.clip >= self.ewma_limit:
            raise ValueError(
                f"ewma: one car alone could fire the alarm: lam * clip = {self.lam} * {self.clip} = "
                f"{self.lam * self.clip:.3f} >= limit L * sqrt(lam / (2 - lam)) = {self.ewma_limit:.3f}; "
                "lower clip or raise L"
            )

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
    known = {
        "k_of_n": {"k", "n"},
        "ewma": {"lam", "L", "clip", "baseline", "warmup", "spread"},
        "rearm": {"cars"},
    }
    rename = {"cars": "rearm"}
    values = {}
    for section, keys in raw.items():
        if section not in known or not isinstance(keys, dict):
            raise ValueError(f"alert config {p}: unknown section [{section}]; known: {sorted(known)}")
        for key, value in keys.items():
            if key not in known[section]:
                raise ValueError(f"alert config {p}: unknown key {section}.{key}")
            if key in ("baseline", "spread"):
                if not isinstance(value, str):
                    raise ValueError(f"alert config {p}: ewma.{key} must be a string, got {value!r}")
                values[key] = value
                continue
            want = int if key in ("k", "n", "cars", "warmup") else float
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (want is int and not isinstance(value, int))
            ):
                raise ValueError(f"alert config {p}: {section}.{key} must be a number, got {value!r}")
            values[rename.get(key, key)] = want(value)
    try:
        return AlertConfig(**values)
    except ValueError as exc:
        raise ValueError(f"alert config {p}: {exc}") from None


RULES = ("k_of_n", "ewma")


class AlertMonitor:
    """Feed one underbody at a time (``update``); returns the alerts and cleared messages it raises."""

    def __init__(self, config: AlertConfig, seams: dict[str, dict]):
        """``seams``: seam -> {"robot", "mean", "std"} (the validation-normal baseline of its score)."""
        self.config = config
        self.seams = seams
        self.history = {s: collections.deque(maxlen=config.n) for s in seams}
        self.ewma = dict.fromkeys(seams, 0.0)
        # per (seam, rule): the id of the open alarm ("" when armed) and its clear cars so far
        self.open = {f"{s}/{r}": "" for s in seams for r in RULES}
        self.clear_run = {f"{s}/{r}": 0 for s in seams for r in RULES}
        # baseline "line": each seam's first `warmup` scores, then their median and MAD-based sd
        self.warm = {s: [] for s in seams} if config.baseline == "line" else {}

    def state(self) -> dict:
        """JSON-able state (history, EWMA, open alarms): what a restart needs to go on."""
        return {
            "history": {s: [bool(x) for x in h] for s, h in self.history.items()},
            "ewma": dict(self.ewma),
            "open": dict(self.open),
            "clear_run": dict(self.clear_run),
            "warm": {s: list(v) for s, v in self.warm.items()},
            "seams": {s: dict(b) for s, b in self.seams.items()},
        }

    def load_state(self, state: dict) -> None:
        for s, h in state["history"].items():
            if s in self.history:
                self.history[s].extend(bool(x) for x in h)
        self.ewma.update({s: float(v) for s, v in state["ewma"].items() if s in self.ewma})
        self.open.update({k: str(v) for k, v in state["open"].items() if k in self.open})
        self.clear_run.update({k: int(v) for k, v in state["clear_run"].items() if k in self.clear_run})
        for s, v in state.get("warm", {}).items():
            if s in self.warm:
                self.warm[s] = [float(x) for x in v]
        for s, b in state.get("seams", {}).items():
            if s in self.seams:
                self.seams[s] = {**self.seams[s], **b}

    def _baseline(self, seam: str, score: float) -> bool:
        """Baseline "line": collect the seam's first scores; True while it is still warming up."""
        w = self.warm.get(seam)
        if w is None or len(w) >= self.config.warmup:
            return False
        w.append(float(score))
        if len(w) == self.config.warmup:
            x = sorted(w)
            med = float(x[len(x) // 2] if len(x) % 2 else (x[len(x) // 2 - 1] + x[len(x) // 2]) / 2)
            dev = sorted(abs(v - med) for v in x)
            mad = dev[len(dev) // 2] if len(dev) % 2 else (dev[len(dev) // 2 - 1] + dev[len(dev) // 2]) / 2
            if self.config.spread == "sd":
                mean = sum(w) / len(w)
                raw = (sum((v - mean) ** 2 for v in w) / (len(w) - 1)) ** 0.5
            else:  # robust to the few defective cars a warm-up may hold
                raw = 1.4826 * mad
            sd = max(raw, 0.05 * abs(med), 1e-6)  # floored as the validation spread is
            self.seams[seam] = {**self.seams[seam], "mean": med, "std": sd, "source": "line"}
        return True

    def update(
        self, pass_id: int, seam_scores: dict[str, float], flagged: set[str], car_id: str = ""
    ) -> list[dict]:
        c = self.config
        out = []
        for seam in list(self.seams):
            if seam not in seam_scores:  # view missing from this pass: the seam was not seen
                continue
            self.history[seam].append(seam in flagged)
            n_flag = sum(self.history[seam])
            states = {"k_of_n": (n_flag >= c.k, n_flag, c.k)}
            if not self._baseline(seam, seam_scores[seam]):  # the EWMA waits for a line baseline
                base = self.seams[seam]
                z = (seam_scores[seam] - base["mean"]) / base["std"]
                z = max(-c.clip, min(c.clip, z))
                self.ewma[seam] = c.lam * z + (1 - c.lam) * self.ewma[seam]
                states["ewma"] = (self.ewma[seam] > c.ewma_limit, self.ewma[seam], c.ewma_limit)
            base = self.seams[seam]
            for rule, (on, value, limit) in states.items():
                key = f"{seam}/{rule}"
                common = {
                    "pass": pass_id,
                    "car_id": car_id,
                    "robot": base["robot"],
                    "seam": seam,
                    "rule": rule,
                    "value": round(float(value), 4),
                    "limit": round(float(limit), 4),
                }
                if not self.open[key]:
                    if on:
                        self.open[key] = f"{seam}/{rule}/{pass_id}"
                        self.clear_run[key] = 0
                        what = (
                            f"flagged on {value} of the last {len(self.history[seam])} underbodies"
                            if rule == "k_of_n"
                            else f"score EWMA {value:.2f} above {limit:.2f} (validation-normal sd units)"
                        )
                        out.append(
                            {
                                **common,
                                "kind": "alert",
                                "alert_id": self.open[key],
                                "message": f"robot {base['robot']}: seam {seam} {what}",
                            }
                        )
                    continue
                self.clear_run[key] = 0 if on else self.clear_run[key] + 1
                if self.clear_run[key] >= c.rearm:
                    out.append(
                        {
                            **common,
                            "kind": "cleared",
                            "alert_id": self.open[key],
                            "message": f"robot {base['robot']}: seam {seam} {rule} alarm cleared "
                            f"({c.rearm} underbodies in a row within the limit); re-armed",
                        }
                    )
                    self.open[key], self.clear_run[key] = "", 0
        return out
