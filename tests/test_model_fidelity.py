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
from lib.models.efficientad.torch_model import (
    EfficientADModel,
    pdn,
    pdn_coverage,
    pdn_geometry,
    pdn_map_to_image,
)
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


# rows t whose window holds input row 50: unpadded 4t .. 4t + 32 (t = 5 .. 12, centre 4t + 16); padded
# (anomalib's and the original's ``padding``) 4t - 16 .. 4t + 16 (t = 9 .. 16, centre 4t): 36 .. 64 either way
@pytest.mark.parametrize(
    "size, padding, rows", [("small", False, (5, 12)), ("medium", False, (5, 12)), ("small", True, (9, 16))]
)
def test_pdn_grid_offset_is_exact(size, padding, rows):
    """A one-pixel change of the input moves exactly the PDN outputs whose window holds it."""
    net = pdn(size, 8, padding=padding).eval()
    x = torch.zeros(1, 3, 96, 96)
    with torch.no_grad():
        base = net(x)
        x[0, :, 50, 50] = 1.0
        hit = (net(x) - base).abs().sum(1)[0] > 0
    ts = torch.nonzero(hit.any(1))[:, 0]
    assert (ts.min().item(), ts.max().item()) == rows


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("size", ["small", "medium"])
def test_pdn_geometry_counts_the_cells_the_network_outputs(size, padding):
    for length in (33, 40, 64, 65, 112, 113, 120, 256):
        with torch.no_grad():
            out = pdn(size, 2, padding)(torch.zeros(1, 3, length, 37))
        cells, stride, offset = pdn_geometry(length, padding)
        assert out.shape[-2] == cells and stride == 4 and offset == (0 if padding else 16)


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("input_hw", [(256, 256), (64, 112), (65, 113), (480, 848)])
def test_efficientad_map_impulse_lands_where_its_patch_is(input_hw, padding):
    h, w = input_hw
    (grid_h, _, off), (grid_w, *_) = pdn_geometry(h, padding), pdn_geometry(w, padding)
    for ty, tx in [(0, 0), (grid_h // 2, grid_w // 3), (grid_h - 1, grid_w - 1)]:
        m = torch.zeros(1, 1, grid_h, grid_w)
        m[0, 0, ty, tx] = 1.0
        up = pdn_map_to_image(m, (h, w), padding)[0, 0].numpy()
        y, x = np.unravel_index(up.argmax(), up.shape)
        assert abs(y - (4 * ty + off)) <= 2 and abs(x - (4 * tx + off)) <= 2
        if input_hw == (256, 256) and not padding:  # evaluation resizes to the paper's ground truth
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


@pytest.mark.parametrize("input_hw", [(64, 112), (65, 113), (66, 114), (67, 115), (256, 256)])
def test_padded_map_spans_the_crop_and_keeps_its_edge_cells_beyond(input_hw):
    """Padded: cell centres from pixel 0 to 4 (n - 1), n counted on the network itself; beyond the last
    centre the edge cell's value (its window holds those pixels), never the unpadded map's fade to 0."""
    h, w = input_hw
    with torch.no_grad():
        gh, gw = pdn("small", 1, padding=True)(torch.zeros(1, 3, h, w)).shape[-2:]
    span = (min(4 * (gh - 1), h - 1) + 1) / h * (min(4 * (gw - 1), w - 1) + 1) / w
    assert pdn_coverage((h, w), padding=True) == pytest.approx(span, abs=1e-12)
    ramp = torch.arange(gw, dtype=torch.float32).expand(1, 1, gh, gw)
    up = pdn_map_to_image(ramp, (h, w), padding=True)[0, 0].numpy()
    assert np.allclose(up[:, 4 * (gw - 1) :], gw - 1) and np.allclose(up[:, 0], 0)
    assert np.allclose(up[:, 4 * np.arange(gw)], np.arange(gw), atol=1e-5)  # cell t on pixel 4t
    assert pdn_coverage((65, 113), padding=True) == 1.0  # quick's 113x65: sides 4k + 1


def test_efficientad_warns_when_most_of_the_image_is_blind():
    assert pdn_coverage((256, 256)) == pytest.approx(221**2 / 256**2)
    with pytest.warns(UserWarning, match="covers only 31%"):
        make_model("efficientad_s", None, input_size=(112, 64), out_channels=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model("efficientad_s", None, input_size=(128, 128), out_channels=8)
        make_model("efficientad_s", None, input_size=(112, 64), out_channels=8, padding=True)


@pytest.mark.parametrize("padding", [False, True])
def test_efficientad_forward_uses_the_exact_geometry(padding):
    net = EfficientADModel("small", 8, padding=padding, input_size=(64, 64)).eval()
    n = pdn_geometry(64, padding)[0]
    assert net.teacher(torch.zeros(1, 3, 64, 64)).shape[-2:] == (n, n)
    impulse = torch.zeros(1, 1, n, n)
    impulse[0, 0, 3, 5] = 1.0
    net.raw_maps = lambda x: (impulse, torch.zeros_like(impulse))
    out = net.normalised_map(torch.zeros(1, 3, 64, 64))[0].detach().numpy()
    off = 0 if padding else 16
    assert np.unravel_index(out.argmax(), out.shape) == (4 * 3 + off, 4 * 5 + off)


def test_teacher_target_grid_matches_the_padded_pdn():
    """Table 3: teacher input 512 for a 256 model input: layer2 (stride 8) of 2x input = padded PDN grid."""
    fe = bb.FeatureExtractor("tf_efficientnet_lite0", ("layer2", "layer3"))
    for w, h in [(256, 256), (112, 64), (113, 65)]:  # 113x65 (quick, sides 4k + 1): 29x17 cells
        feats = fe(torch.zeros(1, 2 * h, 2 * w, 3, dtype=torch.uint8))
        _, grid = aggregate_patches(feats, 3)
        with torch.no_grad():
            out = pdn("small", 8, padding=True)(torch.zeros(1, 3, h, w))
        assert grid == tuple(out.shape[-2:]) == ((h + 3) // 4, (w + 3) // 4)


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


def test_pdn_geometry_draws_nothing_from_torchs_rng():
    """It runs in every forward pass and in EfficientAD's constructor, between its seed and the weights'
    initialisation: a draw there would change every trained EfficientAD (it did, once)."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    pdn_geometry(65, True), pdn_coverage((64, 112)), pdn_map_to_image(torch.ones(1, 1, 9, 21), (64, 112))
    assert torch.equal(torch.rand(3), expected)
