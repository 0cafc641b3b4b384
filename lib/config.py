"""Run profiles, seeds and device selection: the one place that decides them.

Profiles live in ``profiles.toml`` next to this file (data, not code branches).
Every length in a profile is given at paper scale (848x480 viewpoint crops) and
multiplied by ``scale`` where it is used, so the three profiles differ only in numbers.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tomllib
from pathlib import Path

import numpy as np

#: The checkout (notebooks/, data/, runs/ live under it).
REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = Path(__file__).with_name("profiles.toml")
PROFILE_NAMES = ("paper", "quick", "smoke", "paper-dry")
VIEWPOINTS = ("front", "center", "back")
#: Viewpoint crop size at paper scale (width, height), Table 3 / section 6.
PAPER_CROP_SIZE = (848, 480)


#: Bumped whenever the drawing of a car or a frame changes, so a data root rendered by older code is
#: not reused as if it were current (``views.load_or_simulate`` compares it).
SCENE_VERSION = 2

#: The calibrated default of ``SceneConfig.nuisance`` (see the module docstring).
CALIBRATED_NUISANCE = 0.5

#: Manual-seal sites per viewpoint section, drawn once per car model.
SITES_PER_VIEW = 5
#: Stray-mark candidates per car: each is laid with probability STRAY_MEAN * nuisance / STRAY_CANDIDATES,
#: so the count is binomial with mean STRAY_MEAN * nuisance (nuisance <= STRAY_CANDIDATES / STRAY_MEAN).
STRAY_CANDIDATES = 8
STRAY_MEAN = 0.5


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """The per-car nuisance and the imaging protocol; the defaults are the calibrated default line."""

    #: scales the manual sites' per-car variation and the stray-mark rate together (the calibrated knob)
    nuisance: float = CALIBRATED_NUISANCE
    #: per hole and car: its plug or tape differs from the car model's (a missing plug, a plugged hole)
    hole_deviation_rate: float = 0.02
    #: per clip and car: a clip of the car model is missing
    clip_missing_rate: float = 0.03
    #: the default imaging protocol: the lamps' gain drifts by up to this share per pass and within a pass
    lamp_drift: float = 0.03
    #: photometric shifts (paper section 8.4), 0 = off: extra per-pass lamp gain (+-share) and gamma
    lamp_intensity: float = 0.0
    #: per-pass colour-temperature tilt of blue against red (+-share)
    colour_temperature: float = 0.0
    #: strength (0..1) of a specular glare spot at a per-pass place in the frame
    glare: float = 0.0
    #: depth (0..1) of a soft shadow band at a per-pass place in the frame
    shadow: float = 0.0

    def __post_init__(self) -> None:
        limit = STRAY_CANDIDATES / STRAY_MEAN
        if not 0.0 <= self.nuisance <= limit:
            raise ValueError(f"scene nuisance must lie in [0, {limit:g}], got {self.nuisance}")
        for name in ("hole_deviation_rate", "clip_missing_rate", "glare", "shadow"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"scene {name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("lamp_drift", "lamp_intensity", "colour_temperature"):
            if not 0.0 <= getattr(self, name) <= 0.5:
                raise ValueError(f"scene {name} must lie in [0, 0.5], got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "scene") -> SceneConfig:
        """Build from a profile's ``scene`` table; an unknown key or a bad value names ``where``."""
        values = dict(values or {})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(
                f"{where}: unknown scene field(s) {sorted(unknown)}; "
                f"known: {[f.name for f in dataclasses.fields(cls)]}"
            )
        try:
            return cls(**{k: float(v) for k, v in values.items()})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None

    def identity(self) -> dict:
        """What a data root records of its scene: the version and every setting."""
        return {"version": SCENE_VERSION, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Profile:
    """One row of ``profiles.toml``: how big and how many."""

    name: str
    description: str
    scale: float
    seed: int
    frame_width: int
    frame_height: int
    video_fps: float
    conveyor_px_per_frame: float
    normal_underbodies: int
    defective_underbodies: dict
    video_codec: str
    synthetic_fraction: float
    models: dict = dataclasses.field(default_factory=dict)  # per-model config overrides (Table 3 = defaults)
    grid_seeds: tuple = (0,)  # training seeds of the experiment grid (the paper: 3)
    #: normal underbodies per viewpoint and split, e.g. {train = 18, val = 20, test = 40}; None: Table 2
    #: scaled to ``normal_underbodies``. Larger evaluation splits make model differences testable.
    normals_per_view: dict | None = None
    #: the models' precision, fp32 | bf16 | auto (bf16 only on native bf16 matrix units; lib.precision).
    #: ``python -m lib run --precision`` overrides it for one run (through SEALANT_PRECISION).
    precision: str = "auto"
    #: the grid's models, in table order; None: every model of ``lib.models.GRID_MODELS``. ``python -m lib
    #: run --models`` replaces the list, or adds to it with a leading '+' (``lib.models.run_models``).
    grid_models: tuple | None = None
    #: the simulated line's scene: overrides of ``lib.acquire.scene.SceneConfig`` (its defaults are the
    #: calibrated default line; a photometric study sets lamp_intensity, colour_temperature, glare, shadow)
    scene: dict = dataclasses.field(default_factory=dict)
    #: a dry run (``paper-dry``): the paper's geometry and model sizes with token counts and budgets, to
    #: prove shapes, memory and files on a CPU; its numbers mean nothing and every report says so
    dry_run: bool = False

    def __post_init__(self) -> None:
        self.scene_config  # noqa: B018 - validate the scene table now, naming the profile
        if self.grid_models is not None and (
            not self.grid_models or not all(isinstance(m, str) and m for m in self.grid_models)
        ):  # the names are checked against GRID_MODELS by lib.models.run_models (no torch import here)
            raise ValueError(
                f"profile {self.name!r}: grid_models must be a non-empty list of model names, "
                f"got {self.grid_models!r}"
            )
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(
                f"profile {self.name!r}: precision must be fp32, bf16 or auto, got {self.precision!r}"
            )
        if not 0.05 <= self.scale <= 1.0:
            raise ValueError(f"profile {self.name!r}: scale must lie in [0.05, 1], got {self.scale}")
        if self.normal_underbodies < 0:
            raise ValueError(
                f"profile {self.name!r}: normal_underbodies must be >= 0, got {self.normal_underbodies}"
            )
        if not 0.0 < self.synthetic_fraction <= 1.0:
            raise ValueError(
                f"profile {self.name!r}: synthetic_fraction must lie in (0, 1], got {self.synthetic_fraction}"
            )
        unknown = set(self.defective_underbodies) - set(VIEWPOINTS)
        if unknown:
            raise ValueError(
                f"profile {self.name!r}: defective_underbodies has unknown viewpoints {sorted(unknown)}"
            )
        for view, count in self.defective_underbodies.items():
            if int(count) < 0:
                raise ValueError(
                    f"profile {self.name!r}: defective_underbodies[{view!r}] must be >= 0, got {count}"
                )

        if self.normals_per_view is not None:
            counts = self.normals_per_view
            bad = set(counts) ^ {"train", "val", "test"}
            if bad or any(int(c) < 1 for c in counts.values()):
                raise ValueError(
                    f"profile {self.name!r}: normals_per_view needs train, val and test counts >= 1, "
                    f"got {dict(counts)}"
                )
            total = len(VIEWPOINTS) * sum(int(c) for c in counts.values())
            if total != self.normal_underbodies:
                raise ValueError(
                    f"profile {self.name!r}: normals_per_view adds up to {total} normal underbodies "
                    f"over {len(VIEWPOINTS)} viewpoints, but normal_underbodies = {self.normal_underbodies}"
                )

    def px(self, paper_pixels: float) -> int:
        """A paper-scale length in this profile's pixels."""
        return int(round(paper_pixels * self.scale))

    @property
    def scene_config(self) -> SceneConfig:
        """The scene of the simulated line (its table: ``lib.acquire.scene``)."""
        return SceneConfig.from_dict(self.scene, where=f"profile {self.name!r} [scene]")

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of a video frame, rounded to a multiple of 8 for codecs."""
        return (_round8(self.frame_width * self.scale), _round8(self.frame_height * self.scale))

    @property
    def crop_size(self) -> tuple[int, int]:
        """(width, height) of a viewpoint crop (848x480 at paper scale)."""
        return (self.px(PAPER_CROP_SIZE[0]), self.px(PAPER_CROP_SIZE[1]))

    @property
    def n_passes(self) -> int:
        return self.normal_underbodies + sum(int(v) for v in self.defective_underbodies.values())

    def with_overrides(self, **changes) -> Profile:
        """A copy with some fields changed (validated like the original)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown profile field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)


