"""What varies on the simulated line, and by how much: one table, one calibrated knob.

The paper's plant (section 3): operators seal *specific joints and seams* fixed by the car model, the
robot seals the rest, and one camera films every car under the same lamps. So the car model fixes the
manual-seal sites, the drain-hole plugs and the clips; a car differs from the next by how a person's hand
varied at those sites, by rare stray marks, and by rare deviations of its plugs and clips.

``nuisance`` is the one calibrated number: it scales every per-car variation at the manual sites and the
stray-mark rate together (0: every car of the model identical outside the robot's beads). It was set on
one figure only, raw PatchCore's image AUROC on ``quick``'s **validation** split against the paper's
86.8 (Table 4): ``benchmarks/calibrate_scene.py``, whose measured curve is ``scene_calibration.json``.
Nothing else is tuned on the simulator's output.

Photometric variability beyond a small lamp drift (lamp intensity, colour temperature, glare, shadows)
is off by default: train, validation and test share one imaging protocol. A study turns it on
(the graded photometric shifts of paper section 8.4) through a profile's ``[<profile>.scene]`` table.
"""

from __future__ import annotations

import json
from pathlib import Path

from lib.config import (  # the scene's settings are a profile's: defined with it, in the foundation
    CALIBRATED_NUISANCE,
    SCENE_VERSION,
    SITES_PER_VIEW,
    STRAY_CANDIDATES,
    STRAY_MEAN,
    SceneConfig,
)

__all__ = [
    "CALIBRATED_NUISANCE",
    "SCENE_VERSION",
    "SITES_PER_VIEW",
    "STRAY_CANDIDATES",
    "STRAY_MEAN",
    "SceneConfig",
]

#: Where the calibration curve is kept (written by benchmarks/calibrate_scene.py, plotted by notebook 00).
CALIBRATION_FILE = Path(__file__).with_name("scene_calibration.json")

#: Per-car variation at a manual-seal site at nuisance = 1 (each scales linearly with nuisance).
#: name: (what it is, how it is drawn, the range at nuisance 1)
SITE_VARIATION = {
    "amount": ("size of the dab / width of the run", "uniform", 0.30),
    "extent": ("length of a run / long axis of a dab", "uniform", 0.35),
    "thickness": ("height of the sealant", "uniform", 0.30),
    "angle": ("rotation of the stroke, degrees", "normal sd", 10.0),
    "offset": ("shift of the site, paper px in x and y", "normal sd", 4.0),
    "skipped": ("probability that the operator skipped the site", "probability", 0.04),
}


def variation_table(scene: SceneConfig | None = None):
    """Every per-car and per-pass variation of the line, with its rate or range at ``scene``: the
    table docs/simulator.md and notebook 00 show (a pandas DataFrame)."""
    import pandas as pd

    s = scene or SceneConfig()
    n = s.nuisance
    rows = [
        (
            "car model",
            "manual-seal sites",
            f"{SITES_PER_VIEW} per viewpoint, dabs and brushed runs at joints",
            "fixed",
        ),
        ("car model", "robot seams", "front 4, center 6, back 5", "fixed"),
        ("car model", "drain holes: place, size, open / plugged / taped", "34 holes", "fixed"),
        ("car model", "clips on the 5 brackets", "present or not", "fixed"),
    ]
    for name, (what, how, at_one) in SITE_VARIATION.items():
        v = at_one * n
        rng = {"probability": f"probability {v:.3g}", "uniform": f"x (1 +- {v:.3g}), uniform"}.get(
            how, f"normal, sd {v:.3g}"
        )
        rows.append(("car, manual site (x nuisance)", name, what, rng))
    rows += [
        (
            "car (x nuisance)",
            "stray sealant marks",
            "a blob or brushed mark anywhere outside the robot ROI",
            f"binomial, mean {STRAY_MEAN * n:.3g} per car",
        ),
        ("car", "hole deviation", "a plug missing, a hole plugged", f"{s.hole_deviation_rate:g} per hole"),
        ("car", "clip missing", "a clip of the model absent", f"{s.clip_missing_rate:g} per clip"),
        ("car", "robot bead position", "per seam", "normal sd 1 paper px, and a slow wobble of 1 px"),
        ("car", "robot bead width", "per seam", "uniform +-12 %"),
        ("car", "paint and sealant tone", "per car", "paint 84-100 grey, sealant 150-175"),
        ("pass", "lamp drift", "gain per pass and within the pass", f"+-{s.lamp_drift:g}"),
        ("pass", "lamp intensity", "extra gain (+-) and gamma (+- half)", f"+-{s.lamp_intensity:g}"),
        ("pass", "colour temperature", "blue against red tilt", f"+-{s.colour_temperature:g}"),
        ("pass", "glare", "a specular spot at a per-pass place", f"strength {s.glare:g}"),
        ("pass", "shadow", "a soft dark band at a per-pass place", f"depth {s.shadow:g}"),
        ("pass", "pose", "vertical shift, rotation, scale", "sd 6 px, sd 0.35 deg, +-1 %"),
        ("pass", "conveyor speed", "per pass, and a 3 % wobble within it", "+-15 %"),
        ("pass", "sensor noise", "Gaussian, per pass sigma", "1.5-4 grey levels"),
    ]
    return pd.DataFrame(rows, columns=["varies per", "what", "how", "rate or range"])


def read_calibration(path: Path | str | None = None) -> dict:
    """The measured calibration curve (knob value -> raw PatchCore validation image AUROC)."""
    path = Path(path) if path is not None else CALIBRATION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no calibration curve at {path}: run `python benchmarks/calibrate_scene.py` to measure it"
        )
    return json.loads(path.read_text())


def variation_markdown(scene: SceneConfig | None = None) -> str:
    """``variation_table`` as the Markdown table docs/simulator.md carries (a test keeps them equal)."""
    t = variation_table(scene)
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in t.itertuples(index=False)]
    return "\n".join(lines)


def calibration_markdown(calibration: dict) -> str:
    """The measured calibration curve as the Markdown table docs/simulator.md carries."""
    lines = [
        "| nuisance | front | center | back | mean | |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted(calibration["points"], key=lambda p: p["nuisance"]):
        chosen = "**default**" if p["nuisance"] == calibration["chosen_nuisance"] else ""
        vals = " | ".join(f"{p[f'val_auroc_{v}']:.3f}" for v in ("front", "center", "back", "mean"))
        lines.append(f"| {p['nuisance']:g} | {vals} | {chosen} |")
    lines.append("")
    lines.append(
        f"Raw PatchCore, validation image AUROC, seed 0; measured by `{calibration['command']}` "
        f"(commit {calibration['commit']}, {calibration['cpu']}, {calibration['wall_s'] / 60:.0f} min)."
    )
    return "\n".join(lines)


def rewrite_docs(doc: Path | str | None = None) -> None:
    """Rewrite docs/simulator.md's generated tables from the code and the committed calibration."""
    from lib.fileio import write_text

    doc = Path(doc) if doc is not None else Path(__file__).resolve().parents[2] / "docs" / "simulator.md"
    text = doc.read_text()
    for tag, body in (
        ("variation-table", variation_markdown()),
        ("calibration-table", calibration_markdown(read_calibration())),
    ):
        start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
        head, rest = text.split(start)
        text = f"{head}{start}\n{body}\n{end}{rest.split(end)[1]}"
    write_text(doc, text)


if __name__ == "__main__":
    rewrite_docs()
    print("rewrote docs/simulator.md's variation and calibration tables")
