"""Tests with teeth: each model must learn to see a small, low-contrast sealant defect.

The data are the smoke line's `front` crops (212x120): 12 training normals; evaluated on the 8
other training normals and the 7 defect images (synthetic defects from our own generator and one
real robot defect), masked as the dagger variant. A model passes when its image AUROC is >= 0.65
**and** its pixel AUROC is >= 0.85; the same check on an untrained copy (no training iterations,
or a memory of noise) must fail, so the pass is what training did. A brightness detector does not
pass (the defects move or remove bead; they do not brighten anything).
"""

import cv2
import numpy as np
import pandas as pd
import pytest

from lib.evaluate import metrics as M
from lib.models import make_model
from lib.models.data import load_images

VIEW = "front"
IMAGE_FLOOR, PIXEL_FLOOR = 0.65, 0.85
NOISE = "noise"  # untrained copy = fitted on uniform noise images (no normal data seen)

#: model -> (settings for the test, settings of its untrained copy)
CASES = {
    "patchcore": ({"input_size": (212, 120)}, NOISE),
    "simplenet": ({"input_size": (224, 128), "meta_epochs": 40, "gan_epochs": 4}, {"meta_epochs": 0}),
    "memseg": ({"input_size": (224, 128), "iterations": 60}, {"iterations": 0}),
}


@pytest.fixture(scope="module")
def task(built):
    root, *_, manifest = built
    rows = manifest[manifest.viewpoint == VIEW]
    normals = rows[rows.split == "train"].sort_values("image_id")
    train, held = normals.iloc[:12], normals.iloc[12:]
    defects = rows[rows.label == "anomalous"].sort_values("image_id")
    evaluated = pd.concat([held, defects])
    first = cv2.imread(str(root / evaluated.image_path.iloc[0]), cv2.IMREAD_GRAYSCALE)
    masks = [
        cv2.imread(str(root / p), cv2.IMREAD_GRAYSCALE) if p else np.zeros(first.shape, np.uint8)
        for p in evaluated.mask_path
    ]
    assert len(held) >= 6 and len(defects) >= 5
    return root, train, evaluated, (evaluated.label == "anomalous").to_numpy(), masks


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


def passes(img, px) -> bool:
    return img >= IMAGE_FLOOR and px >= PIXEL_FLOOR


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_makes_the_model_see_a_sealant_defect(name, task, smoke_profile):
    settings, untrained = CASES[name]
    img, px = detection(make_model(name, smoke_profile, **settings), task)
    assert passes(img, px), f"{name} trained: image AUROC {img:.3f}, pixel AUROC {px:.3f}"
    copy_settings = {**settings, **(untrained if isinstance(untrained, dict) else {})}
    u_img, u_px = detection(make_model(name, smoke_profile, **copy_settings), task, untrained)
    assert not passes(u_img, u_px), f"{name} UNTRAINED passes too: image {u_img:.3f}, pixel {u_px:.3f}"


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
