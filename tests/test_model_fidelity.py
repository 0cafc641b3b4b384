"""The models match the paper and the reference implementations where it matters for the numbers."""

import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.config import load_profile
from lib.models import backbones as bb
from lib.models import make_model, model_config
from lib.models.data import resize_image
from lib.models.efficientad.torch_model import EfficientADModel, pdn, pdn_coverage, pdn_map_to_image
from lib.models.features import aggregate_patches


def unfold_reference(f: torch.Tensor, p: int = 3) -> torch.Tensor:
    """The reference PatchCore's aggregation, plainly: zero-padded unfold, mean over the p*p window."""
    n, c, h, w = f.shape
    cols = F.unfold(f, kernel_size=p, padding=p // 2)  # (n, c*p*p, h*w), zeros beyond the border
    return cols.view(n, c, p * p, h * w).mean(2).view(n, c, h, w)


def test_patch_aggregation_equals_the_zero_padded_unfold_reference():
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(2, 5, 6, 7, generator=g) + 3.0, torch.randn(2, 4, 3, 4, generator=g)
    out, grid = aggregate_patches([f1, f2], 3)
    assert grid == (6, 7)
    ref1 = unfold_reference(f1).permute(0, 2, 3, 1).reshape(-1, 5)
    assert torch.allclose(out[0], ref1, atol=1e-6)
    ref2 = F.interpolate(unfold_reference(f2), size=(6, 7), mode="bilinear", align_corners=False)
    assert torch.allclose(out[1], ref2.permute(0, 2, 3, 1).reshape(-1, 4), atol=1e-6)
    # the corner averages 4 real values over 9 (padding counts), not over 4
    assert torch.allclose(out[0][0], f1[0, :, :2, :2].sum((1, 2)) / 9, atol=1e-6)


def test_resize_suits_the_direction():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert np.array_equal(
        resize_image(img, (20, 15)), cv2.resize(img, (20, 15), interpolation=cv2.INTER_AREA)
    )
    assert np.array_equal(
        resize_image(img, (80, 60)), cv2.resize(img, (80, 60), interpolation=cv2.INTER_LINEAR)
    )
    assert np.array_equal(
        resize_image(img, (80, 20)), cv2.resize(img, (80, 20), interpolation=cv2.INTER_LINEAR)
    )


@pytest.mark.parametrize("size", ["small", "medium"])
def test_pdn_grid_offset_is_exact(size):
    """A one-pixel change of the input moves exactly the PDN outputs whose window holds it: 4t .. 4t+32."""
    net = pdn(size, 8).eval()
    x = torch.zeros(1, 3, 96, 96)
    with torch.no_grad():
        base = net(x)
        x[0, :, 50, 50] = 1.0
        hit = (net(x) - base).abs().sum(1)[0] > 0
    ts = torch.nonzero(hit.any(1))[:, 0]
    # rows t with 4t <= 50 <= 4t + 32: t = 5 .. 12; their centre 4t + 16 spans 36 .. 64 around 50
    assert ts.min().item() == 5 and ts.max().item() == 12


@pytest.mark.parametrize("input_hw", [(256, 256), (64, 112), (480, 848)])
def test_efficientad_map_impulse_lands_where_its_patch_is(input_hw):
    h, w = input_hw
    grid_h, grid_w = (h - 33) // 4 + 1, (w - 33) // 4 + 1
    for ty, tx in [(0, 0), (grid_h // 2, grid_w // 3), (grid_h - 1, grid_w - 1)]:
        m = torch.zeros(1, 1, grid_h, grid_w)
        m[0, 0, ty, tx] = 1.0
        up = pdn_map_to_image(m, (h, w))[0, 0].numpy()
        y, x = np.unravel_index(up.argmax(), up.shape)
        assert abs(y - (4 * ty + 16)) <= 2 and abs(x - (4 * tx + 16)) <= 2
        if input_hw == (256, 256):  # evaluation resizes to the paper's ground truth (848x480)
            gt = cv2.resize(up, (848, 480), interpolation=cv2.INTER_LINEAR)
            gy, gx = np.unravel_index(gt.argmax(), gt.shape)
            ey, ex = (4 * ty + 16 + 0.5) * 480 / 256 - 0.5, (4 * tx + 16 + 0.5) * 848 / 256 - 0.5
            assert abs(gy - ey) <= 2 and abs(gx - ex) <= 2


@pytest.mark.parametrize("input_hw", [(256, 256), (64, 112), (120, 212), (33, 40), (32, 64)])
def test_efficientad_map_coverage_is_where_the_map_is_not_padding(input_hw):
    h, w = input_hw
    gh, gw = max(0, (h - 33) // 4 + 1), max(0, (w - 33) // 4 + 1)
    if gh and gw:
        up = pdn_map_to_image(torch.ones(1, 1, gh, gw), (h, w))[0, 0].numpy()
        assert pdn_coverage((h, w)) == pytest.approx(float((up > 1 - 1e-5).mean()), abs=1e-9)
    else:
        assert pdn_coverage((h, w)) == 0.0


def test_efficientad_warns_when_most_of_the_image_is_blind():
    assert pdn_coverage((256, 256)) == pytest.approx(221**2 / 256**2)
    with pytest.warns(UserWarning, match="covers only 31%"):
        make_model("efficientad_s", None, input_size=(112, 64), out_channels=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model("efficientad_s", None, input_size=(128, 128), out_channels=8)


def test_efficientad_forward_uses_the_exact_geometry():
    net = EfficientADModel("small", 8, input_size=(64, 64)).eval()
    impulse = torch.zeros(1, 1, 8, 8)
    impulse[0, 0, 3, 5] = 1.0
    net.raw_maps = lambda x: (impulse, torch.zeros_like(impulse))
    out = net.normalised_map(torch.zeros(1, 3, 64, 64))[0].detach().numpy()
    assert np.unravel_index(out.argmax(), out.shape) == (4 * 3 + 16, 4 * 5 + 16)


def test_teacher_target_grid_matches_the_padded_pdn():
    """Table 3: teacher input 512 for a 256 model input: layer2 (stride 8) of 2x input = padded PDN grid."""
    fe = bb.FeatureExtractor("tf_efficientnet_lite0", ("layer2", "layer3"))
    for w, h in [(256, 256), (112, 64)]:
        feats = fe(torch.zeros(1, 2 * h, 2 * w, 3, dtype=torch.uint8))
        _, grid = aggregate_patches(feats, 3)
        with torch.no_grad():
            out = pdn("small", 8, padding=True)(torch.zeros(1, 3, h, w))
        assert grid == tuple(out.shape[-2:]) == (h // 4, w // 4)


def test_teacher_is_distilled_padded_and_used_unpadded(smoke_profile):
    """The weights trained in the padded copy end up in the unpadded teacher (the original's recipe)."""
    from lib.models.efficientad.teacher import distil_teacher

    cfg = model_config(
        "efficientad_s", smoke_profile, input_size=(64, 64), teacher_iterations=3, teacher_lr=1e-3
    )
    net = EfficientADModel("small", cfg.out_channels, input_size=(64, 64))
    before = {k: v.clone() for k, v in net.teacher.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    curve, source = distil_teacher(net.teacher, net.to_input, images, cfg, np.random.default_rng(1), "cpu")
    assert len(curve) == 3 and "at 128x128 into a padded PDN at 64x64" in source
    assert all(not torch.equal(before[k], v) for k, v in net.teacher.state_dict().items())
    convs = [m for m in net.teacher if isinstance(m, torch.nn.Conv2d)]
    assert all(m.padding == (0, 0) for m in convs)
    assert net.teacher(torch.zeros(1, 3, 64, 64)).shape[-2:] == (8, 8)  # unpadded: (64 - 33) // 4 + 1


def test_paper_profile_refuses_a_random_backbone(monkeypatch):
    paper = load_profile("paper")
    monkeypatch.setattr(bb, "_find_cached", lambda name: None)
    with (
        pytest.warns(UserWarning, match="NO PRETRAINED"),
        pytest.raises(bb.RandomBackboneError, match="allow_random_backbone=True"),
    ):
        make_model("patchcore", paper, input_size=(64, 48))
    with pytest.warns(UserWarning, match="NO PRETRAINED"):
        model = make_model("patchcore", paper, input_size=(64, 48), allow_random_backbone=True)
    assert "NOT COMPARABLE" in model.backbone_description
    assert not model_config("simplenet", paper).allow_random_backbone
    assert not model_config("efficientad_m", paper).allow_random_backbone
    assert model_config("patchcore", load_profile("quick")).allow_random_backbone


def test_random_backbone_is_marked_in_every_table():
    import pandas as pd

    from lib.evaluate.evaluate import evaluate_outputs
    from lib.store import Cell

    rng = np.random.default_rng(0)
    masks = [np.zeros((8, 8), np.uint8) for _ in range(4)]
    masks[1][2:4, 2:4] = masks[3][2:4, 2:4] = 255
    table = pd.DataFrame(
        {
            "image_id": list("abcd"),
            "split": ["val", "val", "test", "test"],
            "label": ["normal", "anomalous"] * 2,
            "score": [0.1, 0.9, 0.2, 0.8],
            "source": ["none", "synthetic"] * 2,
            "time_ms": 1.0,
        }
    )
    out = {"table": table, "maps": [rng.random((8, 8)) for _ in range(4)], "masks": masks}
    out["meta"] = {"backbone": "wide_resnet50_2 weights: random - NOT COMPARABLE"}
    rows = evaluate_outputs(Cell("patchcore", "front", True, 0), out)
    assert set(rows.label) == {"patchcore† [random backbone]"} and rows.random_backbone.all()
    out["meta"] = {"backbone": "tf_efficientnet_lite0 weights: package (x)"}
    assert set(evaluate_outputs(Cell("patchcore", "front", True, 0), out).label) == {"patchcore†"}
