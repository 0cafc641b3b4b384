"""EfficientAD-S/-M training glue (paper section 5.3, Table 3).

Teacher: the paper's teacher is a PDN distilled from WideResNet101 on ImageNet. Offline, the PDN is
distilled here from the best available backbone (``lib.models.backbones``) on what exists offline:
the training crops plus the photographs shipped with scikit-image, augmented, once per profile
(``teacher.ensure_teacher``, stored under ``<data_root>/teachers/``) and then passed to every cell as
``teacher_weights`` (a safetensors file of the PDN's state dict) -- as is a user-provided teacher.
Checkpoint policy: the last iteration. Map normalisation uses validation *normal* images only.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from lib.config import select_device
from lib.models.base import AnomalyModel, batched_forward, numpy_to_tensors, register, tensors_to_numpy
from lib.models.efficientad.augment import colour_jitter, offline_photos, random_crop
from lib.models.efficientad.torch_model import MIN_COVERAGE, EfficientADModel, pdn_coverage


@dataclasses.dataclass(frozen=True)
class EfficientADConfig:
    """Table 3: 256x256, PDN small/medium with 384 channels, 70,000 iterations at batch 1, Adam lr 1e-4
    decayed x0.1 at 95 %, hard-feature quantile 0.999, quantile normalisation 0.9/0.995, fused 0.5/0.5."""

    model_size: str = "small"
    input_size: tuple = (256, 256)
    out_channels: int = 384
    #: zero padding in the PDNs' convolutions (anomalib's and nelson1425's ``padding`` option): the map's
    #: cells then span the whole input. Table 3 / the original: unpadded, blind to an outer 16-pixel band.
    padding: bool = False
    iterations: int = 70000
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-5
    lr_decay_at: float = 0.95
    hard_quantile: float = 0.999
    penalty: bool = True  # penalty images: photographs shipped with scikit-image
    map_quantiles: tuple = (0.9, 0.995)
    teacher_weights: str = ""  # a user teacher (safetensors state dict of the PDN); "" = distil offline
    teacher_backbone: str = "auto"
    teacher_iterations: int = 10000
    teacher_lr: float = 1e-4
    allow_random_backbone: bool = True  # False (the paper profile): no teacher from a random backbone
    device: str = "auto"
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 on native bf16 matrix units; lib.precision)
    seed: int = 0


class EfficientAD(AnomalyModel):
    """Shared by EfficientAD-S and -M (registered below under their own names)."""

    name = "efficientad"
    config_class = EfficientADConfig
    training_notebook = "06_train_efficientad.ipynb"
    table3_backbone = "PDN (student-teacher + AE), teacher distilled at 512"
    quick_fit = {"iterations": 2, "teacher_iterations": 2, "allow_random_backbone": True}
    budget_fields = ("iterations", "teacher_iterations")
    shared_budget_fields = ("teacher_iterations",)  # distilled once per profile and size, then stored
    exportable = True
    shared_resource = "teacher"  # the PDN teacher, distilled once per profile (teacher.py)

    @classmethod
    def cell_overrides(cls, profile, data_root, seed: int) -> dict:
        """The seed and the profile's stored teacher (what notebook 06 passes to each cell)."""
        from lib.models.efficientad.teacher import teacher_path

        base = cls.config_for(profile)
        return {
            **cls.seed_overrides(seed),
            "teacher_weights": str(teacher_path(data_root, base, profile.seed)),
        }

    @classmethod
    def prepare_shared(cls, profile, data_root, manifest, progress: bool = True):
        """Distil (or find) the profile's teacher for this PDN size."""
        from lib.models.efficientad.teacher import prepare_teacher

        return prepare_teacher(cls.name, profile, data_root, manifest, progress=progress)

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        torch.manual_seed(c.seed)
        self.device = select_device(c.device)
        self.net = EfficientADModel(
            c.model_size, c.out_channels, padding=c.padding, input_size=tuple(c.input_size)
        ).to(self.device)
        self.net.precision = c.precision
        self.backbone_description = f"PDN-{c.model_size}; teacher: not yet trained"
        w, h = c.input_size
        self.map_coverage = pdn_coverage((h, w), c.padding)
        if self.map_coverage < MIN_COVERAGE:
            warnings.warn(
                f"EfficientAD input_size {w}x{h}: the {'padded' if c.padding else 'unpadded'} PDN's map "
                f"covers only {self.map_coverage:.0%} of the image (the unpadded PDN's outer 16 pixels on "
                f"each side are blind, the original's geometry; the paper's 256x256 covers 75%, 128x128 "
                f"53%; below {MIN_COVERAGE:.0%} defects near the border go unseen; padding=True sees it all)",
                stacklevel=2,
            )

    def _t(self, images):
        return self.net.to_input(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))

    def fit(self, train, val=None, progress=False) -> dict:
        c = self.config
        self._infer = None
        rng = np.random.default_rng([c.seed, 71])
        g = torch.Generator(device="cpu").manual_seed(c.seed)
        train = np.asarray(train)
        if c.teacher_weights:
            from safetensors.torch import load_file

            from lib.models.efficientad.teacher import teacher_info

            self.net.teacher.load_state_dict(load_file(c.teacher_weights))
            info = teacher_info(c.teacher_weights)
            self.teacher_source = f"file {c.teacher_weights}" + (f", {info['source']}" if info else "")
            teacher_curve = info.get("curve", [])
        else:  # no stored teacher given: distil one for this run only
            from lib.models.efficientad.teacher import distil_teacher

            teacher_curve, self.teacher_source = distil_teacher(
                self.net.teacher, self.net.to_input, train, c, rng, self.device, progress
            )
        for p in self.net.teacher.parameters():
            p.requires_grad_(False)
        self.net.teacher.eval()
        self.backbone_description = f"PDN-{c.model_size}; teacher {self.teacher_source}"
        with torch.no_grad():  # teacher channel normalisation on the training images
            outs = torch.cat(
                [self.net.teacher_raw(self._t(train[i : i + 8])) for i in range(0, len(train), 8)]
            )
            self.net.t_mean.copy_(outs.mean((0, 2, 3), keepdim=True))
            self.net.t_std.copy_(outs.std((0, 2, 3), keepdim=True) + 1e-6)
        params = list(self.net.student.parameters()) + list(self.net.ae.parameters())
        opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, max(1, int(c.lr_decay_at * c.iterations)), gamma=0.1)
        photos = offline_photos()
        cc = c.out_channels
        curve = []
        self.net.student.train()
        self.net.ae.train()
        for _ in tqdm(
            range(c.iterations),
            desc=f"EfficientAD-{c.model_size[0].upper()}",
            disable=not progress,
            leave=False,
        ):
            idx = torch.randint(len(train), (c.batch_size,), generator=g).numpy()
            imgs = train[idx]
            b = len(imgs)
            pen = (
                [random_crop(photos[int(rng.integers(len(photos)))], c.input_size, rng)] if c.penalty else []
            )
            aug = [colour_jitter(img, rng) for img in imgs]
            # one student pass over [normal, augmented, penalty] and one teacher pass over [normal, augmented]
            x_all = self._t(np.stack([*imgs, *aug, *pen]))
            t_all = self.net.teacher_features(x_all[: 2 * b])
            s_all = self.net.student_out(x_all)
            t, ta = t_all[:b], t_all[b:]
            d = (t - s_all[:b, :cc]) ** 2
            d_hard = torch.quantile(d.flatten()[:: max(1, d.numel() // 2_000_000)], c.hard_quantile)
            loss_st = d[d >= d_hard].mean()
            if pen:
                loss_st = loss_st + (s_all[2 * b :, :cc] ** 2).mean()
            ae = self.net.ae_out(x_all[b : 2 * b], ta.shape[-2:])
            loss_ae = ((ta - ae) ** 2).mean()
            loss = loss_st + loss_ae + ((ae - s_all[b : 2 * b, cc:]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            curve.append((float(loss.detach()), float(loss_ae.detach())))
        self.net.eval()
        self._normalise_maps(val if val is not None and len(val) else train[: min(len(train), 16)])
        every = max(1, len(curve) // 50)
        self.history = {
            "curve": [
                {
                    "loss": float(np.mean([v[0] for v in curve[i : i + every]])),
                    "ae_loss": float(np.mean([v[1] for v in curve[i : i + every]])),
                }
                for i in range(0, len(curve), every)
            ],
            "teacher_curve": teacher_curve[:: max(1, len(teacher_curve) // 50)],
            "teacher": self.teacher_source,
            "checkpoint": "last iteration",
            "map_coverage": round(self.map_coverage, 3),
            "padding": c.padding,
            "normalisation": "validation normal images"
            if val is not None and len(val)
            else "training images",
        }
        return self.history

    @torch.no_grad()
    def _normalise_maps(self, images):
        st, ae = [], []
        for i in range(0, len(images), 8):
            a, b = self.net.raw_maps(self._t(images[i : i + 8]))
            st.append(a.flatten())
            ae.append(b.flatten())
        st, ae = torch.cat(st), torch.cat(ae)
        qa, qb = self.config.map_quantiles
        self.net.q_st_a.fill_(float(torch.quantile(st[:: max(1, len(st) // 2_000_000)], qa)))
        self.net.q_st_b.fill_(float(torch.quantile(st[:: max(1, len(st) // 2_000_000)], qb)))
        self.net.q_ae_a.fill_(float(torch.quantile(ae[:: max(1, len(ae) // 2_000_000)], qa)))
        self.net.q_ae_b.fill_(float(torch.quantile(ae[:: max(1, len(ae) // 2_000_000)], qb)))

    @torch.no_grad()
    def predict(self, images):
        return batched_forward(self._inference_net(), images, self.device)

    def _inference_net(self):
        """A channels-last copy of the trained net for inference (same weights; ~15 % faster convs on a
        CPU). ``fit`` and ``load_state_dict`` drop it; training and checkpoints use ``self.net``."""
        import copy

        if getattr(self, "_infer", None) is None:
            self.net.eval()
            self._infer = copy.deepcopy(self.net).to(memory_format=torch.channels_last).eval()
        self._infer.precision = self.net.precision  # follows the net's (lib.precision.module_precision)
        return self._infer

    def state_dict(self):
        return tensors_to_numpy(self.net.state_dict())

    def load_state_dict(self, state):
        self.net.load_state_dict(numpy_to_tensors(state))
        self.net.eval()
        self._infer = None


@dataclasses.dataclass(frozen=True)
class EfficientADMConfig(EfficientADConfig):
    model_size: str = "medium"


@register
class EfficientADS(EfficientAD):
    name = "efficientad_s"
    config_class = EfficientADConfig
    notebook_parameters = {"models": ["efficientad_s"]}
    relative_cost = 5


@register
class EfficientADM(EfficientAD):
    name = "efficientad_m"
    config_class = EfficientADMConfig
    notebook_parameters = {"models": ["efficientad_m"]}
    relative_cost = 6
