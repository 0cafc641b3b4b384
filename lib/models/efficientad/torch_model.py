"""EfficientAD as plain nn.Modules (paper section 5.3): PDN teacher/student, autoencoder, maps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.precision import autocast


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


def pdn_geometry(length: int, padding: bool = False) -> tuple[int, int, float]:
    """(cells, stride, offset) of the PDN along one input axis of ``length`` pixels: output cell t
    describes the input pixel ``stride * t + offset`` (the centre of its receptive field).

    Walked through ``PDN_LAYERS`` (small and medium share it): a layer of kernel k, stride s and
    padding p puts its output t over its input s t - p + (k - 1) / 2. Unpadded: stride 4, offset 16 (half
    the 33-pixel receptive field, less one), (L - 33) // 4 + 1 cells. Padded (the reference
    implementations' ``padding`` option): stride 4, offset 0, so cell 0 sits on the first pixel.
    """
    cells, stride, offset = int(length), 1, 0.0
    for k, st, pad in PDN_LAYERS:  # data, not modules: building a PDN here would draw from torch's RNG
        p = pad if padding else 0
        cells = (cells + 2 * p - k) // st + 1
        offset += stride * (-p + (k - 1) / 2)
        stride *= st
    return max(0, cells), stride, offset


#: the PDN's spatial layers in order (kernel, stride, padding when padded), small and medium alike (the
#: medium PDN's extra 1x1 convolutions move nothing); ``pdn`` builds the same, a test compares them
PDN_LAYERS = ((4, 1, 3), (2, 2, 1), (4, 1, 3), (2, 2, 1), (3, 1, 1), (4, 1, 0))


def pdn_map_to_image(maps: torch.Tensor, size, padding: bool = False) -> torch.Tensor:
    """Resample (N, C, h, w) PDN maps onto the input's (H, W) pixels, exactly: each output pixel X
    samples the map at t = (X - offset) / stride (``pdn_geometry``), bilinear.

    Beyond the outer cell centres: the unpadded PDN fades to zero, the original's zero padding of the
    map (it pads the 56x56 map of a 256-pixel input by 4 zero cells and upsamples x4, which puts cell t
    at pixel 4t + 17.5, 1.5 px off, ~5 px at the paper's 848x480 ground truth); the padded PDN keeps its
    edge cell's value, whose receptive field holds those pixels.
    """
    n, c, h, w = maps.shape
    big_h, big_w = int(size[0]), int(size[1])
    dev, dt = maps.device, maps.dtype
    _, stride, offset = pdn_geometry(big_h, padding)
    # one extra cell each side: zero (the fade to zero) or the edge cell's copy, for any map size
    padded = F.pad(maps, (1, 1, 1, 1), mode="replicate" if padding else "constant")
    ty = (torch.arange(big_h, device=dev, dtype=dt) - offset) / stride + 1
    tx = (torch.arange(big_w, device=dev, dtype=dt) - offset) / stride + 1
    grid = torch.stack(torch.meshgrid(ty * 2 / (h + 1) - 1, tx * 2 / (w + 1) - 1, indexing="ij")[::-1], -1)
    return F.grid_sample(
        padded,
        grid.expand(n, big_h, big_w, 2),
        mode="bilinear",
        padding_mode="border" if padding else "zeros",
        align_corners=True,
    )


def pdn_coverage(size, padding: bool = False) -> float:
    """Fraction of an (H, W) input's pixels that lie between the map's outer cell centres (on both axes).

    Beyond them the unpadded PDN's map fades to the original's zero padding, so a defect there cannot
    score: 75 % of the paper's 256x256, 31 % of 112x64. The padded PDN's centres run from pixel 0 to
    4 (n - 1): all of an input whose sides are 4k + 1 pixels (113x65: 1.0), 0.93 of 112x64.
    """
    frac = 1.0
    for length in size:
        cells, stride, offset = pdn_geometry(int(length), padding)
        if cells < 1:
            return 0.0
        first, last = max(0.0, offset), min(int(length) - 1.0, stride * (cells - 1) + offset)
        frac *= (np.floor(last) - np.ceil(first) + 1) / int(length)
    return float(frac)


#: below this coverage EfficientAD warns (the paper's 256x256 input covers 0.75, 128x128 0.53)
MIN_COVERAGE = 0.5


class AutoEncoder(nn.Module):
    """EfficientAD's autoencoder, as the original: six strided convs to a 1x1 code; the decoder
    upsamples to 3, 8, 15, 32, 63, 127 (for a 256 input; scaled with the input otherwise), each
    followed by a 4x4 conv (padding 2), ReLU and dropout 0.2, then to the PDN's output size, a 3x3
    conv + ReLU and a 3x3 conv to 384 channels."""

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
        self.input_size = tuple(input_size)  # (width, height)
        self.dec = nn.ModuleList(
            [nn.Conv2d(latent if i == 0 else 2 * base, 2 * base, 4, 1, 2) for i in range(6)]
        )
        self.dec_last = nn.Conv2d(2 * base, 2 * base, 3, 1, 1)
        self.out = nn.Conv2d(2 * base, out_channels, 3, 1, 1)

    @staticmethod
    def stage_sizes(length: int) -> list[int]:
        """The decoder's upsampling sizes along one axis: 3, 8, 15, 32, 63, 127 for 256 pixels."""
        return [max(1, length // d + o) for d, o in ((64, -1), (32, 0), (16, -1), (8, 0), (4, -1), (2, -1))]

    def forward(self, x, out_size):
        h, w = x.shape[-2:]
        z = self.encoder(x)
        for conv, sh, sw in zip(self.dec, self.stage_sizes(h), self.stage_sizes(w), strict=True):
            z = F.interpolate(z, size=(sh, sw), mode="bilinear", align_corners=False)
            z = F.dropout(F.relu(conv(z)), 0.2, self.training)
        z = F.interpolate(z, size=tuple(out_size), mode="bilinear", align_corners=False)
        return self.out(F.relu(self.dec_last(z)))


class EfficientADModel(nn.Module):
    """``forward`` (eval): uint8 BGR (N, H, W, 3) -> (image scores (N,), anomaly maps (N, H, W)).

    The one inference entry: ``EfficientAD.predict``, the ONNX export and the benchmarks all call it;
    a channels-last copy (faster convolutions on a CPU) gets its input in channels-last too.
    """

    def __init__(self, size: str, out_channels: int = 384, padding: bool = False, input_size=(256, 256)):
        super().__init__()
        self.padding = bool(padding)  # the PDNs' zero padding (the reference implementations' option)
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

    #: 'fp32' or 'bf16' (lib.precision): the three networks' convolutions; their outputs, the squared
    #: differences, the quantile normalisation and the losses stay fp32
    precision = "fp32"

    def teacher_raw(self, x):
        """The frozen teacher's output, float32 (before the channel normalisation)."""
        with torch.no_grad(), autocast(self.precision, x.device):
            return self.teacher(x).float()

    def teacher_features(self, x):
        return (self.teacher_raw(x) - self.t_mean) / self.t_std

    def student_out(self, x):
        with autocast(self.precision, x.device):
            return self.student(x).float()

    def ae_out(self, x, out_size):
        with autocast(self.precision, x.device):
            return self.ae(x, out_size).float()

    def raw_maps(self, x):
        """Unnormalised student-teacher and autoencoder maps at the PDN output resolution."""
        t = self.teacher_features(x)
        s = self.student_out(x)
        ae = self.ae_out(x, t.shape[-2:])
        c = self.out_channels
        st = ((t - s[:, :c]) ** 2).mean(1, keepdim=True)
        st_ae = ((ae - s[:, c:]) ** 2).mean(1, keepdim=True)
        return st, st_ae

    def forward(self, images: torch.Tensor):
        """Image score: the fused map's maximum; map: ``normalised_map`` of the images."""
        x = self.to_input(images)
        if self.teacher[0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        maps = self.normalised_map(x)
        return maps.flatten(1).amax(1), maps

    def normalised_map(self, x):
        """Fused map 0.5 ST + 0.5 AE after quantile normalisation, upsampled to the input size."""
        st, ae = self.raw_maps(x)
        st = 0.1 * (st - self.q_st_a) / (self.q_st_b - self.q_st_a + 1e-12)
        ae = 0.1 * (ae - self.q_ae_a) / (self.q_ae_b - self.q_ae_a + 1e-12)
        fused = 0.5 * st + 0.5 * ae
        return pdn_map_to_image(fused, x.shape[-2:], self.padding)[:, 0]
