"""MemSeg as plain nn.Modules (paper section 5.2): encoder, memory, spatial attention, MSFF, decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.precision import autocast


class CoordAttention(nn.Module):
    """Coordinate attention: channel attention factorised along height and width."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = max(8, channels // reduction)
        self.shared = nn.Sequential(nn.Conv2d(channels, mid, 1), nn.BatchNorm2d(mid), nn.Hardswish())
        self.to_h = nn.Conv2d(mid, channels, 1)
        self.to_w = nn.Conv2d(mid, channels, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        xh = x.mean(dim=3, keepdim=True)  # (n, c, h, 1)
        xw = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (n, c, w, 1)
        y = self.shared(torch.cat([xh, xw], dim=2))
        yh, yw = y.split([h, w], dim=2)
        return x * torch.sigmoid(self.to_h(yh)) * torch.sigmoid(self.to_w(yw.transpose(2, 3)))


def conv_bn(cin, cout, k=3):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class MSFF(nn.Module):
    """Multi-scale feature fusion: per level conv + coordinate attention, then top-down fusion."""

    def __init__(self, channels):
        super().__init__()
        self.blocks = nn.ModuleList(
            [nn.Sequential(conv_bn(2 * c, c), CoordAttention(c), conv_bn(c, c)) for c in channels]
        )
        self.lateral = nn.ModuleList(
            [conv_bn(channels[i + 1], channels[i], 1) for i in range(len(channels) - 1)]
        )

    def forward(self, feats, attention):
        out = [blk(f) for blk, f in zip(self.blocks, feats, strict=True)]
        for i in range(len(out) - 2, -1, -1):
            up = F.interpolate(out[i + 1], size=out[i].shape[-2:], mode="bilinear", align_corners=False)
            out[i] = out[i] + self.lateral[i](up)
        return [o * a for o, a in zip(out, attention, strict=True)]


class Decoder(nn.Module):
    """U-Net style, as the reference: up from the deepest fused level with skips from the fused
    levels and from the encoder's stem (1/2 resolution), to 2-class logits at input size."""

    def __init__(self, channels, stem_channels: int = 64):
        super().__init__()
        c1, c2, c3 = channels
        self.up3 = conv_bn(c3 + c2, c2)
        self.up2 = conv_bn(c2 + c1, c1)
        self.up1 = conv_bn(c1 + stem_channels, 48)
        self.up0 = conv_bn(48, 24)
        self.head = nn.Conv2d(24, 2, 3, padding=1)

    def forward(self, f1, f2, f3, stem, size):
        x = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up3(torch.cat([x, f2], 1))
        x = F.interpolate(x, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up2(torch.cat([x, f1], 1))
        x = F.interpolate(x, size=stem.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up1(torch.cat([x, stem], 1))
        x = self.up0(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.head(x)


class MemSegModel(nn.Module):
    """``forward`` (eval): uint8 BGR (N, H, W, 3) -> (image scores (N,), anomaly maps (N, H, W)).

    The one inference entry: ``MemSeg.predict``, the ONNX export and the benchmarks all call it;
    training calls ``logits`` on normalised float images.
    """

    def __init__(self, memory_samples: int = 30, top_k_fraction: float = 100 / (256 * 256)):
        super().__init__()
        import timm

        # ResNet18 without pretraining (as in the paper); frozen once its BatchNorm statistics are set
        self.encoder = timm.create_model(
            "resnet18", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3)
        )
        stem_channels, *channels = list(self.encoder.feature_info.channels())
        self.channels = channels
        self.msff = MSFF(channels)
        self.decoder = Decoder(channels, stem_channels)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        for i in range(len(channels)):  # memory features per level, filled by set_memory
            self.register_buffer(f"memory{i}", torch.empty(0))
        self.memory_samples = memory_samples
        self.top_k_fraction = top_k_fraction  # image score: mean of the top k anomaly-map pixels

    @property
    def memory(self):
        return [getattr(self, f"memory{i}") for i in range(len(self.channels))]

    def to_input(self, images_bgr_uint8: torch.Tensor) -> torch.Tensor:
        x = images_bgr_uint8.flip(-1).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    #: 'fp32' or 'bf16' (lib.precision): encoder, fusion and decoder; memory distances stay fp32
    precision = "fp32"

    def encode(self, x):
        """The frozen encoder's features (stem first), float32 whatever the precision."""
        self.encoder.eval()
        with torch.no_grad(), autocast(self.precision, x.device):
            return [f.float() for f in self.encoder(x)]

    @torch.no_grad()
    def calibrate_encoder(self, batches):
        """Set the random encoder's BatchNorm statistics on normal images (cumulative average)."""
        for m in self.encoder.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        self.encoder.train()
        for b in batches:
            self.encoder(b)
        self.encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def set_memory(self, x):
        _, *feats = self.encode(x)
        for i, f in enumerate(feats):
            setattr(self, f"memory{i}", f.clone())

    def forward(self, images: torch.Tensor):
        """Anomaly map: the softmax's anomalous channel at input size; score: the mean of its top k
        pixels, k = round(top_k_fraction * H * W) (the paper's 100 at 256x256)."""
        maps = torch.softmax(self.logits(self.to_input(images)), 1)[:, 1]
        k = max(1, int(round(self.top_k_fraction * int(maps.shape[1]) * int(maps.shape[2]))))
        return maps.flatten(1).topk(k, dim=1).values.mean(1), maps

    def logits(self, x):
        """Two-class segmentation logits (N, 2, H, W) of normalised float images (training)."""
        stem, *feats = self.encode(x)
        # the memory sample closest to each input (L2 over all levels)
        dist = sum(
            ((f[:, None] - m[None]) ** 2).flatten(2).mean(2) for f, m in zip(feats, self.memory, strict=True)
        )
        best = dist.argmin(1)
        diffs = [(f - m[best]) ** 2 for f, m in zip(feats, self.memory, strict=True)]
        fused_in = [torch.cat([f, d], 1) for f, d in zip(feats, diffs, strict=True)]
        # spatial attention from the differences, deepest level first
        a3 = diffs[2].mean(1, keepdim=True)
        a2 = diffs[1].mean(1, keepdim=True) * F.interpolate(a3, size=diffs[1].shape[-2:], mode="bilinear")
        a1 = diffs[0].mean(1, keepdim=True) * F.interpolate(a2, size=diffs[0].shape[-2:], mode="bilinear")
        # as the reference implementation: the attention maps multiply the fused features as they are
        # (no per-image normalisation, which would make a defect-free image look as anomalous as any)
        with autocast(self.precision, x.device):
            f1, f2, f3 = self.msff(fused_in, [a1, a2, a3])
            out = self.decoder(f1, f2, f3, stem, x.shape[-2:])
        return out.float()  # softmax, focal loss and the score in fp32


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss on 2-class logits (no alpha weighting, as in the paper)."""
    logp = F.log_softmax(logits, dim=1)
    t = target.long()
    logp_t = logp.gather(1, t[:, None])[:, 0]
    return (-((1 - logp_t.exp()) ** gamma) * logp_t).mean()
