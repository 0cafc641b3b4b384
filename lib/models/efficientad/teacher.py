"""EfficientAD's teacher: a PDN distilled once per profile from an offline backbone, then stored.

The paper's teacher is pretrained once (distilled from WideResNet101 on ImageNet) and reused by every
training run. We do the same offline: the PDN learns the best available backbone's layer2+3 patch
features (``lib.models.backbones``) on the training crops of every viewpoint plus the photographs
shipped with scikit-image/scikit-learn, augmented. The result is stored as safetensors + a JSON
sidecar under ``<data_root>/teachers/`` and reused by every grid cell (seeds, views, raw/masked).
Only training-split normal images are used, so nothing of validation or test leaks into it.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib.fileio import write_text


def distil_teacher(teacher, to_input, images, config, rng, device, progress=False) -> tuple[list, str]:
    """Train ``teacher`` (a PDN) to regress standardised backbone features; returns (loss curve, source).

    The original's geometry: a *padded* copy of the PDN (same weights, zero padding in its convs) sees
    the image at the model's input size, the backbone sees the same crop at twice that size, so the
    backbone's stride-8 layer2 grid (layer3 upsampled onto it, 3x3-aggregated) has exactly the padded
    PDN's output size (input / 4) and each target sits over the patch it describes. The trained
    weights are then copied into ``teacher`` (unpadded, as used for training and inference).
    """
    from lib.models.backbones import FeatureExtractor, default_backbone, require_pretrained
    from lib.models.data import resize_image
    from lib.models.efficientad.augment import colour_jitter, offline_photos, random_crop
    from lib.models.efficientad.torch_model import pdn
    from lib.models.features import aggregate_patches

    if len(images) == 0:
        raise ValueError("no training images to distil the teacher on")
    name = default_backbone() if config.teacher_backbone == "auto" else config.teacher_backbone
    fe = FeatureExtractor(name, ("layer2", "layer3")).to(device)
    require_pretrained(fe.info, getattr(config, "allow_random_backbone", True), "EfficientAD teacher")
    photos = offline_photos()
    w, h = tuple(config.input_size)
    big = (2 * w, 2 * h)  # Table 3: teacher input 512 for the 256-pixel model input
    padded = pdn(config.model_size, config.out_channels, padding=True).to(device)
    padded.load_state_dict(teacher.state_dict())
    head = torch.nn.Conv2d(config.out_channels, sum(fe.channels), 1).to(device)
    params = list(padded.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=config.teacher_lr, weight_decay=1e-5)

    def batch():
        large, small = [], []
        for _ in range(8):
            src = (
                images[int(rng.integers(len(images)))]
                if rng.random() < 0.5
                else photos[int(rng.integers(len(photos)))]
            )
            crop = colour_jitter(random_crop(src, big, rng), rng)
            large.append(crop)
            small.append(resize_image(crop, (w, h)))
        with torch.no_grad():
            per_layer, (gh, gw) = aggregate_patches(fe(torch.from_numpy(np.stack(large)).to(device)), 3)
            target = torch.cat(per_layer, 1).view(len(large), gh, gw, -1).permute(0, 3, 1, 2)
        return small, target

    # standardise the targets per channel with statistics of 4 batches drawn before training (the
    # original uses the training set's channel mean and std; one batch alone gives wild outliers)
    with torch.no_grad():
        pool = torch.cat([batch()[1] for _ in range(4)])
        stats = (pool.mean((0, 2, 3), keepdim=True), pool.std((0, 2, 3), keepdim=True) + 1e-6)
        del pool
    curve = []
    padded.train()
    for _ in tqdm(range(config.teacher_iterations), desc="teacher distillation", disable=not progress):
        small, target = batch()
        target = (target - stats[0]) / stats[1]
        pred = head(padded(to_input(torch.from_numpy(np.stack(small)).to(device))))
        if pred.shape[-2:] != target.shape[-2:]:  # an input size not divisible by 8: nearest grid match
            target = F.interpolate(target, size=pred.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    teacher.load_state_dict(padded.state_dict())
    teacher.eval()
    source = (
        f"distilled offline from {fe.info} at {big[0]}x{big[1]} into a padded PDN at {w}x{h} "
        f"({config.teacher_iterations} iterations)"
    )
    return curve, source


def teacher_path(data_root, config, seed: int = 0) -> Path:
    """Where the profile's teacher for this PDN size, input size and schedule is stored."""
    w, h = config.input_size
    name = (
        f"pdn_{config.model_size}_{w}x{h}_c{config.out_channels}_it{config.teacher_iterations}_seed{seed}"
        "_pad2x"  # distilled padded, target at twice the input size (older teachers are not reused)
    )
    return Path(data_root) / "teachers" / f"{name}.safetensors"


def ensure_teacher(config, data_root, manifest, seed: int = 0, progress: bool = True) -> Path:
    """Return the stored teacher file, distilling it first if missing (one process at a time)."""
    from safetensors.torch import save_file

    from lib.config import seed_everything, select_device
    from lib.models.data import load_images
    from lib.models.efficientad.torch_model import EfficientADModel

    path = teacher_path(data_root, config, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel grid cells wait for the first to finish distilling
        if path.is_file() and path.with_suffix(".json").is_file():
            return path
        rows = manifest[(manifest.split == "train") & (manifest.label == "normal")]
        images = load_images(data_root, rows, tuple(config.input_size), masked=False)
        seed_everything(seed)
        device = select_device(config.device)
        net = EfficientADModel(config.model_size, config.out_channels, input_size=tuple(config.input_size))
        net = net.to(device)
        t0 = time.perf_counter()
        curve, source = distil_teacher(
            net.teacher, net.to_input, images, config, np.random.default_rng([seed, 72]), device, progress
        )
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in net.teacher.state_dict().items()}, str(tmp))
        meta = {
            "source": source,
            "model_size": config.model_size,
            "input_size": list(config.input_size),
            "training_images": len(images),
            "seconds": round(time.perf_counter() - t0, 1),
            "curve": curve,
        }
        write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
        tmp.replace(path)
        return path


def teacher_info(path) -> dict:
    """The JSON sidecar of a stored teacher ({} for a user file without one)."""
    side = Path(path).with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else {}


def prepare_teacher(name: str, profile, data_root, manifest, progress: bool = True) -> Path:
    """The stored teacher for model ``name`` (efficientad_s/_m) under ``profile``'s settings."""
    from lib.models.base import REGISTRY

    config = REGISTRY[name].config_for(profile)
    return ensure_teacher(config, data_root, manifest, seed=profile.seed, progress=progress)
