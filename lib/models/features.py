"""Patch features shared by PatchCore and SimpleNet: local aggregation and adaptive projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def aggregate_patches(
    features: list[torch.Tensor], patch_size: int = 3
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Eq. 1: average each layer over p x p neighbourhoods, bring all to the first layer's grid.

    As the reference PatchCore (zero-padded unfold, then a mean over the p*p window) and anomalib:
    the zero padding counts in the mean at the border (``count_include_pad=True``), so border
    patches are damped exactly as there. Returns one (N*h*w, C_l) tensor per layer (channel
    counts differ) and the grid size (h, w).
    """
    pad = patch_size // 2
    h, w = features[0].shape[-2:]
    out = []
    for f in features:
        f = F.avg_pool2d(f, patch_size, stride=1, padding=pad, count_include_pad=True)
        if f.shape[-2:] != (h, w):
            f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
        out.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
    return out, (h, w)


def project(per_layer: list[torch.Tensor], pretrain_dim: int, target_dim: int) -> torch.Tensor:
    """PatchCore's embedding: each layer pooled to ``pretrain_dim``, then all to ``target_dim`` (adaptive avg)."""
    if torch.onnx.is_in_onnx_export():  # ONNX has no adaptive 1-D pooling: the same means as a matmul
        pooled = [x @ adaptive_pool_matrix(x.shape[1], pretrain_dim) for x in per_layer]
        stacked = torch.stack(pooled, dim=1).reshape(len(pooled[0]), -1)
        return stacked @ adaptive_pool_matrix(stacked.shape[1], target_dim)
    pooled = [F.adaptive_avg_pool1d(x.unsqueeze(1), pretrain_dim).squeeze(1) for x in per_layer]
    stacked = torch.stack(pooled, dim=1).reshape(len(pooled[0]), 1, -1)
    return F.adaptive_avg_pool1d(stacked, target_dim).squeeze(1)


def adaptive_pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_in, n_out) matrix M with x @ M == adaptive_avg_pool1d(x, n_out): column j averages inputs
    floor(j n_in / n_out) .. ceil((j + 1) n_in / n_out) - 1, PyTorch's bins."""
    import numpy as np

    n_in, n_out = int(n_in), int(n_out)
    m = np.zeros((n_in, n_out), np.float32)  # built outside torch: one constant in an exported graph
    for j in range(n_out):
        a, b = (j * n_in) // n_out, -((-(j + 1) * n_in) // n_out)
        m[a:b, j] = 1.0 / (b - a)
    return torch.from_numpy(m)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 by matmul (a: n x d, b: m x d), clamped at 0."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min_(0.0)


def nearest(a: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 4096):
    """k nearest bank rows for every row of ``a`` (Euclidean), chunked to bound memory."""
    dists, idx = [], []
    for i in range(0, len(a), chunk):
        d = squared_distances(a[i : i + chunk], bank)
        v, j = torch.topk(d, k, dim=1, largest=False)
        dists.append(v.sqrt_())
        idx.append(j)
    return torch.cat(dists), torch.cat(idx)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) maps (the paper's sigma = 4)."""
    if sigma <= 0:
        return maps
    r = int(round(4 * sigma))
    x = torch.arange(-r, r + 1, dtype=maps.dtype, device=maps.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    maps = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(maps, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