def _round8(x: float) -> int:
    return max(8, int(round(x / 8.0)) * 8)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # the simulator does not need torch
        return False
    return bool(torch.cuda.is_available())


def shown_path(path) -> str:
    """A path as a report may print it: relative to the repository when inside it, else '…/<parent>/<name>'
    (a report page never shows a reader's absolute local paths)."""
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO_ROOT.resolve()).as_posix()
    except ValueError:
        return "…/" + "/".join(p.parts[-2:])


def available_cores() -> int:
    """The CPU cores this process may run on (``taskset -c 0 make run``: 1), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_description(cpuinfo: str | None = None, cores: int | None = None) -> str:
    """'AMD EPYC 9454 (2 cores; AVX-512, avx512_bf16, no AMX)': the CPU line every timing carries, from
    ``/proc/cpuinfo`` (or the text given) and the cores this process may use; machines of one core
    count differ by 1.5x in speed."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), ""
    )
    flags = set(
        next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    )
    units = ["AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")]
    units += [f for f in ("avx512_bf16", "avx512_vnni") if f in flags]
    units.append("AMX" if {"amx_bf16", "amx_tile"} <= flags else "no AMX")
    cores = cores or available_cores()
    count = f"{cores} core{'s' if cores != 1 else ''}"
    return f"{name or platform.processor() or platform.machine()} ({count}; {', '.join(units)})"


