"""MemSeg training glue (paper section 5.2, Table 3).

Checkpoint policy: the last iteration (no selection on any split). The ResNet18 encoder is
randomly initialised (no pretraining, as in the paper); its BatchNorm statistics are set on the
training images and it stays frozen, so the memory bank of 30 normal samples stays valid.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from lib.config import select_device
from lib.models.base import AnomalyModel, batched_forward, numpy_to_tensors, register, tensors_to_numpy
from lib.models.memseg.anomaly_synthesis import SynthesisConfig, synthesize
from lib.models.memseg.torch_model import MemSegModel, focal_loss


@dataclasses.dataclass(frozen=True)
class MemSegConfig:
    """Table 3: 256x256, ResNet18 (no pretraining), 15,000 iterations, batch 8, AdamW lr 0.003 wd 5e-4,
    cosine warm-up 0.2 to min lr 1e-4, memory 30, grid 8, Perlin synthesis, loss 0.7 focal (gamma 4) + 0.3 L1."""

    input_size: tuple = (256, 256)
    iterations: int = 15000
    batch_size: int = 8
    lr: float = 0.003
    weight_decay: float = 5e-4
    warmup_ratio: float = 0.2
    min_lr: float = 1e-4
    memory_samples: int = 30
    focal_gamma: float = 4.0
    focal_weight: float = 0.7
    l1_weight: float = 0.3
    perlin_scale: int = 5
    min_perlin_scale: int = 3
    perlin_threshold: float = 0.5
    anomaly_probability: float = 0.9
    transparency_range: tuple = (0.8, 1.0)
    structure_grid: int = 8
    top_k_fraction: float = 100 / (256 * 256)  # image score: mean of the top 100 pixels at 256x256
    device: str = "auto"
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 on native bf16 matrix units; lib.precision)
    seed: int = 0


def cosine_warmup(step: int, total: int, base: float, minimum: float, warmup_ratio: float) -> float:
    warm = max(1, int(total * warmup_ratio))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return minimum + (base - minimum) * 0.5 * (1 + math.cos(math.pi * t))


@register
class MemSeg(AnomalyModel):
    name = "memseg"
    config_class = MemSegConfig
    training_notebook = "05_train_memseg.ipynb"
    table3_backbone = "ResNet18 (no pretraining)"
    quick_fit = {"iterations": 2, "batch_size": 2, "memory_samples": 8}
    budget_fields = ("iterations",)
    exportable = True
    relative_cost = 4

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        torch.manual_seed(self.config.seed)
        self.device = select_device(self.config.device)
        self.net = MemSegModel(self.config.memory_samples, self.config.top_k_fraction).to(self.device)
        self.net.precision = self.config.precision
        self.backbone_description = "resnet18 (random init, no pretraining, as the paper)"

    def _t(self, images):
        return self.net.to_input(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))

    def fit(self, train, val=None, progress=False) -> dict:
        c = self.config
        rng = np.random.default_rng([c.seed, 61])
        train = np.asarray(train)
        if len(train) <= c.memory_samples:
            raise ValueError(
                f"memseg needs more than {c.memory_samples} training images (memory), got {len(train)}"
            )
        self.net.calibrate_encoder(self._t(train[i : i + 16]) for i in range(0, len(train), 16))
        mem_idx = rng.choice(len(train), c.memory_samples, replace=False)
        self.net.set_memory(self._t(train[mem_idx]))
        pool = np.setdiff1d(np.arange(len(train)), mem_idx)
        syn = SynthesisConfig(
            c.perlin_scale,
            c.min_perlin_scale,
            c.perlin_threshold,
            c.anomaly_probability,
            tuple(c.transparency_range),
            c.structure_grid,
        )
        params = [p for n, p in self.net.named_parameters() if not n.startswith("encoder.")]
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        curve = []
        self.net.train()
        for step in tqdm(range(c.iterations), desc="MemSeg iterations", disable=not progress, leave=False):
            for g in opt.param_groups:
                g["lr"] = cosine_warmup(step, c.iterations, c.lr, c.min_lr, c.warmup_ratio)
            idx = rng.choice(pool, c.batch_size, replace=len(pool) < c.batch_size)
            imgs, masks = [], []
            for i in idx:
                fg = train[i].max(axis=2) > 0  # masked variant: only inside the ROI
                img, m = synthesize(train[i], syn, rng, fg)
                imgs.append(img)
                masks.append(m)
            x = self._t(np.stack(imgs))
            y = torch.from_numpy(np.stack(masks)).to(self.device)
            logits = self.net.logits(x)
            prob = torch.softmax(logits, 1)[:, 1]
            loss = (
                c.focal_weight * focal_loss(logits, y, c.focal_gamma) + c.l1_weight * (prob - y).abs().mean()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(float(loss.detach()))
        every = max(1, len(curve) // 50)
        self.history = {
            "curve": [{"loss": float(np.mean(curve[i : i + every]))} for i in range(0, len(curve), every)],
            "checkpoint": "last iteration",
        }
        return self.history

    @torch.no_grad()
    def predict(self, images):
        self.net.eval()
        return batched_forward(self.net, images, self.device)

    def state_dict(self):
        return tensors_to_numpy(self.net.state_dict())

    def load_state_dict(self, state):
        for i in range(len(self.net.channels)):
            setattr(self.net, f"memory{i}", torch.from_numpy(state[f"memory{i}"]).to(self.device))
        self.net.load_state_dict(numpy_to_tensors(state))
        for p in self.net.encoder.parameters():
            p.requires_grad_(False)
