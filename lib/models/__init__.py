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
    "make_model",
    "model_config",
]


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
