"""PatchCore training glue (paper section 5.1, Table 3): the model interface around PatchCoreModel."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from lib.config import select_device
from lib.models.backbones import require_pretrained
from lib.models.base import AnomalyModel, batched_forward, register
from lib.models.patchcore.torch_model import PatchCoreModel, greedy_coreset


@dataclasses.dataclass(frozen=True)
class PatchCoreConfig:
    """Table 3: ResNeXt101 layer2+3, coreset 5 %, patch 3, k-NN 3, embed 1024/1024, 848x480, blur sigma 4."""

    input_size: tuple = (848, 480)
    backbone: str = "resnext101_32x8d"
    weights: str = ""  # local weights file; "" = cache / package / random, see lib.models.backbones
    layers: tuple = ("layer2", "layer3")
    patch_size: int = 3
    pretrain_embed_dim: int = 1024
    target_embed_dim: int = 1024
    coreset_ratio: float = 0.05
    projection_dim: int = 128
    num_neighbors: int = 3
    blur_sigma: float = 4.0
    batch_size: int = 4
    allow_random_backbone: bool = (
        True  # False (the paper profile): refuse a backbone without pretrained weights
    )
    device: str = "auto"
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 on native bf16 matrix units; lib.precision)
    seed: int = 0


@register
class PatchCore(AnomalyModel):
    name = "patchcore"
    config_class = PatchCoreConfig
    training_notebook = "04_train_patchcore.ipynb"
    table3_backbone = "ResNeXt101 (layer2, layer3), ImageNet"
    quick_fit = {"backbone": "auto", "allow_random_backbone": True}

    @classmethod
    def plan_extras(cls, config, n_train: int, probe: dict) -> dict:
        """The paper's bank: every training patch (stride-8 layer-2 grid) before the coreset stays on the
        host; the GPU holds its projection and the 5 % kept, and searches the kept rows per test patch."""
        w, h = config.input_size
        per_image = -(-w // 8) * -(-h // 8)
        n_patches = n_train * per_image
        k = int(round(n_patches * config.coreset_ratio))
        z = n_patches * config.projection_dim * 4
        bank = k * config.target_embed_dim * 4
        probe_rows = probe["bank_bytes"] // (4 * config.target_embed_dim)
        knn = 2 * per_image * k * config.target_embed_dim
        return {
            "train_bytes": z + bank,
            "infer_bytes": bank + 4096 * k * 4,  # lib.models.features.nearest's chunk of distances
            "infer_flops": 2 * per_image * (k - probe_rows) * config.target_embed_dim,
            "streamed_bytes": k * z,  # greedy k-center: k memory-bound passes over the projection
            "note": f"pre-coreset bank {n_patches * config.target_embed_dim * 4 / 2**30:.1f} GiB kept on the "
            f"host (the GPU holds its projection, {z / 2**30:.2f} GiB); coreset {k:,} of {n_patches:,} patches "
            f"({bank / 2**30:.2f} GiB); kNN {knn / 1e9:.0f} GFLOP per image",
        }

    exportable = True
    relative_cost = 2

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.device = select_device(c.device)
        self.net = PatchCoreModel(
            c.backbone,
            c.layers,
            c.weights or None,
            c.patch_size,
            c.pretrain_embed_dim,
            c.target_embed_dim,
            c.num_neighbors,
            c.blur_sigma,
        ).to(self.device)
        self.net.extractor.precision = c.precision
        require_pretrained(self.net.extractor.info, c.allow_random_backbone, self.name)
        self.backbone_description = str(self.net.extractor.info)

    def _batches(self, images, desc, progress):
        bs = self.config.batch_size
        for i in tqdm(range(0, len(images), bs), desc=desc, disable=not progress, leave=False):
            yield torch.from_numpy(np.ascontiguousarray(images[i : i + bs])).to(self.device)

    def fit(self, train, val=None, progress=False) -> dict:
        t0 = time.perf_counter()
        feats = self._embed_to_host(train, progress)
        t1 = time.perf_counter()
        keep = greedy_coreset(
            feats, self.config.coreset_ratio, self.config.projection_dim, self.config.seed, device=self.device
        )
        self.net.memory_bank = feats[keep].contiguous().to(self.device)
        t2 = time.perf_counter()
        self.history = {
            "n_patches": len(feats),
            "pre_coreset_bank_mb": round(feats.numel() * feats.element_size() / 2**20, 1),
            "memory_bank": len(keep),
            "memory_bank_mb": round(self.net.memory_bank.numel() * 4 / 2**20, 1),
            "embed_s": round(t1 - t0, 2),
            "coreset_s": round(t2 - t1, 2),
        }
        return self.history

    def _embed_to_host(self, train, progress) -> torch.Tensor:
        """Every training patch embedding, in one preallocated host buffer: the pre-coreset bank never
        sits on the GPU (paper: 9 GB) and is never held twice (no list of chunks, then a copy)."""
        feats, row = None, 0
        for b in self._batches(train, "embedding", progress):
            emb = self.net.embed(b)[0]
            if feats is None:
                rows = len(emb) // len(b) * len(train)
                feats = torch.empty(rows, emb.shape[1], dtype=emb.dtype, device="cpu")
            feats[row : row + len(emb)].copy_(emb)
            row += len(emb)
        if feats is None or row != len(feats):
            raise RuntimeError(
                f"patchcore: embedded {row} patches, expected {0 if feats is None else len(feats)}"
            )
        return feats

    @torch.no_grad()
    def predict(self, images):
        if len(self.net.memory_bank) == 0:
            raise RuntimeError("patchcore: call fit() or load() before predict()")
        return batched_forward(self.net, images, self.device, self.config.batch_size)

    def state_dict(self):
        return {"memory_bank": self.net.memory_bank.cpu().numpy()}

    def load_state_dict(self, state):
        self.net.memory_bank = torch.from_numpy(state["memory_bank"]).to(self.device)
