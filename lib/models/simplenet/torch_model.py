"""SimpleNet as plain nn.Modules (paper section 5.4): frozen features, adaptor, noise, discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.models.backbones import FeatureExtractor
from lib.models.features import aggregate_patches, gaussian_blur, project


def xavier_init(module: nn.Module) -> None:
    """The reference SimpleNet's init: Xavier-normal weights for every linear and conv layer."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.xavier_normal_(module.weight)


class FeatureAdaptor(nn.Module):
    """G_theta: ``pre_proj`` fully connected layers with bias, as the reference (paper: one layer).

    ``xavier``: the reference's Xavier-normal init; off by default (PyTorch's init), see docs/models.md.
    """

    def __init__(self, dim: int, n_layers: int = 1, xavier: bool = False):
        super().__init__()
        layers = []
        for i in range(n_layers):
            layers.append(nn.Linear(dim, dim))
            if i < n_layers - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers) if layers else nn.Identity()
        if xavier:
            self.apply(xavier_init)

    def forward(self, x):
        return self.net(x)


class Discriminator(nn.Module):
    """D_psi: a ``n_layers`` MLP (paper: 2 layers, hidden 1024) giving one logit per patch."""

    def __init__(self, dim: int, hidden: int = 1024, n_layers: int = 2, xavier: bool = False):
        super().__init__()
        layers, width = [], dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(nn.Linear(width, 1, bias=False))
        self.net = nn.Sequential(*layers)
        if xavier:
            self.apply(xavier_init)

    def forward(self, x):
        return self.net(x)[:, 0]


def truncated_l1(true_scores: torch.Tensor, fake_scores: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 12: max(0, th+ - D(q)) + max(0, -th- + D(q-)), with th+ = th- = margin."""
    return torch.clamp(margin - true_scores, min=0).mean() + torch.clamp(margin + fake_scores, min=0).mean()


class SimpleNetModel(nn.Module):
    """``forward`` (eval): uint8 BGR (N, H, W, 3) -> (image scores (N,), anomaly maps (N, H, W)).

    The one inference entry: ``SimpleNet.predict``, the ONNX export and the benchmarks all call it.
    """

    def __init__(
        self,
        backbone,
        layers,
        weights,
        patch_size,
        pretrain_dim,
        target_dim,
        pre_proj,
        hidden,
        dsc_layers,
        xavier: bool = False,
        blur_sigma: float = 4.0,
    ):
        super().__init__()
        self.extractor = FeatureExtractor(backbone, layers, weights)
        self.patch_size, self.pretrain_dim, self.target_dim = patch_size, pretrain_dim, target_dim
        self.blur_sigma = blur_sigma
        self.adaptor = FeatureAdaptor(target_dim, pre_proj, xavier)
        self.discriminator = Discriminator(target_dim, hidden, dsc_layers, xavier)
        # per-channel standardisation of the embedding, fitted on the training patches, so that the
        # noise sigma (0.015) means the same relative perturbation whatever the backbone's scale
        self.register_buffer("feat_mean", torch.zeros(target_dim))
        self.register_buffer("feat_std", torch.ones(target_dim))

    @torch.no_grad()
    def embed(self, images: torch.Tensor):
        per_layer, grid = aggregate_patches(self.extractor(images), self.patch_size)
        feats = project(per_layer, self.pretrain_dim, self.target_dim)
        return (feats - self.feat_mean) / self.feat_std, grid

    def patch_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Anomaly score per patch: the negated discriminator logit (high = anomalous)."""
        return -self.discriminator(self.adaptor(features))

    @torch.no_grad()
    def forward(self, images: torch.Tensor):
        """Image score: the highest patch score; map: patch scores upsampled bilinearly, then blurred."""
        n, h_in, w_in = images.shape[:3]
        feats, (h, w) = self.embed(images)
        s = self.patch_scores(feats.reshape(-1, feats.shape[-1])).view(n, 1, h, w)
        maps = F.interpolate(s, size=(h_in, w_in), mode="bilinear", align_corners=False)
        return s.view(n, -1).amax(1), gaussian_blur(maps, self.blur_sigma)[:, 0]
