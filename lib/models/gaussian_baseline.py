"""A classical floor: a per-pixel Gaussian of the aligned training crops.

Crops are aligned by template matching, so every pixel position sees the same part of the
underbody; the anomaly map is the largest per-channel z-score, smoothed. Any deep model
must beat this to be worth its cost.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from lib.models.base import AnomalyModel, register


@dataclasses.dataclass(frozen=True)
class GaussianBaselineConfig:
    input_size: tuple = (212, 120)  # (width, height)
    smooth_sigma: float = 2.0  # Gaussian smoothing of the z-score map, in pixels
    min_std: float = 4.0  # grey levels: floor of the per-pixel std (flat regions would explode)


@register
class GaussianBaseline(AnomalyModel):
    name = "baseline"
    training_notebook = "04_train_baseline.ipynb"
    config_class = GaussianBaselineConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, train, val=None) -> dict:
        x = np.asarray(train, dtype=np.float32)
        if x.ndim != 4 or len(x) < 2:
            raise ValueError(f"train must be (N>=2, H, W, 3) images, got shape {x.shape}")
        self.mean = x.mean(axis=0)
        self.std = np.maximum(x.std(axis=0), self.config.min_std)
        self.history = {"n_train": len(x)}
        return self.history

    def predict(self, images):
        if self.mean is None:
            raise RuntimeError("baseline: call fit() or load() before predict()")
        x = np.asarray(images, dtype=np.float32)
        if x.shape[1:] != self.mean.shape:
            raise ValueError(f"images have shape {x.shape[1:]}, the model expects {self.mean.shape}")
        z = (np.abs(x - self.mean) / self.std).max(axis=3)
        maps = np.stack([cv2.GaussianBlur(m, (0, 0), self.config.smooth_sigma) for m in z]).astype(np.float32)
        return maps.reshape(len(maps), -1).max(axis=1), maps

    def state_dict(self):
        return {"mean": self.mean, "std": self.std}

    def state_spec(self):
        w, h = self.input_size
        return {"mean": (h, w, 3), "std": (h, w, 3)}

    def load_state_dict(self, state):
        self.mean, self.std = state["mean"].astype(np.float32), state["std"].astype(np.float32)
