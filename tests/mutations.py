"""Mutation check for the metric, statistics, claims, store, inspection, export and PDN-geometry
tests: each plausible mistake must fail a test.

    .venv/bin/python tests/mutations.py            # all mutations, ~5 min on 2 cores
    .venv/bin/python tests/mutations.py 3 5        # only mutations 3 and 5

Copies ``lib`` and ``tests`` to a temporary folder, applies one mistake at a time to the
implementation (a plain text substitution that must match exactly once), runs the metric and
store tests there and reports whether they caught it. Exit status 1 if any mutation survives.
Not collected by pytest (its name does not start with ``test_``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_metrics.py", "tests/test_statistics.py", "tests/test_claims.py", "tests/test_store.py"]
M, S, E = "lib/evaluate/metrics.py", "lib/store.py", "lib/evaluate/evaluate.py"
BO, SG, CL = "lib/evaluate/bootstrap.py", "lib/evaluate/significance.py", "lib/evaluate/claims.py"
AL, SE, IN = "lib/inspection/alerts.py", "lib/inspection/segment.py", "lib/inspection/inspector.py"
EV, FE = "lib/inspection/evaluate.py", "lib/models/features.py"
PD = "lib/models/efficientad/torch_model.py"
GEO = ["tests/test_model_fidelity.py", "-k", "efficientad_map or efficientad_warns or exact_geometry"]
FAST = [
    "tests/test_inspection.py",
    "-k",
    "segmenter and not rendered or ewma or k_of_n or fusion or outcomes",
]

# (description, file, exact text, replacement[, the pytest arguments that must catch it; default TESTS])
MUTATIONS = [
    (
        "AUPRO without the interpolation at FPR 0.3",
        M,
        "area = np.sum(self.weight * (full + partial))",
        "area = np.sum(self.weight * full)",
    ),
    (
        "AUPRO overlap per pixel instead of per region",
        M,
        "weight[:] = 1.0 / (np.asarray(sizes, np.float64)[region] * self.n_regions)",
        "weight[:] = 1.0 / self.n_pos",
    ),
    ("4- instead of 8-connected regions", M, "connectivity=8", "connectivity=4"),
    (
        "Benjamini-Hochberg without correction",
        M,
        "scaled = q[order] * m / np.arange(1, m + 1)",
        "scaled = q[order]",
    ),
    (
        "tau*: the lowest of tied-IoU thresholds",
        M,
        "best = np.flatnonzero(iou == iou.max())[-1]",
        "best = np.flatnonzero(iou == iou.max())[0]",
    ),
    (
        "counts at a threshold leave out pixels tied with it",
        M,
        'tp = self.n_pos - int(np.searchsorted(self.pos, t, side="left"))',
        'tp = self.n_pos - int(np.searchsorted(self.pos, t, side="right"))',
    ),
    (
        "AUROC counts ties as wins",
        M,
        "np.sum(self.count * (self.neg_below + self.neg_at_or_below))",
        "np.sum(self.count * 2 * self.neg_below)",
    ),
    (
        "AU-PR leaves tied normal pixels out of precision",
        M,
        "fp = self.n_neg - self.neg_below  # normal",
        "fp = self.n_neg - self.neg_at_or_below  # normal",
    ),
    ("AUPRO tied step counted as a full step", M, "ramp / 2 + (L - b)", "ramp + (L - b)"),
    ("threshold compared after rounding to float32", M, "if float(f) < t:", "if False:"),
    ("NaN maps pass the finite check", M, "if not np.isfinite(a).all():", "if False:"),
    (
        "maps stored as float16",
        S,
        "kept = np.float64 if maps.dtype == np.float64 else np.float32",
        "kept = np.float16",
    ),
    ("scores stored as %.6g", S, "float_format=None)", 'float_format="%.6g")'),
    ("no hash check on read", S, 'if verify and sha256_file(path) != want.get("sha256"):', "if False:"),
    ("no size check on read", S, 'if size != want.get("bytes"):', "if False:"),
    ("non-finite maps accepted by the store", S, "if not finite.all():", "if False:"),
    ("a cell lacking manifest images is evaluated", E, "if lacking:", "if False:"),
    ("bootstrap AUPRO: tied step as a full step", BO, "ramp / 2 + (L - bb)", "ramp + (L - bb)"),
    (
        "bootstrap pixel AUROC: defect pixels not weighted by their image's count",
        BO,
        "w_pix = wb[:, self.owner].T",
        "w_pix = np.ones((len(self.owner), len(wb)))",
    ),
    (
        "bootstrap draws underbodies across strata",
        BO,
        "counts[b] += np.bincount(members[draws[b]], minlength=len(uniq))",
        "counts[b] += np.bincount(rng.integers(0, len(uniq), len(members)), minlength=len(uniq))",
    ),
    ("DeLong ignores the correlation of the AUROCs", SG, "- 2 * cov[0, 1]", "- 0 * cov[0, 1]"),
    ("DeLong ranks ties in order", SG, 'method="average"', 'method="ordinal"'),
    (
        "family p-values not corrected",
        SG,
        'zip(rows, M.benjamini_hochberg([r["p"] for r in rows]), strict=True)',
        'zip(rows, [r["p"] for r in rows], strict=True)',
    ),
    ("t-test over fewer than 3 seeds", SG, "MIN_SEEDS_FOR_T = 3", "MIN_SEEDS_FOR_T = 1"),
    (
        "size verdict ignores zero",
        CL,
        "return REPRODUCED if (hi < 0 or lo > 0) else INCONCLUSIVE",
        "return REPRODUCED",
    ),
    ("masking change with the sign flipped", CL, "100.0 * (m0 - r0) / r0", "100.0 * (r0 - m0) / r0"),
    # the inspection loop and the export (fast tests only: no model training, no stream rendering)
    (
        "EWMA limit without the square root",
        AL,
        "(self.lam / (2 - self.lam)) ** 0.5",
        "(self.lam / (2 - self.lam))",
        FAST,
    ),
    (
        "k of n fires one flag late",
        AL,
        "sum(self.history[seam]) >= c.k",
        "sum(self.history[seam]) > c.k",
        FAST,
    ),
    (
        "an alert on every underbody in alarm",
        AL,
        "if on and not self.in_alarm[(seam, rule)]:",
        "if on:",
        FAST,
    ),
    ("EWMA without clipping", AL, "z = max(-c.clip, min(c.clip, z))", "z = z", FAST),
    (
        "a view rising again does not start the next car",
        SE,
        "any(v in self.views and self.views[v].done for v in above)",
        "False",
        FAST,
    ),
    (
        "a missing view fused as z = 0",
        IN,
        'feats = [z.get(v, fusion["normal_median"][v]) for v in VIEWPOINTS]',
        "feats = [z.get(v, 0.0) for v in VIEWPOINTS]",
        FAST,
    ),
    ("alert window one car too long", EV, "(cars.car > c - window)", "(cars.car >= c - window)", FAST),
    (
        "pooling bins end at the floor",
        FE,
        "a, b = (j * n_in) // n_out, -((-(j + 1) * n_in) // n_out)",
        "a, b = (j * n_in) // n_out, max((j + 1) * n_in // n_out, (j * n_in) // n_out + 1)",
        ["tests/test_export.py", "-k", "pool"],
    ),
    (
        "PDN coverage counts the last cell's span as full stride",
        PD,
        "frac *= (4 * (n - 1) + 1) / int(length)",
        "frac *= (4 * n) / int(length)",
        GEO,
    ),
    (
        "PDN map sampled without the +1 of the padded cell",
        PD,
        "/ PDN_STRIDE + 1\n    tx",
        "/ PDN_STRIDE\n    tx",
        GEO,
    ),
    (
        "PDN coverage warning never fires",
        "lib/models/efficientad/__init__.py",
        "if self.map_coverage < MIN_COVERAGE:",
        "if self.map_coverage < 0:",
        GEO,
    ),
]


def run(indices) -> int:
    survived = 0
    for i in indices:
        desc, rel, old, new, *only = MUTATIONS[i]
        with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
            tmp = Path(tmp)
            for part in ("lib", "tests"):
                shutil.copytree(REPO / part, tmp / part, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(REPO / "pyproject.toml", tmp / "pyproject.toml")
            path = tmp / rel
            text = path.read_text()
            if text.count(old) != 1:
                raise SystemExit(f"mutation {i} ({desc}): {old!r} occurs {text.count(old)} times in {rel}")
            path.write_text(text.replace(old, new))
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-x",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    *(only[0] if only else TESTS),
                ],
                cwd=tmp,
                capture_output=True,
                text=True,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
            caught = proc.returncode != 0
            survived += not caught
            where = lines[0].removeprefix("FAILED ").split(" - ")[0] if lines else proc.stdout.strip()[-80:]
            print(f"{i:2d} {'caught ' if caught else 'SURVIVED'} {desc:<55} {where}", flush=True)
    print(f"{len(indices) - survived} of {len(indices)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    chosen = [int(a) for a in sys.argv[1:]] or list(range(len(MUTATIONS)))
    sys.exit(run(chosen))
