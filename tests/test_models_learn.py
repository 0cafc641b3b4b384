"""Tests with teeth: each model must learn to see a small, low-contrast sealant defect.

The data are the smoke line's `front` crops (212x120) of its 4 training underbodies, 5 frames each:
3 frames of each underbody train (12 normals); evaluated on the other 8 frames and the 7 defect
images (synthetic defects from our own generator and one real robot defect), masked as the dagger
variant. Every underbody is in training because one of the four is lit 35 % brighter than the
others: held out whole, it is a lighting shift that EfficientAD's autoencoder flags before any
defect (measured), and generalising to unseen lighting is the grid's question, not this test's. A model passes when its image AUROC is >= 0.65
**and** its pixel AUROC is >= 0.85; the same check on an untrained copy (no training iterations,
or a memory of noise) must fail, so the pass is what training did. A brightness detector does not
pass (the defects move or remove bead; they do not brighten anything).
"""

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from lib.config import load_profile
from lib.evaluate import metrics as M
from lib.models import make_model
from lib.models.data import load_images

VIEW = "front"
IMAGE_FLOOR, PIXEL_FLOOR = 0.65, 0.85
#: EfficientAD's pixel floor was lower (0.75) while quick ran the unpadded PDN at 112x64: blind to the
#: outer 16 input pixels, which hold 42 % of these defects' pixels (asserted below). Quick's padded PDN at
#: 113x65 sees them all, so EfficientAD now meets the common floors.
FLOORS: dict = {}
NOISE = "noise"  # untrained copy = fitted on uniform noise images (no normal data seen)
TEACHER = "teacher"  # stands for the module's distilled PDN teacher (fixture below)

#: model -> (settings for the test, settings of its untrained copy)
CASES = {
    "patchcore": ({"input_size": (212, 120)}, NOISE),
    "simplenet": ({"input_size": (224, 128), "meta_epochs": 60, "gan_epochs": 4}, {"meta_epochs": 0}),
    "memseg": ({"input_size": (224, 128), "iterations": 60}, {"iterations": 0}),
    # quick's padded PDN at 113x65 and its teacher geometry (teacher: fixture below), quick's lr 1e-3
    "efficientad_s": (
        {"input_size": (113, 65), "padding": True, "iterations": 600, "lr": 1e-3, "teacher_weights": TEACHER},
        {"iterations": 0},
    ),
}


@pytest.fixture(scope="module")
def task(built):
    root, *_, manifest = built
    rows = manifest[manifest.viewpoint == VIEW]
    normals = rows[rows.split == "train"].sort_values("image_id")
    frame = normals.groupby("underbody_id").cumcount()
    train, held = normals[frame < 3], normals[frame >= 3]
    defects = rows[rows.label == "anomalous"].sort_values("image_id")
    evaluated = pd.concat([held, defects])
    first = cv2.imread(str(root / evaluated.image_path.iloc[0]), cv2.IMREAD_GRAYSCALE)
    masks = [
        cv2.imread(str(root / p), cv2.IMREAD_GRAYSCALE) if p else np.zeros(first.shape, np.uint8)
        for p in evaluated.mask_path
    ]
    assert len(train) == 12 and len(held) >= 6 and len(defects) >= 5
    return root, train, evaluated, (evaluated.label == "anomalous").to_numpy(), masks


@pytest.fixture(scope="module")
def efficientad_teacher(task, tmp_path_factory):
    """The quick profile's PDN-S teacher (its 112x64 geometry and lr; 100 iterations instead of 60)
    distilled on the task's 12 training crops and the offline photographs, shared by the trained and
    the untrained EfficientAD: the teacher is pretraining (the paper's is distilled from ImageNet
    features once, before any training run); the test asks what the student and the autoencoder learn
    from normal images."""
    from safetensors.torch import save_file

    from lib.config import select_device
    from lib.models import model_config
    from lib.models.efficientad.teacher import distil_teacher
    from lib.models.efficientad.torch_model import EfficientADModel

    root, train, *_ = task
    cfg = model_config("efficientad_s", load_profile("quick"), teacher_iterations=100)
    torch.manual_seed(0)  # the PDN's initial weights: not whatever the tests before left in torch's RNG
    net = EfficientADModel(cfg.model_size, cfg.out_channels, input_size=tuple(cfg.input_size))
    device = select_device(cfg.device)
    images = load_images(root, train, tuple(cfg.input_size), masked=True)
    curve, _ = distil_teacher(
        net.to(device).teacher, net.to_input, images, cfg, np.random.default_rng([0, 72]), device
    )
    assert np.mean(curve[-10:]) < np.mean(curve[:10]), "the teacher did not learn"
    path = tmp_path_factory.mktemp("teacher") / "pdn_small.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in net.teacher.state_dict().items()}, str(path))
    return str(path)


