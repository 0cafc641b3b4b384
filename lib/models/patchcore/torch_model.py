"""PatchCore as a plain nn.Module (paper section 5.1): features, coreset memory bank, kNN scoring."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lib.models.backbones import FeatureExtractor
from lib.models.features import aggregate_patches, gaussian_blur, nearest, project


def greedy_coreset(
    features: torch.Tensor,
    ratio: float,
    projection_dim: int = 128,
    seed: int = 0,
    progress=None,
    device=None,
    chunk_rows: int = 65536,
):
    """Eq. 2: greedy k-center (minimax facility location) on a random linear projection psi.

    Each step adds the point farthest from the current coreset; one vectorised distance update
    per step (O(N) work), never a Python loop over patches. ``features`` may stay on the host while
    the search runs on ``device``: only the projection z (N x projection_dim) moves there, in chunks of
    ``chunk_rows`` (the paper's pre-coreset bank, 345 frames x 6,360 patches x 1,024 dims, is 9 GB;
    its z is 1.1 GB). Chunking changes no bit: each row of z is its own dot products.
    """
    n = len(features)
    k = max(1, int(round(n * ratio)))
    if k >= n:
        return torch.arange(n)
    if chunk_rows < 1:
        raise ValueError(f"greedy_coreset: chunk_rows must be >= 1, got {chunk_rows}")
    device = torch.device(device) if device is not None else features.device
    g = torch.Generator(device="cpu").manual_seed(seed)
    proj = torch.randn(features.shape[1], projection_dim, generator=g).to(device) / projection_dim**0.5
    z = torch.cat([features[i : i + chunk_rows].to(device) @ proj for i in range(0, n, chunk_rows)])
    start = int(torch.randint(n, (1,), generator=g))
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = start
    sq = z.pow(2).sum(1)
    min_d = sq + sq[start] - 2.0 * (z @ z[start])
    for i in range(1, k):
        j = int(torch.argmax(min_d))
        chosen[i] = j
        # ||z - z_j||^2 = ||z||^2 + ||z_j||^2 - 2 z.z_j: one mat-vec per step
        torch.minimum(min_d, sq + sq[j] - 2.0 * torch.mv(z, z[j]), out=min_d)
        if progress is not None and i % 256 == 0:
            progress(i, k)
    return chosen


class PatchCoreModel(torch.nn.Module):
    """``forward`` (eval): uint8 BGR (N, H, W, 3) -> (image scores (N,), anomaly maps (N, H, W)).

    The one inference entry: ``PatchCore.predict``, the ONNX export and the benchmarks all call it.
    """

    def __init__(
        self,
        backbone: str,
        layers,
        weights,
        patch_size: int,
        pretrain_dim: int,
        target_dim: int,
        num_neighbors: int = 3,
        blur_sigma: float = 4.0,
    ):
        super().__init__()
        self.extractor = FeatureExtractor(backbone, layers, weights)
        self.patch_size, self.pretrain_dim, self.target_dim = patch_size, pretrain_dim, target_dim
        self.num_neighbors, self.blur_sigma = num_neighbors, blur_sigma
        self.register_buffer("memory_bank", torch.empty(0, target_dim))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, H, W, 3) uint8 -> (N*h*w, target_dim) patch embeddings and the grid (h, w)."""
        per_layer, grid = aggregate_patches(self.extractor(images), self.patch_size)
        return project(per_layer, self.pretrain_dim, self.target_dim), grid

    @torch.no_grad()
    def score(self, images: torch.Tensor, num_neighbors: int, blur_sigma: float):
        """Image scores (eq. 3 with eq. 4's reweighting) and full-size anomaly maps."""
        n, h_in, w_in = images.shape[:3]
        emb, (h, w) = self.embed(images)
        dist, idx = nearest(emb, self.memory_bank, k=1)
        patch = dist[:, 0].view(n, h, w)
        flat = patch.view(n, -1)
        best = flat.argmax(1)
        s_star = flat.gather(1, best[:, None])[:, 0]
        if num_neighbors > 1 and len(self.memory_bank) > num_neighbors:
            m_test = emb.view(n, h * w, -1)[torch.arange(n), best]
            m_star = self.memory_bank[idx.view(n, -1)[torch.arange(n), best]]
            _, support = nearest(m_star, self.memory_bank, k=num_neighbors)
            d = torch.linalg.vector_norm(m_test[:, None, :] - self.memory_bank[support], dim=2)
            weight = 1.0 - torch.softmax(d, dim=1)[:, 0]  # eq. 4
            scores = weight * s_star
        else:
            scores = s_star
        maps = F.interpolate(patch[:, None], size=(h_in, w_in), mode="bilinear", align_corners=False)
        return scores, gaussian_blur(maps, blur_sigma)[:, 0]

    def forward(self, images: torch.Tensor):
        """uint8 BGR (N, H, W, 3) -> (image scores (N,), anomaly maps (N, H, W)) with the model's k and sigma."""
        return self.score(images, self.num_neighbors, self.blur_sigma)
