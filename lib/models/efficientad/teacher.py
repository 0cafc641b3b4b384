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
    """Train ``teacher`` (a PDN) to regress standardised backbone features; returns (loss curve, source)."""
    from lib.models.backbones import FeatureExtractor, default_backbone
    from lib.models.efficientad import colour_jitter, offline_photos, random_crop
    from lib.models.features import aggregate_patches

    if len(images) == 0:
        raise ValueError("no training images to distil the teacher on")
    name = default_backbone() if config.teacher_backbone == "auto" else config.teacher_backbone
    fe = FeatureExtractor(name, ("layer2", "layer3")).to(device)
    photos = offline_photos()
    size = tuple(config.input_size)
    with torch.no_grad():
        f, _ = aggregate_patches(fe(torch.from_numpy(images[:1]).to(device)), 3)
    head = torch.nn.Conv2d(config.out_channels, sum(x.shape[1] for x in f), 1).to(device)
    params = list(teacher.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=config.teacher_lr, weight_decay=1e-5)
    stats, curve = None, []
    teacher.train()
    for _ in tqdm(range(config.teacher_iterations), desc="teacher distillation", disable=not progress):
        batch = []
        for _ in range(8):
            src = (
                images[int(rng.integers(len(images)))]
                if rng.random() < 0.5
                else photos[int(rng.integers(len(photos)))]
            )
            batch.append(colour_jitter(random_crop(src, size, rng), rng))
        raw = torch.from_numpy(np.stack(batch)).to(device)
        with torch.no_grad():
            per_layer, (h, w) = aggregate_patches(fe(raw), 3)
            target = torch.cat(per_layer, 1).view(len(batch), h, w, -1).permute(0, 3, 1, 2)
            if stats is None:  # standardise the targets with the first batch's channel statistics
                stats = (target.mean((0, 2, 3), keepdim=True), target.std((0, 2, 3), keepdim=True) + 1e-6)
            target = (target - stats[0]) / stats[1]
        pred = head(teacher(to_input(raw)))
        target = F.interpolate(target, size=pred.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    teacher.eval()
    return curve, f"distilled offline from {fe.info} ({config.teacher_iterations} iterations)"


def teacher_path(data_root, config, seed: int = 0) -> Path:
    """Where the profile's teacher for this PDN size, input size and schedule is stored."""
    w, h = config.input_size
    name = f"pdn_{config.model_size}_{w}x{h}_c{config.out_channels}_it{config.teacher_iterations}_seed{seed}"
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
    from lib.models import model_config

    config = model_config(name, profile)
    return ensure_teacher(config, data_root, manifest, seed=profile.seed, progress=progress)
