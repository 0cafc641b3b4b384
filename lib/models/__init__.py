"""Models behind one interface (``lib.models.base.AnomalyModel``)."""

from lib.models.base import REGISTRY, AnomalyModel
from lib.models.gaussian_baseline import GaussianBaseline

__all__ = ["REGISTRY", "AnomalyModel", "GaussianBaseline"]