def resolve_profile_name(name: str) -> str:
    """``auto`` -> ``paper`` with CUDA, else ``quick``; other names are checked."""
    if name == "auto":
        return "paper" if cuda_available() else "quick"
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)} or 'auto'")
    return name


#: the environment variable through which ``python -m lib run --precision`` reaches every process
PRECISION_ENV = "SEALANT_PRECISION"


def load_profile(name: str = "auto", path: Path | str | None = None) -> Profile:
    """Read a profile from ``profiles.toml`` (or another TOML file with the same fields)."""
    path = Path(path) if path is not None else PROFILES_FILE
    resolved = resolve_profile_name(name) if path == PROFILES_FILE else name
    with open(path, "rb") as fh:
        table = tomllib.load(fh)
    if resolved not in table:
        raise ValueError(f"profile {resolved!r} not found in {path}; it has {sorted(table)}")
    row = dict(table[resolved])
    fields = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    row.setdefault("models", {})
    row.setdefault("scene", {})
    row["grid_seeds"] = tuple(row.get("grid_seeds", (0,)))
    row.setdefault("normals_per_view", None)
    row.setdefault("precision", "auto")
    row.setdefault("dry_run", False)
    row["grid_models"] = tuple(row["grid_models"]) if "grid_models" in row else None
    if os.environ.get(PRECISION_ENV):  # a run's --precision, seen by its grid workers and notebooks
        row["precision"] = os.environ[PRECISION_ENV]
    missing = fields - set(row)
    extra = set(row) - fields
    if missing or extra:
        raise ValueError(
            f"{path} [{resolved}]: missing fields {sorted(missing)}, unknown fields {sorted(extra)}"
        )
    return Profile(name=resolved, **row)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and (if present) torch; return a numpy Generator for explicit use."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    return np.random.default_rng(seed)


def select_device(preferred: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; an explicit choice is checked."""
    if preferred == "auto":
        return "cuda" if cuda_available() else "cpu"
    if preferred == "cuda" and not cuda_available():
        raise RuntimeError("device='cuda' was requested but torch.cuda.is_available() is False")
    if preferred not in ("cpu", "cuda") and not preferred.startswith("cuda:"):
        raise ValueError(f"unknown device {preferred!r}; use 'auto', 'cpu' or 'cuda[:N]'")
    return preferred


def data_root_for(profile_name: str, data_root: Path | str | None = None) -> Path:
    """The one rule for where a profile's data lives: ``data_root`` if given, else ``<repo>/data/<profile>``."""
    return Path(data_root) if data_root else REPO_ROOT / "data" / resolve_profile_name(profile_name)


def open_profile(profile: str = "auto", data_root: Path | str | None = None) -> tuple[Profile, Path]:
    """What every notebook opens with: the profile and its data root (``None``: ``data/<profile>``)."""
    from lib import display

    prof = load_profile(profile)
    display.install()  # tables without row numbers, counts as integers (only inside IPython)
    if prof.dry_run:  # said at the top of every notebook of a dry run, so no number is read as a result
        print(f"*** {prof.description} ***")
    return prof, data_root_for(prof.name, data_root)
