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
from lib.identity import LEGACY_DEFAULTS

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


def batched_forward(net, images: np.ndarray, device, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``predict`` of a model whose torch module's ``forward`` is the whole inference: uint8 images in
    batches through ``net`` (eval, no grad), scores and float32 maps back as numpy."""
    import torch

    scores, maps = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            s, m = net(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device))
            scores.append(s.cpu())
            maps.append(m.cpu())
    return torch.cat(scores).numpy(), torch.cat(maps).numpy().astype(np.float32)


class CheckpointError(ValueError):
    """A checkpoint that does not fit its model; the message names the file and the key."""


def resolve_precision(cfg, model_allows: bool = True):
    """The config with ``precision = "auto"`` made concrete for its device (and the model's parity,
    ``model_allows``), so that the cell identity, the checkpoint and the tables record what ran (a
    config without the field is returned as is)."""
    if getattr(cfg, "precision", None) != "auto":
        if hasattr(cfg, "precision"):
            from lib.precision import resolve

            resolve(cfg.precision)  # rejects a misspelt value early, naming the choices
        return cfg
    from lib.config import select_device
    from lib.precision import resolve

    device = select_device(getattr(cfg, "device", "auto"))
    return dataclasses.replace(cfg, precision=resolve("auto", device, model_allows=model_allows))


def _type_error(value, default) -> str | None:
    """Why a JSON value cannot stand for a config field whose default is ``default`` (None: it can)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple | list):
        ok = isinstance(value, list | tuple)
    else:
        ok = True
    return None if ok else f"expected {type(default).__name__}, got {type(value).__name__} {value!r}"


