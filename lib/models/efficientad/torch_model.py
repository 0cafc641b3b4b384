"""EfficientAD as plain nn.Modules (paper section 5.3): PDN teacher/student, autoencoder, maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pdn(size: str, out_channels: int = 384, padding: bool = False) -> nn.Sequential:
    """Patch description network, small or medium (EfficientAD, Batzner et al.)."""
    p = 1 if padding else 0
    if size == "small":
        return nn.Sequential(
            nn.Conv2d(3, 128, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(128, 256, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(256, 256, 3, padding=p), nn.ReLU(inplace=True),
            nn.Conv2d(256, out_channels, 4),
        )  # fmt: skip
    if size == "medium":
        return nn.Sequential(
            nn.Conv2d(3, 256, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(256, 512, 4, padding=3 * p), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(512, 512, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, 3, padding=p), nn.ReLU(inplace=True),
            nn.Conv2d(512, out_channels, 4), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1),
        )  # fmt: skip
    raise ValueError(f"unknown PDN size {size!r}; use 'small' or 'medium'")


class AutoEncoder(nn.Module):
    """EfficientAD's autoencoder: strided convs to a 1x1 code, upsampling convs back to 384 channels."""

    def __init__(self, out_channels: int = 384, base: int = 32, latent: int = 64, input_size=(256, 256)):
        super().__init__()
        # five stride-2 convs take 256 px to 8; the last conv covers what is left (8 at 256, 4 at 128)
        kh, kw = max(1, input_size[1] // 32), max(1, input_size[0] // 32)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, base, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(base, base, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(base, 2 * base, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * base, 2 * base, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * base, 2 * base, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * base, latent, (kh, kw)),
        )  # fmt: skip
        self.dec = nn.ModuleList(
            [nn.Conv2d(latent if i == 0 else 2 * base, 2 * base, 4, 1, 2) for i in range(7)]
        )
        self.out = nn.Conv2d(2 * base, out_channels, 3, 1, 1)

    def forward(self, x, out_size):
        h, w = x.shape[-2:]
        z = self.encoder(x)
        steps = [
            (max(1, int(out_size[0] * f)), max(1, int(out_size[1] * f)))
            for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2)
        ]
        steps += [(out_size[0] - 3, out_size[1] - 3), (out_size[0] - 1, out_size[1] - 1), out_size]
        for conv, size in zip(self.dec, steps, strict=True):
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
            z = F.relu(conv(z))
            if conv is not self.dec[-1]:
                z = F.dropout(z, 0.2, self.training)
        z = F.interpolate(z, size=out_size, mode="bilinear", align_corners=False)
        return self.out(z)


class EfficientADModel(nn.Module):
    def __init__(self, size: str, out_channels: int = 384, padding: bool = False, input_size=(256, 256)):
        super().__init__()
        self.teacher = pdn(size, out_channels, padding)
        self.student = pdn(size, 2 * out_channels, padding)
        self.ae = AutoEncoder(out_channels, input_size=input_size)
        self.out_channels = out_channels
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.register_buffer("t_mean", torch.zeros(1, out_channels, 1, 1))
        self.register_buffer("t_std", torch.ones(1, out_channels, 1, 1))
        for name in ("q_st_a", "q_st_b", "q_ae_a", "q_ae_b"):
            self.register_buffer(name, torch.tensor(0.0 if name.endswith("a") else 1.0))

    def to_input(self, images_bgr_uint8: torch.Tensor) -> torch.Tensor:
        x = images_bgr_uint8.flip(-1).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    def teacher_features(self, x):
        with torch.no_grad():
            return (self.teacher(x) - self.t_mean) / self.t_std

    def raw_maps(self, x):
        """Unnormalised student-teacher and autoencoder maps at the PDN output resolution."""
        t = self.teacher_features(x)
        s = self.student(x)
        ae = self.ae(x, t.shape[-2:])
        c = self.out_channels
        st = ((t - s[:, :c]) ** 2).mean(1, keepdim=True)
        st_ae = ((ae - s[:, c:]) ** 2).mean(1, keepdim=True)
        return st, st_ae

    def forward(self, x):
        """Fused map 0.5 ST + 0.5 AE after quantile normalisation, upsampled to the input size."""
        st, ae = self.raw_maps(x)
        st = 0.1 * (st - self.q_st_a) / (self.q_st_b - self.q_st_a + 1e-12)
        ae = 0.1 * (ae - self.q_ae_a) / (self.q_ae_b - self.q_ae_a + 1e-12)
        fused = 0.5 * st + 0.5 * ae
        return F.interpolate(fused, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
