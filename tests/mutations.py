"""Mutation check: each plausible mistake in the implementation must fail a test.

    make mutations                                  # all of them, ~6 min on 2 cores
    .venv/bin/python tests/mutations.py --list      # their names
    .venv/bin/python tests/mutations.py NAME [NAME ...]

Copies ``lib`` and ``tests`` to a temporary folder, applies one named mistake at a time (a plain text
substitution that must match exactly once, else an error), runs the tests chosen for it there and
reports whether they caught it. "Caught" means the tests ran and failed (pytest exit code 1); a
mutant that cannot even be collected (exit 2-4, e.g. an import error) is an error of the mutation,
never a catch. Before the mutants, the chosen tests must pass on the unmutated copy. Exit status 1
if any mutation survives or errs. Not collected by pytest (its name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_metrics.py", "tests/test_statistics.py", "tests/test_claims.py", "tests/test_store.py"]
M, S, E = "lib/evaluate/metrics.py", "lib/store.py", "lib/evaluate/evaluate.py"
BO, SG = "lib/evaluate/bootstrap.py", "lib/evaluate/significance.py"
CV, CE, CC = (
    "lib/evaluate/claims/verdicts.py",
    "lib/evaluate/claims/evidence.py",
    "lib/evaluate/claims/catalogue.py",
)
AL, SE, IN = "lib/inspection/alerts.py", "lib/inspection/segment.py", "lib/inspection/inspector.py"
EV, FE = "lib/inspection/evaluate.py", "lib/models/features.py"
MQ = "lib/inspection/mqtt.py"
PD = "lib/models/efficientad/torch_model.py"
GEO = ["tests/test_model_fidelity.py", "-k", "efficientad_map or efficientad_warns or exact_geometry"]
FAST = [
    "tests/test_inspection.py",
    "-k",
    "segmenter and not rendered or ewma or k_of_n or fusion or outcomes or baseline or outbox or decide",
]

LAYER = ["tests/test_layers.py"]
UB, SC = "lib/acquire/underbody.py", "tests/test_scene.py"
RUNNER = "lib/notebooks.py"
OPS, DIA, PHO = "lib/studies/operating_points.py", "lib/studies/diagnosis.py", "lib/studies/photometric.py"
STUDIES = "tests/test_studies.py"


class Mutation(NamedTuple):
    name: str
    description: str
    file: str
    old: str
    new: str
    tests: tuple = tuple(TESTS)


MUTATIONS = [
    Mutation(
        "aupro-without-the-interpolation-at-fpr-0",
        "AUPRO without the interpolation at FPR 0.3",
        M,
        "area = np.sum(self.weight * (full + partial))",
        "area = np.sum(self.weight * full)",
    ),
    Mutation(
        "aupro-overlap-per-pixel-instead-of-per",
        "AUPRO overlap per pixel instead of per region",
        M,
        "weight[:] = 1.0 / (np.asarray(sizes, np.float64)[region] * self.n_regions)",
        "weight[:] = 1.0 / self.n_pos",
    ),
    Mutation(
        "4-instead-of-8-connected-regions",
        "4- instead of 8-connected regions",
        M,
        "connectivity=8",
        "connectivity=4",
    ),
    Mutation(
        "benjamini-hochberg-without-correction",
        "Benjamini-Hochberg without correction",
        M,
        "scaled = q[order] * m / np.arange(1, m + 1)",
        "scaled = q[order]",
    ),
    Mutation(
        "tau-the-lowest-of-tied-iou-thresholds",
        "tau*: the lowest of tied-IoU thresholds",
        M,
        "best = np.flatnonzero(iou == iou.max())[-1]",
        "best = np.flatnonzero(iou == iou.max())[0]",
    ),
    Mutation(
        "counts-at-a-threshold-leave-out-pixels",
        "counts at a threshold leave out pixels tied with it",
        M,
        'tp = self.n_pos - int(np.searchsorted(self.pos, t, side="left"))',
        'tp = self.n_pos - int(np.searchsorted(self.pos, t, side="right"))',
    ),
    Mutation(
        "auroc-counts-ties-as-wins",
        "AUROC counts ties as wins",
        M,
        "np.sum(self.count * (self.neg_below + self.neg_at_or_below))",
        "np.sum(self.count * 2 * self.neg_below)",
    ),
    Mutation(
        "au-pr-leaves-tied-normal-pixels-out",
        "AU-PR leaves tied normal pixels out of precision",
        M,
        "fp = self.n_neg - self.neg_below  # normal",
        "fp = self.n_neg - self.neg_at_or_below  # normal",
    ),
    Mutation(
        "aupro-tied-step-counted-as-a-full",
        "AUPRO tied step counted as a full step",
        M,
        "ramp / 2 + (L - b)",
        "ramp + (L - b)",
    ),
    Mutation(
        "threshold-compared-after-rounding-to-float32",
        "threshold compared after rounding to float32",
        M,
        "if float(f) < t:",
        "if False:",
    ),
    Mutation(
        "nan-maps-pass-the-finite-check",
        "NaN maps pass the finite check",
        M,
        "if not np.isfinite(a).all():",
        "if False:",
    ),
    Mutation(
        "maps-stored-as-float16",
        "maps stored as float16",
        S,
        "kept = np.float64 if maps.dtype == np.float64 else np.float32",
        "kept = np.float16",
    ),
    Mutation("scores-stored-as-6g", "scores stored as %.6g", S, "float_format=None)", 'float_format="%.6g")'),
    Mutation(
        "no-hash-check-on-read",
        "no hash check on read",
        S,
        'if verify and sha256_file(path) != want.get("sha256"):',
        "if False:",
    ),
    Mutation(
        "no-size-check-on-read", "no size check on read", S, 'if size != want.get("bytes"):', "if False:"
    ),
    Mutation(
        "non-finite-maps-accepted-by-the-store",
        "non-finite maps accepted by the store",
        S,
        "if not finite.all():",
        "if False:",
    ),
    Mutation(
        "a-cell-lacking-manifest-images-is-evaluated",
        "a cell lacking manifest images is evaluated",
        E,
        "if lacking:",
        "if False:",
    ),
    Mutation(
        "bootstrap-aupro-tied-step-as-a-full",
        "bootstrap AUPRO: tied step as a full step",
        BO,
        "ramp / 2 + (L - bb)",
        "ramp + (L - bb)",
    ),
    Mutation(
        "bootstrap-pixel-auroc-defect-pixels-not-weighted",
        "bootstrap pixel AUROC: defect pixels not weighted by their image's count",
        BO,
        "w_pix = wb[:, self.owner].T",
        "w_pix = np.ones((len(self.owner), len(wb)))",
    ),
    Mutation(
        "bootstrap-draws-underbodies-across-strata",
        "bootstrap draws underbodies across strata",
        BO,
        "counts[b] += np.bincount(members[draws[b]], minlength=len(uniq))",
        "counts[b] += np.bincount(rng.integers(0, len(uniq), len(members)), minlength=len(uniq))",
    ),
    Mutation(
        "delong-ignores-the-correlation-of-the-aurocs",
        "DeLong ignores the correlation of the AUROCs",
        SG,
        "- 2 * cov[0, 1]",
        "- 0 * cov[0, 1]",
    ),
    Mutation(
        "delong-ranks-ties-in-order", "DeLong ranks ties in order", SG, 'method="average"', 'method="ordinal"'
    ),
    Mutation(
        "family-p-values-not-corrected",
        "family p-values not corrected",
        SG,
        'zip(rows, M.benjamini_hochberg([r["p"] for r in rows]), strict=True)',
        'zip(rows, [r["p"] for r in rows], strict=True)',
    ),
    Mutation(
        "t-test-over-fewer-than-3-seeds",
        "t-test over fewer than 3 seeds",
        SG,
        "MIN_SEEDS_FOR_T = 3",
        "MIN_SEEDS_FOR_T = 1",
    ),
    Mutation(
        "size-verdict-ignores-zero",
        "size verdict ignores zero",
        CV,
        "return REPRODUCED if (hi < 0 or lo > 0) else INCONCLUSIVE",
        "return REPRODUCED",
    ),
    Mutation(
        "masking-change-with-the-sign-flipped",
        "masking change with the sign flipped",
        CE,
        "100.0 * (masked - raw) / np.where(raw > 0, raw, 1)",
        "100.0 * (raw - masked) / np.where(raw > 0, raw, 1)",
    ),
    Mutation(
        "ewma-limit-without-the-square-root",
        "EWMA limit without the square root",
        AL,
        "(self.lam / (2 - self.lam)) ** 0.5",
        "(self.lam / (2 - self.lam))",
        FAST,
    ),
    Mutation(
        "k-of-n-fires-one-flag-late",
        "k of n fires one flag late",
        AL,
        '"k_of_n": (n_flag >= c.k, n_flag, c.k)',
        '"k_of_n": (n_flag > c.k, n_flag, c.k)',
        FAST,
    ),
    Mutation(
        "an-alert-on-every-underbody-in-alarm",
        "an alert on every underbody in alarm",
        AL,
        "if not self.open[key]:",
        "if True:",
        FAST,
    ),
    Mutation(
        "ewma-without-clipping",
        "EWMA without clipping",
        AL,
        "z = max(-c.clip, min(c.clip, z))",
        "z = z",
        FAST,
    ),
    Mutation(
        "a-view-rising-again-does-not-start",
        "a view rising again does not start the next car",
        SE,
        "any(v in self.views and self.views[v].done for v in enters)",
        "False",
        FAST,
    ),
    Mutation(
        "a-missing-view-fused-as-z-0",
        "a missing view fused as z = 0",
        IN,
        'feats = [z.get(v, fusion["normal_median"][v]) for v in VIEWPOINTS]',
        "feats = [z.get(v, 0.0) for v in VIEWPOINTS]",
        FAST,
    ),
    Mutation(
        "one-car-alone-may-fire-the-ewma",
        "an alert config where one car alone can fire the EWMA is accepted",
        AL,
        "if self.lam * self.clip >= self.ewma_limit:",
        "if False:",
        FAST,
    ),
    Mutation(
        "cleared-without-the-rearm-wait",
        "an alarm clears (and re-arms) on its first clear underbody",
        AL,
        "if self.clear_run[key] >= c.rearm:",
        "if self.clear_run[key] >= 1:",
        FAST,
    ),
    Mutation(
        "line-baseline-from-the-mean",
        "the line baseline's level is the warm-up mean (one defective car moves it)",
        AL,
        '"mean": med, "std": sd',
        '"mean": sum(w) / len(w), "std": sd',
        FAST,
    ),
    Mutation(
        "segmenter-without-hysteresis",
        "a view leaves at the enter threshold (no hysteresis)",
        SE,
        "if r.score >= self.leave:",
        "if r.score >= self.threshold:",
        FAST,
    ),
    Mutation(
        "fusion-overrules-a-veto",
        "the fusion overrules a view above its veto level",
        IN,
        "    elif vetoes:",
        "    elif False:",
        FAST,
    ),
    Mutation(
        "outbox-drops-the-newest",
        "a full MQTT outbox drops the newest message instead of the oldest",
        MQ,
        'self._ack_locked(self.pending.popleft()["seq"])',
        'self._ack_locked(self.pending.pop()["seq"])',
        FAST,
    ),
    Mutation(
        "outbox-forgotten-on-restart",
        "a restarted inspect forgets the messages its outbox held",
        MQ,
        'if m["seq"] > acked:',
        "if False:",
        ["tests/test_inspection.py", "-k", "soak"],
    ),
    Mutation(
        "restart-renumbers-cars",
        "a restarted inspect numbers cars from 0 again",
        IN,
        'first_index=int(state["next_pass"]) if state else 0,',
        "first_index=0,",
        ["tests/test_inspection.py", "-k", "resume"],
    ),
    Mutation(
        "alert-window-one-car-too-long",
        "alert window one car too long",
        EV,
        "(cars.car > c - window)",
        "(cars.car >= c - window)",
        FAST,
    ),
    Mutation(
        "pooling-bins-end-at-the-floor",
        "pooling bins end at the floor",
        FE,
        "a, b = (j * n_in) // n_out, -((-(j + 1) * n_in) // n_out)",
        "a, b = (j * n_in) // n_out, max((j + 1) * n_in // n_out, (j * n_in) // n_out + 1)",
        ["tests/test_export.py", "-k", "pool"],
    ),
    Mutation(
        "pdn-coverage-counts-the-last-cell-s",
        "PDN coverage counts the last cell's span as full stride",
        PD,
        "frac *= (np.floor(last) - np.ceil(first) + 1) / int(length)",
        "frac *= (np.floor(last) - np.ceil(first) + stride) / int(length)",
        GEO,
    ),
    Mutation(
        "pdn-map-sampled-without-the-1-of",
        "PDN map sampled without the +1 of the padded cell",
        PD,
        "/ stride + 1\n    tx",
        "/ stride\n    tx",
        GEO,
    ),
    Mutation(
        "pdn-coverage-warning-never-fires",
        "PDN coverage warning never fires",
        "lib/models/efficientad/__init__.py",
        "if self.map_coverage < MIN_COVERAGE:",
        "if self.map_coverage < 0:",
        GEO,
    ),
    Mutation(
        "ranking-claim-without-runner-up-guard",
        "a ranking claim assumes a runner-up exists (one-model runs crash)",
        CV,
        "    if not present or not others:",
        "    if not present:",
    ),
    # the claims of issue 22 (tests/test_claims.py)
    Mutation(
        "count-change-from-one-seed-not-pooled",
        "masking change from the last seed's counts, not counts pooled over seeds",
        CE,
        "acc[key] = [point + float(ind.sum()), reps + (weights @ ind if n_b else 0.0)]",
        "acc[key] = [float(ind.sum()), weights @ ind if n_b else 0.0]",
    ),
    Mutation(
        "count-rising-from-zero-dropped",
        "a count rising from zero becomes NaN (dropped) instead of +inf",
        CE,
        "np.where(masked > 0, np.inf, 0.0)",
        "np.where(masked > 0, np.nan, 0.0)",
    ),
    Mutation(
        "undefined-resamples-not-counted",
        "undefined resamples silently dropped from the interval",
        CE,
        "undefined = float(np.isnan(v).mean())",
        "undefined = 0.0",
    ),
    Mutation(
        "views-resampled-independently",
        "an underbody drawn separately in each view (no cluster bootstrap)",
        E,
        "test.underbody_id.to_numpy(), pattern.loc[test.underbody_id].to_numpy()",
        "(test.viewpoint + test.underbody_id).to_numpy(), pattern.loc[test.underbody_id].to_numpy()",
    ),
    Mutation(
        "chance-rule-off",
        "a verdict may rest on a variant at chance",
        CC,
        'at_chance = [r for r in (E.chance(lb) for lb in out["rests_on"]) if r]',
        "at_chance = []",
    ),
    Mutation(
        "chance-only-on-the-view-average",
        "a variant blind in one viewpoint counts as working",
        CE,
        'for view, reps in r[r.metric == "auroc"]',
        'for view, reps in r[r.metric == "none"]',
    ),
    Mutation(
        "models-not-run-still-judged",
        "a claim naming a model this run lacks is judged anyway",
        CC,
        "if (absent and c.needs_all) or (c.models and not run) or not E.labels:",
        "if not E.labels:",
    ),
    Mutation(
        "superiority-within-one-condition",
        "PatchCore† compared with masked models only (the old misreading)",
        CC,
        "pairs = [(pc, lb) for lb in E.labels if lb != pc]",
        'pairs = [(pc, lb) for lb in E.labels if lb != pc and lb.endswith("†")]',
    ),
    Mutation(
        "pixel-auroc-lead-accepts-patchcore-masked",
        "7.2's pixel AUROC/AUPRO lead accepts PatchCore† (the paper: raw PatchCore)",
        CC,
        '        ("auroc", "aupro"),\n        ("patchcore",),',
        '        ("auroc", "aupro"),\n        ("patchcore", "patchcore†"),',
    ),
    Mutation(
        "paper-check-masking-reversed",
        "the paper's own Table 4 read with the masking direction reversed",
        CC,
        'if vals[m + "†"] <= vals[m]:',
        'if vals[m + "†"] >= vals[m]:',
    ),
    Mutation(
        "bootstrap-pixel-aupr-ties-counted-below",
        "bootstrap pixel AU-PR: normal pixels tied with a defect pixel not counted as FP",
        BO,
        "fp = n_neg[None, :] - below",
        "fp = n_neg[None, :] - at_or_below",
    ),
    # the helpers of the restructuring (tests/test_house.py, tests/test_layers.py)
    Mutation(
        "defect-panels-include-validation-images",
        "defect panels take anomalous images of any split",
        E,
        'if t.label.iloc[i] == "anomalous" and t.split.iloc[i] == "test"][:n]',
        'if t.label.iloc[i] == "anomalous"][:n]',
        ["tests/test_house.py"],
    ),
    Mutation(
        "batched-forward-drops-the-last-batch",
        "batched predict leaves out a short last batch",
        "lib/models/base.py",
        "for i in range(0, len(images), batch_size):",
        "for i in range(0, len(images) - batch_size + 1, batch_size):",
        ["tests/test_house.py"],
    ),
    Mutation(
        "efficientad-cells-without-the-stored-teacher",
        "EfficientAD cell overrides forget the profile's teacher",
        "lib/models/efficientad/__init__.py",
        '"teacher_weights": str(teacher_path(data_root, base, profile.seed)),',
        "",
        ["tests/test_house.py"],
    ),
    Mutation(
        "text-tables-read-empty-as-nan",
        "formatted tables read back with pandas' NaN defaults",
        "lib/evaluate/tables.py",
        '_TEXT = {"keep_default_na": False}',
        "_TEXT = {}",
        ["tests/test_house.py"],
    ),
    Mutation(
        "grid-branches-on-a-model-name",
        "the grid names a model again",
        "lib/grid.py",
        "key=lambda c: -_cost(c.model))",
        'key=lambda c: -_cost(c.model) - (c.model == "efficientad_m"))',
        LAYER,
    ),
    # the house's layers: an upward import and an import circle must fail the layer test
    Mutation(
        "upward-import-models-to-grid",
        "models import the grid (upward)",
        "lib/models/train.py",
        "def _jsonable(obj):\n",
        "def _jsonable(obj):\n    from lib.grid import run_grid  # noqa: F401\n\n",
        LAYER,
    ),
    Mutation(
        "import-circle-store-identity",
        "the store imports identity, which imports the store",
        "lib/store.py",
        "def cell_dir(store_root, cell: Cell) -> Path:\n",
        "def cell_dir(store_root, cell: Cell) -> Path:\n    from lib.identity import cell_identity  # noqa: F401\n\n",
        LAYER,
    ),
    Mutation(
        "display-keeps-row-numbers",
        "report tables show pandas' 0..n-1 row numbers as a column",
        "lib/display.py",
        "    return out, not plain\n",
        "    return out, True\n",
        ("tests/test_display.py",),
    ),
    Mutation(
        "counts-printed-as-fractions",
        "one seed's count of 40 prints as '40.000'",
        M,
        'return f"{v[0]:.0f}" if counts else f"{v[0]:.3f}"',
        'return f"{v[0]:.3f}"',
        ("tests/test_display.py",),
    ),
    Mutation(
        "rates-turned-into-integers",
        "a recall column of 0s and 1s shown as integers",
        "lib/display.py",
        "if whole and np.abs(finite).max() > 1:",
        "if whole:",
        ("tests/test_display.py",),
    ),
    Mutation(
        "auto-bf16-ignores-the-model-parity",
        "precision auto picks bf16 for a model whose parity missed",
        "lib/precision.py",
        'return "bf16" if model_allows and native_bf16(device, flags) else "fp32"',
        'return "bf16" if native_bf16(device, flags) else "fp32"',
        ("tests/test_precision.py", "-k", "auto_picks or concrete"),
    ),
    Mutation(
        "backbone-ignores-the-precision",
        "the feature extractor runs fp32 whatever the precision",
        "lib/models/backbones.py",
        "with autocast(self.precision, x.device):",
        'with autocast("fp32", x.device):',
        ("tests/test_precision.py", "-k", "convolutions_in_bf16 and patchcore"),
    ),
    Mutation(
        "precision-left-out-of-the-identity",
        "a bf16 cell counts as current for an fp32 request",
        "lib/identity.py",
        "if key in values and values[key] == old:",
        "if key in values:",
        ("tests/test_precision.py", "-k", "reruns or before_the_setting"),
    ),
    Mutation(
        "onnx-export-traces-bf16",
        "the ONNX graph is traced at the model's bf16",
        "lib/models/export.py",
        'module_precision(module, "fp32"),',
        "module_precision(module, module.precision),",
        ("tests/test_precision.py", "-k", "onnx"),
    ),
    Mutation(
        "efficientad-inference-copy-keeps-its-old-precision",
        "EfficientAD's channels-last copy does not follow the net's precision",
        "lib/models/efficientad/__init__.py",
        "        self._infer.precision = self.net.precision",
        "        pass",
        ("tests/test_precision.py", "-k", "convolutions_in_bf16 and efficientad"),
    ),
    Mutation(
        "patchcore-distances-in-bf16",
        "PatchCore's nearest-neighbour distances computed from bf16-rounded features and memory",
        "lib/models/patchcore/torch_model.py",
        "dist, idx = nearest(emb, self.memory_bank, k=1)",
        "dist, idx = nearest(emb.bfloat16().float(), self.memory_bank.bfloat16().float(), k=1)",
        ("tests/test_precision.py", "-k", "smoke_size and patchcore"),
    ),
    Mutation(
        "added-models-replace-the-profiles",
        "--models +name runs only the added model",
        "lib/models/__init__.py",
        "wanted = set(default) | set(adds) if adds else set(requested)",
        "wanted = set(adds) if adds else set(requested)",
        ("tests/test_config.py", "-k", "efficientad_m_out"),
    ),
    Mutation(
        "pdn-geometry-padding-sign",
        "the PDN's receptive-field offset adds the padding instead of subtracting it",
        PD,
        "offset += stride * (-p + (k - 1) / 2)",
        "offset += stride * (p + (k - 1) / 2)",
        ("tests/test_model_fidelity.py", "-k", "geometry or padded"),
    ),
    Mutation(
        "padded-map-fades-to-zero",
        "the padded PDN's map fades to zero beyond its edge cells",
        PD,
        'mode="replicate" if padding else "constant"',
        'mode="constant"',
        ("tests/test_model_fidelity.py", "-k", "padded_map"),
    ),
    Mutation(
        "efficientad-net-ignores-padding",
        "the model's networks are unpadded whatever the config says",
        "lib/models/efficientad/__init__.py",
        "c.model_size, c.out_channels, padding=c.padding,",
        "c.model_size, c.out_channels, padding=False,",
        ("tests/test_config.py", "-k", "whole_crop"),
    ),
    Mutation(
        "cell-workers-without-preload",
        "cell workers import papermill and nbconvert anew",
        "lib/grid.py",
        "ctx.set_forkserver_preload(list(WORKER_PRELOAD))",
        "ctx.set_forkserver_preload([])",
        ("tests/test_grid.py", "-k", "preload or papermill"),
    ),
    Mutation(
        "cores-of-the-machine-not-the-run",
        "taskset's one core is counted as the machine's cores",
        "lib/config.py",
        "return len(os.sched_getaffinity(0)) or 1",
        "return os.cpu_count() or 1",
        ("tests/test_config.py", "-k", "cores_are"),
    ),
    Mutation(
        "manual-sealant-random-per-car",
        "operators' sites are drawn per car, not per car model",
        UB,
        "    rng_site = np.random.default_rng([model_seed, 5])",
        "    rng_site = np.random.default_rng()",
        (SC, "-k", "models_not_the_cars"),
    ),
    Mutation(
        "site-variation-ignores-the-knob",
        "the per-car variation at the sites does not scale with nuisance",
        UB,
        "var = {k: v[2] * nuisance for k, v in scene_mod.SITE_VARIATION.items()}",
        "var = {k: v[2] for k, v in scene_mod.SITE_VARIATION.items()}",
        (SC, "-k", "stated_ranges or nuisance_zero"),
    ),
    Mutation(
        "stray-marks-inside-the-roi",
        "stray marks may land on the robot's beads",
        UB,
        "(x, y) for x, y in free if not keepout[min(H - 1, int(y * scale)), min(W - 1, int(x * scale))]",
        "(x, y) for x, y in free",
        (SC, "-k", "stray_marks_rate"),
    ),
    Mutation(
        "hole-states-drawn-per-car",
        "every hole's state is redrawn per car (the old scene)",
        UB,
        '("plugged" if st == "open" else "open") if u < scene.hole_deviation_rate else st',
        '("plugged" if st == "open" else "open") if u < 0.5 else st',
        (SC, "-k", "rare_deviations"),
    ),
    Mutation(
        "glare-on-by-default",
        "the default imaging protocol carries glare",
        "lib/config.py",
        "    glare: float = 0.0",
        "    glare: float = 0.3",
        (SC, "-k", "off_by_default"),
    ),
    Mutation(
        "stale-root-reused-across-scenes",
        "a data root of another scene is reused",
        "lib/acquire/views.py",
        '            and meta.get("scene") == profile.scene_config.identity()\n',
        "",
        (SC, "-k", "rendered_anew"),
    ),
    Mutation(
        "site-variation-capped",
        "the hand's variation stops growing past nuisance 1 (the knob is not linear)",
        UB,
        "var = {k: v[2] * nuisance for k, v in scene_mod.SITE_VARIATION.items()}",
        "var = {k: v[2] * min(nuisance, 1.0) for k, v in scene_mod.SITE_VARIATION.items()}",
        (SC, "-k", "linearly"),
    ),
    Mutation(
        "coreset-chunks-overlap",
        "the chunked projection of the pre-coreset bank repeats a row at every chunk boundary",
        "lib/models/patchcore/torch_model.py",
        "@ proj for i in range(0, n, chunk_rows)])",
        "@ proj for i in range(0, n, max(1, chunk_rows - 1))])",
        ("tests/test_deep_models.py", "-k", "bit_identical"),
    ),
    Mutation(
        "patchcore-bank-rows-misplaced",
        "fit writes each batch's embeddings at the wrong offset of the host bank",
        "lib/models/patchcore/__init__.py",
        "            row += len(emb)",
        "            row += len(emb) - 1 if row == 0 else len(emb)",
        ("tests/test_deep_models.py", "-k", "reference_construction"),
    ),
    Mutation(
        "dry-run-decides-claims",
        "a dry run's random numbers decide the paper's claims",
        CC,
        '                elif getattr(E.profile, "dry_run", False):',
        "                elif False:",
        ("tests/test_claims.py", "-k", "dry_run"),
    ),
    Mutation(
        "grid-wall-round-robin",
        "the grid's wall time on n GPUs deals cells round-robin instead of longest-first",
        "lib/models/resources.py",
        "        i = int(np.argmin(loads))\n",
        "        i = len([x for x in loads if x]) % len(loads)\n",
        ("tests/test_paper_profile.py", "-k", "makespan"),
    ),
    Mutation(
        "plan-scales-teacher-per-cell",
        "the EfficientAD teacher's distillation is counted in every cell, not once per profile",
        "lib/models/resources.py",
        "REGISTRY[name].shared_budget_fields",
        "()",
        ("tests/test_paper_profile.py", "-k", "small_profile"),
    ),
    Mutation(
        "table8-shows-cpu-rows",
        "a tiny CPU run of gpu_check appears as a GPU figure in Table 8",
        "lib/report.py",
        '        measured = measured[~measured.tiny.astype(bool) & measured.device.str.startswith("cuda")]\n',
        "",
        ("tests/test_paper_profile.py", "-k", "tiny_writes"),
    ),
    Mutation(
        "dry-run-not-paper-sizes",
        "the dry-run profile trains PatchCore at a smaller input than Table 3's",
        "lib/profiles.toml",
        "[paper-dry.models.patchcore]\nallow_random_backbone = true",
        "[paper-dry.models.patchcore]\nallow_random_backbone = true\ninput_size = [424, 240]",
        ("tests/test_paper_profile.py", "-k", "geometry"),
    ),
    # ---------------------------------------------------------------- issue 29: the studies
    Mutation(
        "size-policy-judges-region-mean",
        "a region is judged by its mean score, not its peak (a size policy that ignores area then differs from the single threshold)",
        OPS,
        "    np.maximum.at(peaks, flat, np.asarray(anomaly_map, np.float64).ravel())",
        "    peaks = np.bincount(flat, np.asarray(anomaly_map, np.float64).ravel(), n) / np.maximum(np.bincount(flat, minlength=n), 1)",
        (STUDIES, "-k", "ignores_area or by_hand"),
    ),
    Mutation(
        "size-policy-search-skips-small-thresholds",
        "the search tries only the highest small-class threshold (not exact)",
        OPS,
        "    for i in range(len(cand[0])):",
        "    for i in range(len(cand[0]))[-1:]:",
        (STUDIES, "-k", "best_triple or keeps_small"),
    ),
    Mutation(
        "single-threshold-highest-within-budget",
        "the single threshold is the highest candidate within the budget, not the lowest",
        OPS,
        "    for t in _candidates(top, floor):",
        "    for t in _candidates(top, floor)[::-1]:",
        (STUDIES, "-k", "keeps_small or one_area_class"),
    ),
    Mutation(
        "diagnosis-control-not-shuffled",
        "the shuffled-feature control trains on the real features",
        DIA,
        "        x = x[np.random.default_rng(shuffle_seed).permutation(len(x))]",
        "        x = x[np.arange(len(x))]",
        (STUDIES, "-k", "shuffled"),
    ),
    Mutation(
        "diagnosis-probabilities-unstandardised",
        "predict_proba forgets the standardisation scikit-learn was fitted on",
        DIA,
        "            (np.atleast_2d(np.asarray(x, np.float64)) - self.mean) / self.scale",
        "            np.atleast_2d(np.asarray(x, np.float64))",
        (STUDIES, "-k", "scikit_learn"),
    ),
    Mutation(
        "diagnosis-alignment-against-the-normal",
        "seam alignment measured against the band's normal, not its tangent",
        DIA,
        "    tangent = np.array([-normal[1], normal[0]])",
        "    tangent = normal",
        (STUDIES, "-k", "seam_band"),
    ),
    Mutation(
        "diagnosis-wilson-90",
        "Wilson intervals at 90 % instead of 95 %",
        DIA,
        "def wilson(k: int, n: int, z: float = 1.959964)",
        "def wilson(k: int, n: int, z: float = 1.644854)",
        (STUDIES, "-k", "wilson"),
    ),
    Mutation(
        "photometric-load-forgets-the-roi",
        "shifted images of a masked cell are not ROI-masked (a zero shift no longer reproduces the run)",
        PHO,
        "        if masked:\n            if r.roi_path not in rois:",
        "        if False:\n            if r.roi_path not in rois:",
        (STUDIES, "-k", "zero_shift"),
    ),
    Mutation(
        "photometric-shift-ignores-level",
        "every level of a shift draws the same strength (not graded)",
        PHO,
        "    s = shift.level\n",
        "    s = 0.3\n",
        (STUDIES, "-k", "graded"),
    ),
    Mutation(
        "inspect-ignores-the-bundled-size-policy",
        "inspect keeps the fusion's decision although the bundle carries a size-aware policy",
        IN,
        '        if self.policies:\n            decision = decide_by_size(views, self.info["views"])',
        '        if False:\n            decision = decide_by_size(views, self.info["views"])',
        ("tests/test_inspection.py", "-k", "decides_by_the_size_policy or re_deciding"),
    ),
]
BY_NAME = {m.name: m for m in MUTATIONS}
if len(BY_NAME) != len(MUTATIONS):
    raise SystemExit("two mutations share a name")


def _copy(tmp: Path) -> None:
    for part in ("lib", "tests", "notebooks"):
        shutil.copytree(REPO / part, tmp / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp / "pyproject.toml")


def _pytest(tmp: Path, tests) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tmp,
        capture_output=True,
        text=True,
    )


def baseline(chosen: list[Mutation]) -> None:
    """The chosen tests pass on an unmutated copy (else no mutant result would mean anything)."""
    selections = {tuple(m.tests) for m in chosen}
    with tempfile.TemporaryDirectory(prefix="mutant-base-") as tmp:
        _copy(Path(tmp))
        for tests in selections:
            proc = _pytest(Path(tmp), tests)
            if proc.returncode != 0:
                raise SystemExit(f"the unmutated tests fail ({' '.join(tests)}):\n{proc.stdout[-2000:]}")


def run_one(m: Mutation) -> str:
    """'caught', 'SURVIVED' or 'ERROR: ...' for one mutation."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        tmp = Path(tmp)
        _copy(tmp)
        path = tmp / m.file
        text = path.read_text()
        if text.count(m.old) != 1:
            return f"ERROR: its text occurs {text.count(m.old)} times in {m.file} (must be once)"
        path.write_text(text.replace(m.old, m.new))
        proc = _pytest(tmp, m.tests)
        if proc.returncode == 1:
            failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
            return "caught   " + (failed[0].removeprefix("FAILED ").split(" - ")[0] if failed else "")
        if proc.returncode == 0:
            return "SURVIVED"
        return f"ERROR: pytest exit {proc.returncode} (not a test failure): {proc.stdout.strip()[-160:]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true", help="print the names and exit")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:<48} {m.description}")
        return 0
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        print(f"unknown mutation(s) {unknown}; see --list", file=sys.stderr)
        return 2
    chosen = [BY_NAME[n] for n in args.names] or MUTATIONS
    baseline(chosen)
    bad = 0
    for m in chosen:
        outcome = run_one(m)
        bad += not outcome.startswith("caught")
        print(f"{m.name:<48} {outcome}", flush=True)
    print(f"{len(chosen) - bad} of {len(chosen)} mutations caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