def config_from_json(config_class, values, source) -> object:
    """The config dataclass from a saved dict: every key known, none missing, each of the right type."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: 'config' must be an object, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CheckpointError(f"{source}: unknown config key {unknown[0]!r} for {config_class.__name__}")
    values = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k in fields and k not in values}, **values}
    missing = sorted(set(fields) - set(values))
    if missing:
        raise CheckpointError(f"{source}: config key {missing[0]!r} is missing")
    for name, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else None
        why = _type_error(values[name], default)
        if why:
            raise CheckpointError(f"{source}: config key {name!r}: {why}")
    return config_class(**_tuples(values))


class AnomalyModel(abc.ABC):
    """A model of the grid. Besides ``fit``/``predict``/``save``/``load``, the class carries the hooks
    the grid and the workbook use, so that neither names a model (docs/adding-a-model.md)."""

    name: str = "base"
    config_class: type = object
    #: the notebook that trains this model's grid cells, and extra papermill parameters it takes
    training_notebook: str = ""
    #: Table 3's backbone / encoder column, as the paper writes it (for "how this run differs")
    table3_backbone: str = ""
    notebook_parameters: dict = {}  # read-only class data
    #: rough relative CPU cost of one grid cell: the grid starts the costliest cells first
    relative_cost: float = 1.0
    #: True when ``self.net`` is a torch module whose eval ``forward`` is the whole inference (ONNX export)
    exportable: bool = False
    #: config overrides that make ``fit`` finish in seconds at any input size (latency benchmarks: the
    #: paper backbones' weights may be absent there, so random ones are allowed)
    quick_fit: dict = {}
    #: what this model's cells share and is prepared once before them ("" = nothing), e.g. "teacher"
    shared_resource: str = ""
    #: the resource plan's budget (``lib.models.resources``): config fields whose unit is one training step
    #: (() = one training image), those among them trained once per profile, not per cell, and overrides
    #: that make one unit one step (SimpleNet: one GAN pass per epoch)
    budget_fields: tuple = ()
    shared_budget_fields: tuple = ()
    probe_overrides: dict = {}
    #: whether ``precision = "auto"`` may pick bf16 for this model: True only where
    #: benchmarks/precision_parity.py measured image and pixel AUROC within 0.01 of fp32 (README)
    auto_bf16: bool = False

    @classmethod
    def config_for(cls, profile=None, **overrides):
        """The config: Table 3's defaults (the dataclass), the profile's overrides, then ``overrides``.

        ``backbone="auto"`` picks the paper's backbone when its weights are available offline,
        else the best offline one (see lib.models.backbones.default_backbone).
        """
        from lib.models.backbones import default_backbone

        settings = dict(profile.models.get(cls.name, {})) if profile is not None else {}
        fields = {f.name: f for f in dataclasses.fields(cls.config_class)}
        if profile is not None and "precision" in fields:
            settings.setdefault("precision", getattr(profile, "precision", "auto"))
        settings.update(overrides)
        unknown = set(settings) - set(fields)
        if unknown:
            raise ValueError(f"model {cls.name!r} has no setting(s) {sorted(unknown)}")
        if settings.get("backbone") == "auto":
            settings["backbone"] = default_backbone(fields["backbone"].default)
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        return resolve_precision(cls.config_class(**settings), cls.auto_bf16)

    @classmethod
    def budget_units(cls, config, n_train: int) -> dict:
        """How many of each budget unit one grid cell trains (``budget_fields``; images when there are none)."""
        if not cls.budget_fields:
            return {"image": n_train}
        return {f: getattr(config, f) for f in cls.budget_fields}

    @classmethod
    def plan_extras(cls, config, n_train: int, probe: dict) -> dict:
        """What the resource plan cannot scale from the probe: extra GPU bytes for training and inference,
        extra inference FLOPs, bytes streamed once per cell (memory-bound work) and a note. {} = none."""
        return {}

    @classmethod
    def seed_overrides(cls, seed: int) -> dict:
        """Config overrides that make a cell's training seed ``seed`` ({} for a model without a seed)."""
        has_seed = "seed" in {f.name for f in dataclasses.fields(cls.config_class)}
        return {"seed": int(seed)} if has_seed else {}

    @classmethod
    def cell_overrides(cls, profile, data_root, seed: int) -> dict:
        """Config overrides of one grid cell: its seed, plus what the shared preparation provides."""
        return cls.seed_overrides(seed)

    @classmethod
    def prepare_shared(cls, profile, data_root, manifest, progress: bool = True) -> Path | None:
        """Prepare (or find) what this model's cells share; called once before them (``shared_resource``)."""
        return None

    def __init__(self, config=None, **overrides):
        cfg = config if config is not None else self.config_class()
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = resolve_precision(cfg, type(self).auto_bf16)
        self.history: dict = {}

    @property
    def precision(self) -> str:
        """'fp32' or 'bf16': what this model's convolutions run in (``lib.precision``)."""
        return getattr(self.config, "precision", "fp32")

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

    def state_spec(self) -> dict[str, tuple | None] | None:
        """The saved arrays' names and shapes this config implies (None in a shape: any size;
        None for a whole shape: any shape).

        Default: the shapes of a freshly built model's state; models whose state only exists
        after ``fit`` override it. None: nothing to check against.
        """
        try:
            state = self.state_dict()
        except Exception:  # noqa: BLE001 - an unfitted model may have no state yet
            return None
        spec = {}
        for k, v in state.items():
            shape = np.shape(v)
            if k.startswith("memory"):  # memories grow with the training set: first dim free
                spec[k] = None if int(np.prod(shape)) == 0 else (None, *shape[1:])
            else:
                spec[k] = tuple(shape)
        return spec

    def save(self, directory: Path | str) -> Path:
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "weights.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, str(tmp))
        write_json(d / "config.json", {"model": self.name, "config": dataclasses.asdict(self.config)})
        return d

    @classmethod
    def load(cls, directory: Path | str, overrides: dict | None = None) -> AnomalyModel:
        """Load a checkpoint, checking its config keys and types and its weights' names and shapes.

        ``overrides``: config fields to replace before the model is built (a deployment bundle points
        ``weights`` at the backbone file it carries)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        d = Path(directory)
        cfg_path, w_path = d / "config.json", d / "weights.safetensors"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"checkpoint file missing: {p}")
        try:
            meta = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{cfg_path}: not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or "config" not in meta:
            raise CheckpointError(f"{cfg_path}: expected {{'model': ..., 'config': {{...}}}}")
        model_cls = REGISTRY.get(meta.get("model"))
        if model_cls is None:
            raise CheckpointError(
                f"{cfg_path}: unknown model {meta.get('model')!r}; known: {sorted(REGISTRY)}"
            )
        cfg = config_from_json(model_cls.config_class, meta["config"], cfg_path)
        if overrides:
            unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cfg)})
            if unknown:
                raise CheckpointError(f"{cfg_path}: {model_cls.name} has no config field {unknown[0]!r}")
            cfg = dataclasses.replace(cfg, **overrides)
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{w_path}: unreadable safetensors file: {exc}") from None
        model = model_cls(cfg)
        spec = model.state_spec()
        if spec is not None:
            missing, extra = sorted(set(spec) - set(state)), sorted(set(state) - set(spec))
            if missing:
                raise CheckpointError(f"{w_path}: tensor {missing[0]!r} is missing ({len(missing)} in all)")
            if extra:
                raise CheckpointError(
                    f"{w_path}: unexpected tensor {extra[0]!r} for {model_cls.name} ({cfg_path})"
                )
            for key, want in spec.items():
                got = tuple(state[key].shape)
                if want is None:  # any shape
                    continue
                if want == ():  # save() stores scalars as 1-element arrays (ascontiguousarray)
                    want = (1,) if got == (1,) else want
                if len(got) != len(want) or any(
                    w is not None and w != g for w, g in zip(want, got, strict=True)
                ):
                    shown = tuple("*" if w is None else w for w in want)
                    raise CheckpointError(
                        f"{w_path}: tensor {key!r} has shape {got}, the config in {cfg_path} implies {shown}"
                    )
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{w_path}: does not fit {model_cls.name} built from {cfg_path}: {exc}"
            ) from None
        return model


def _tuples(cfg: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
