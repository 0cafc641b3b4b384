"""One interface for every model: fit, predict, save, load (safetensors + JSON, never pickles).

Images are BGR uint8 arrays (N, H, W, 3) already at the model's input size (and already
ROI-masked for the masked variant, see ``lib.models.data``). ``predict`` returns per-image
scores (N,) and anomaly maps (N, h, w) float32 at the model's output resolution; evaluation
resizes maps to the ground truth.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from pathlib import Path

import numpy as np

from lib.fileio import atomic_path, write_json

REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a model loadable by name from its saved config."""
    REGISTRY[cls.name] = cls
    return cls


def tensors_to_numpy(tensors: dict) -> dict[str, np.ndarray]:
    """A torch state dict as numpy arrays (what ``save`` writes to safetensors)."""
    return {k: v.detach().cpu().numpy() for k, v in tensors.items()}


def numpy_to_tensors(arrays: dict, prefix: str = "") -> dict:
    """The entries of a saved state under ``prefix`` (stripped) as torch tensors."""
    import torch

    return {
        k.removeprefix(prefix): torch.from_numpy(np.asarray(v))
        for k, v in arrays.items()
        if k.startswith(prefix)
    }


class AnomalyModel(abc.ABC):
    name: str = "base"
    config_class: type = object

    def __init__(self, config=None, **overrides):
        cfg = config if config is not None else self.config_class()
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = cfg
        self.history: dict = {}

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the images must have."""
        return tuple(self.config.input_size)

    @abc.abstractmethod
    def fit(self, train: np.ndarray, val: np.ndarray | None = None) -> dict:
        """Learn from normal training images (validation normals may calibrate, never test)."""

    @abc.abstractmethod
    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image scores (N,), anomaly maps (N, h, w) float32)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Named arrays to save (numpy)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...

    def save(self, directory: Path | str) -> Path:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "weights.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, str(tmp))
        write_json(d / "config.json", {"model": self.name, "config": dataclasses.asdict(self.config)})
        return d

    @classmethod
    def load(cls, directory: Path | str) -> AnomalyModel:
        from safetensors.numpy import load_file

        d = Path(directory)
        cfg_path, w_path = d / "config.json", d / "weights.safetensors"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"checkpoint file missing: {p}")
        meta = json.loads(cfg_path.read_text())
        model_cls = REGISTRY.get(meta.get("model"))
        if model_cls is None:
            raise ValueError(f"{cfg_path}: unknown model {meta.get('model')!r}; known: {sorted(REGISTRY)}")
        cfg = model_cls.config_class(**_tuples(meta["config"]))
        model = model_cls(cfg)
        model.load_state_dict(load_file(str(w_path)))
        return model


def _tuples(cfg: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
