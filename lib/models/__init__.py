"""Models behind one interface (``lib.models.base.AnomalyModel``)."""

from lib.models.base import REGISTRY, AnomalyModel
from lib.models.efficientad import EfficientADM, EfficientADS
from lib.models.gaussian_baseline import GaussianBaseline
from lib.models.memseg import MemSeg
from lib.models.patchcore import PatchCore
from lib.models.simplenet import SimpleNet

#: the models of the experiment grid, in the order tables list them (a new model: one line here)
GRID_MODELS = ("baseline", "patchcore", "memseg", "efficientad_s", "efficientad_m", "simplenet")

__all__ = [
    "GRID_MODELS",
    "REGISTRY",
    "AnomalyModel",
    "EfficientADM",
    "EfficientADS",
    "GaussianBaseline",
    "MemSeg",
    "PatchCore",
    "SimpleNet",
    "budget_line",
    "make_model",
    "table3_deviations",
    "model_config",
    "run_models",
]


def run_models(profile, requested=None) -> tuple[str, ...]:
    """The grid models of a run: the profile's (all of ``GRID_MODELS`` when it names none), or
    ``requested``: a list replaces them, and a list of '+name' entries adds to them (in table order)."""
    default = tuple(profile.grid_models or GRID_MODELS)
    unknown = sorted(set(default) - set(GRID_MODELS))
    if unknown:
        raise ValueError(
            f"profile {profile.name!r}: grid_models has unknown model(s) {unknown}; "
            f"choose from {list(GRID_MODELS)}"
        )
    if not requested:
        return default
    requested = [str(m).strip() for m in requested if str(m).strip()]
    adds = [m[1:] for m in requested if m.startswith("+")]
    if adds and len(adds) != len(requested):
        raise ValueError(f"--models: give either a list or '+name' additions, not both: {requested}")
    wanted = set(default) | set(adds) if adds else set(requested)
    unknown = sorted(wanted - set(GRID_MODELS))
    if unknown:
        raise ValueError(f"--models: unknown model(s) {unknown}; choose from {list(GRID_MODELS)}")
    return tuple(m for m in GRID_MODELS if m in wanted)


def model_config(name: str, profile=None, **overrides):
    """The config dataclass of model ``name``: Table 3's defaults, the profile's overrides, then ``overrides``
    (``AnomalyModel.config_for``)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name].config_for(profile, **overrides)


def make_model(name: str, profile=None, **overrides) -> AnomalyModel:
    """A model built from ``model_config(name, profile, **overrides)``."""
    config = model_config(name, profile, **overrides)  # raises on an unknown model or setting
    return REGISTRY[name](config)


#: config fields that are run plumbing, not Table 3 settings
NOT_TABLE3 = frozenset({"device", "seed", "weights", "allow_random_backbone", "teacher_weights", "precision"})


def table3_deviations(profile, models=None) -> list[dict]:
    """Every setting in which ``profile`` departs from Table 3 (the config dataclasses' defaults), one
    row per (model, setting): model, setting, Table 3, this profile. The baseline is not a paper model.
    ``backbone = "auto"`` is reported as written (the paper's backbone when its weights are here)."""
    rows = []
    for name in models or GRID_MODELS:
        cls = REGISTRY[name]
        if name == "baseline":
            continue
        paper = cls.config_class()
        for key, value in sorted(profile.models.get(name, {}).items()):
            if key in NOT_TABLE3:
                continue
            default = getattr(paper, key)
            value = tuple(value) if isinstance(value, list) else value
            if value != default:
                rows.append({"model": name, "setting": key, "Table 3": default, profile.name: value})
    return rows


#: settings that measure a training budget, in the order a budget is told
BUDGET_SETTINGS = ("iterations", "meta_epochs", "gan_epochs")


def budget_line(name: str, profile=None) -> str:
    """'112×64, 40 / 70,000 iterations': a model's input size and its training budget against Table 3's
    (the config's defaults), for every claim that rests on it."""
    cfg, paper = model_config(name, profile), REGISTRY[name].config_class()
    size = "×".join(map(str, cfg.input_size))
    paper_size = "×".join(map(str, paper.input_size))
    parts = [size if size == paper_size else f"{size} (Table 3: {paper_size})"]
    for key in BUDGET_SETTINGS:
        if hasattr(cfg, key):
            parts.append(f"{getattr(cfg, key):,} / {getattr(paper, key):,} {key.replace('_', ' ')}")
    if len(parts) == 1:
        parts.append("no gradient training")
    return ", ".join(parts)