def detection(model, task, untrained=None):
    """(image AUROC, pixel AUROC) of ``model`` trained on the task's normals (or on noise)."""
    root, train, evaluated, y, masks = task
    size = model.input_size
    x = load_images(root, train, size, masked=True)
    if untrained == NOISE:
        x = np.random.default_rng(0).integers(0, 256, x.shape, dtype=np.uint8)
    model.fit(x, x[:2])
    scores, maps = model.predict(load_images(root, evaluated, size, masked=True))
    h, w = masks[0].shape
    big = [cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in maps]
    return M.roc_auc(y, scores), M.PixelScores(masks, big).auroc()


def passes(img, px, name=None) -> bool:
    image_floor, pixel_floor = FLOORS.get(name, (IMAGE_FLOOR, PIXEL_FLOOR))
    return img >= image_floor and px >= pixel_floor


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_makes_the_model_see_a_sealant_defect(name, task, smoke_profile, request):
    settings, untrained = CASES[name]
    if settings.get("teacher_weights") == TEACHER:
        settings = {**settings, "teacher_weights": request.getfixturevalue("efficientad_teacher")}
    img, px = detection(make_model(name, smoke_profile, **settings), task)
    copy_settings = {**settings, **(untrained if isinstance(untrained, dict) else {})}
    u_img, u_px = detection(make_model(name, smoke_profile, **copy_settings), task, untrained)
    print(f"{name}: trained {img:.3f} / {px:.3f}, untrained {u_img:.3f} / {u_px:.3f} (image / pixel AUROC)")
    assert passes(img, px, name), f"{name} trained: image AUROC {img:.3f}, pixel AUROC {px:.3f}"
    assert not passes(u_img, u_px, name), f"{name} UNTRAINED passes too: image {u_img:.3f}, pixel {u_px:.3f}"


@pytest.mark.parametrize("size, padding, blind", [((112, 64), False, 0.42), ((113, 65), True, 0.0)])
def test_efficientad_blind_band_holds_the_share_of_defect_pixels_its_floor_assumes(
    task, size, padding, blind
):
    """The share of the task's defect pixels no map cell describes: 42 % for the unpadded PDN at 112x64
    (quick before), none for the padded PDN at quick's 113x65."""
    from lib.models.efficientad.torch_model import pdn_geometry, pdn_map_to_image

    *_, masks = task
    (w, h), (gh, gw) = size, masks[0].shape
    cells = (pdn_geometry(h, padding)[0], pdn_geometry(w, padding)[0])
    seen = pdn_map_to_image(torch.ones(1, 1, *cells), (h, w), padding)[0, 0].numpy()
    seen = cv2.resize(seen, (gw, gh), interpolation=cv2.INTER_LINEAR) > 0.99
    defect = np.stack(masks) > 0
    assert (defect & ~seen).sum() / defect.sum() == pytest.approx(blind, abs=0.01)


def test_a_brightness_detector_does_not_pass(task):
    """Image score = max grey level change vs the training mean: what the old toy test let through."""
    root, train, evaluated, y, masks = task
    size = masks[0].shape[::-1]
    mean = load_images(root, train, size, masked=True).astype(np.float32).mean(0).mean(-1)
    ev = load_images(root, evaluated, size, masked=True).astype(np.float32).mean(-1)
    maps = [cv2.GaussianBlur(np.clip(e - mean, 0, None), (0, 0), 2) for e in ev]
    img = M.roc_auc(y, [m.max() for m in maps])
    px = M.PixelScores(masks, maps).auroc()
    assert not passes(img, px), (img, px)
