"""Models behind one interface (``lib.models.base.AnomalyModel``)."""

from lib.models.base import REGISTRY, AnomalyModel
from lib.models.efficientad import EfficientADM, EfficientADS
from lib.models.gaussian_baseline import GaussianBaseline
from lib.models.memseg import MemSeg
from lib.models.patchcore import PatchCore
from lib.models.simplenet import SimpleNet

__all__ = [
    "REGISTRY",
    "AnomalyModel",
    "EfficientADM",
    "EfficientADS",
    "GaussianBaseline",
    "MemSeg",
    "PatchCore",
    "SimpleNet",
    "make_model",
    "model_config",
]


def model_config(name: str, profile=None, **overrides):
    """The config dataclass of model ``name``: Table 3's defaults, the profile's overrides, then ``overrides``.

    ``backbone="auto"`` picks the paper's backbone when its weights are available offline,
    else the best offline one (see lib.models.backbones.default_backbone).
    """
    import dataclasses

    from lib.models.backbones import default_backbone

    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    settings = dict(profile.models.get(name, {})) if profile is not None else {}
    settings.update(overrides)
    fields = {f.name: f for f in dataclasses.fields(cls.config_class)}
    unknown = set(settings) - set(fields)
    if unknown:
        raise ValueError(f"model {name!r} has no setting(s) {sorted(unknown)}")
    if settings.get("backbone") == "auto":
        settings["backbone"] = default_backbone(fields["backbone"].default)
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return cls.config_class(**settings)


def make_model(name: str, profile=None, **overrides) -> AnomalyModel:
    """A model built from ``model_config(name, profile, **overrides)``."""
    config = model_config(name, profile, **overrides)  # raises on an unknown model or setting
    return REGISTRY[name](config)
