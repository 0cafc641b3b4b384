"""SimpleNet training glue (paper section 5.4, Table 3).

Checkpoint policy: the **last** meta epoch is kept (no model selection on the test split, and
none on validation either); the training curve is recorded in ``history``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from tqdm.auto import tqdm

from lib.config import select_device
from lib.models.backbones import require_pretrained
from lib.models.base import AnomalyModel, batched_forward, numpy_to_tensors, register, tensors_to_numpy
from lib.models.simplenet.torch_model import SimpleNetModel, truncated_l1


@dataclasses.dataclass(frozen=True)
class SimpleNetConfig:
    """Table 3: WideResNet50 layer2+3, patch 3, embed 1536/1536, pre-projection 1, noise sigma 0.015,
    discriminator 2 layers hidden 1024, margin 0.5, 40 meta epochs x 4 GAN epochs, batch 8, 322x322."""

    input_size: tuple = (322, 322)
    backbone: str = "wide_resnet50_2"
    weights: str = ""
    layers: tuple = ("layer2", "layer3")
    patch_size: int = 3
    pretrain_embed_dim: int = 1536
    target_embed_dim: int = 1536
    pre_proj: int = 1
    noise_std: float = 0.015  # in raw feature units (the paper's WideResNet50 features)
    # offline backbones have other feature scales: standardise per channel on the training patches,
    # then noise_std is relative to unit variance (quick/smoke profiles use 0.3; see docs/models.md)
    standardize_features: bool = False
    dsc_layers: int = 2
    dsc_hidden: int = 1024
    dsc_margin: float = 0.5
    meta_epochs: int = 40
    gan_epochs: int = 4
    batch_size: int = 8
    lr: float = 1e-4  # adaptor: AdamW with its default weight decay (0.01), as the reference
    dsc_lr: float = 2e-4  # discriminator: Adam, weight decay 1e-5, as the reference
    xavier_init: bool = False  # the reference's Xavier-normal init (see docs/models.md)
    cos_lr: bool = False  # cosine annealing of the discriminator's lr (the reference's flag, off by default)
    blur_sigma: float = 4.0
    allow_random_backbone: bool = (
        True  # False (the paper profile): refuse a backbone without pretrained weights
    )
    device: str = "auto"
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 on native bf16 matrix units; lib.precision)
    seed: int = 0


@register
class SimpleNet(AnomalyModel):
    name = "simplenet"
    table3_backbone = "WideResNet50 (layer2, layer3), ImageNet"
    config_class = SimpleNetConfig
    training_notebook = "07_train_simplenet.ipynb"
    quick_fit = {"backbone": "auto", "meta_epochs": 1, "allow_random_backbone": True}
    budget_fields = ("meta_epochs",)
    probe_overrides = {"gan_epochs": 1}  # one unit = one epoch of one GAN pass over one batch

    @classmethod
    def budget_units(cls, config, n_train: int) -> dict:
        import math

        return {
            "meta_epochs": config.meta_epochs * config.gan_epochs * math.ceil(n_train / config.batch_size)
        }

    exportable = True
    relative_cost = 2

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.device = select_device(c.device)
        torch.manual_seed(c.seed)
        self.net = SimpleNetModel(
            c.backbone,
            c.layers,
            c.weights or None,
            c.patch_size,
            c.pretrain_embed_dim,
            c.target_embed_dim,
            c.pre_proj,
            c.dsc_hidden,
            c.dsc_layers,
            c.xavier_init,
            c.blur_sigma,
        ).to(self.device)
        self.net.extractor.precision = c.precision
        require_pretrained(self.net.extractor.info, c.allow_random_backbone, self.name)
        self.backbone_description = str(self.net.extractor.info)
        self.grid: tuple[int, int] | None = None

    def _embed_all(self, images, progress=False):
        feats = []
        for i in tqdm(range(0, len(images), 8), desc="features", disable=not progress, leave=False):
            b = torch.from_numpy(np.ascontiguousarray(images[i : i + 8])).to(self.device)
            f, self.grid = self.net.embed(b)
            feats.append(f.view(len(b), -1, f.shape[-1]))
        return torch.cat(feats)  # (N, h*w, D)

    def fit(self, train, val=None, progress=False) -> dict:
        c = self.config
        g = torch.Generator(device="cpu").manual_seed(c.seed)
        self.net.feat_mean.zero_()
        self.net.feat_std.fill_(1.0)
        feats = self._embed_all(train, progress)  # the backbone is frozen: embed once
        if c.standardize_features:
            flat = feats.reshape(-1, feats.shape[-1])
            self.net.feat_mean.copy_(flat.mean(0))
            self.net.feat_std.copy_(flat.std(0).clamp_min(1e-6))
            feats = (feats - self.net.feat_mean) / self.net.feat_std
        adaptor, dsc = self.net.adaptor, self.net.discriminator
        opt_a = torch.optim.AdamW(adaptor.parameters(), lr=c.lr)  # default weight decay, as the reference
        opt_d = torch.optim.Adam(dsc.parameters(), lr=c.dsc_lr, weight_decay=1e-5)
        steps = c.meta_epochs * c.gan_epochs
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_d, max(1, steps), c.dsc_lr * 0.4)
        sched = sched if c.cos_lr else None
        curve = []
        for _ in tqdm(range(c.meta_epochs), desc="SimpleNet meta epochs", disable=not progress, leave=False):
            adaptor.train()
            dsc.train()
            losses, p_true, p_fake = [], [], []
            for _ in range(c.gan_epochs):
                order = torch.randperm(len(feats), generator=g)
                for i in range(0, len(order), c.batch_size):
                    x = feats[order[i : i + c.batch_size]].reshape(-1, feats.shape[-1])
                    true = adaptor(x)
                    noise = torch.randn(true.shape, generator=g).to(self.device) * c.noise_std
                    scores = dsc(torch.cat([true, true + noise]))
                    t_s, f_s = scores[: len(true)], scores[len(true) :]
                    loss = truncated_l1(t_s, f_s, c.dsc_margin)
                    opt_a.zero_grad()
                    opt_d.zero_grad()
                    loss.backward()
                    opt_a.step()
                    opt_d.step()
                    losses.append(float(loss.detach()))
                    p_true.append(float((t_s.detach() >= c.dsc_margin).float().mean()))
                    p_fake.append(float((f_s.detach() < -c.dsc_margin).float().mean()))
                if sched is not None:
                    sched.step()
            curve.append(
                {
                    "loss": float(np.mean(losses)),
                    "p_true": float(np.mean(p_true)),
                    "p_fake": float(np.mean(p_fake)),
                }
            )
        self.history = {
            "curve": curve,
            "checkpoint": "last meta epoch",
            "n_patches": int(feats.shape[0] * feats.shape[1]),
        }
        return self.history

    @torch.no_grad()
    def predict(self, images):
        self.net.eval()
        return batched_forward(self.net, images, self.device)

    def state_dict(self):
        sd = {"feat_mean": self.net.feat_mean, "feat_std": self.net.feat_std}
        sd.update({f"adaptor.{k}": v for k, v in self.net.adaptor.state_dict().items()})
        sd.update({f"discriminator.{k}": v for k, v in self.net.discriminator.state_dict().items()})
        return tensors_to_numpy(sd)

    def load_state_dict(self, state):
        self.net.feat_mean.copy_(torch.from_numpy(state["feat_mean"]))
        self.net.feat_std.copy_(torch.from_numpy(state["feat_std"]))
        self.net.adaptor.load_state_dict(numpy_to_tensors(state, "adaptor."))
        self.net.discriminator.load_state_dict(numpy_to_tensors(state, "discriminator."))
