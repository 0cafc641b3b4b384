"""ONNX export: every paper model's exported graph gives the torch model's scores and maps on real crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.models import export as E
from lib.models import make_model
from lib.models.data import load_images, select
from lib.models.features import adaptive_pool_matrix

#: small training budgets: parity does not need a good model, only a trained one
CASES = {
    "patchcore": {},
    "simplenet": {"meta_epochs": 2},
    "memseg": {"iterations": 3},
    "efficientad_s": {},
    "efficientad_m": {},
}
TOLERANCE = 1e-4  # largest difference relative to the output's largest magnitude


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_runtime_matches_torch_on_real_crops(name, built, smoke_profile, tmp_path):
    root, *_, manifest = built
    model = make_model(name, smoke_profile, **CASES[name])
    train = load_images(root, select(manifest, "front", "train", "normal"), model.input_size, True)
    crops = load_images(root, select(manifest, "front", "test"), model.input_size, True)
    model.fit(train, train[:2])
    ours = model.predict(crops)
    onnx_model = E.predictor(model, "onnxruntime", tmp_path / f"{name}.onnx", threads=1)
    assert onnx_model.name == model.name and onnx_model.input_size == tuple(model.input_size)
    theirs = onnx_model.predict(crops)
    assert theirs[1].shape == ours[1].shape and theirs[0].shape == ours[0].shape
    diff = E.parity(ours, theirs)
    assert diff["scores"] <= TOLERANCE and diff["maps"] <= TOLERANCE, diff
    # and the scores still rank the images the same way (the parity is not hiding a constant map)
    assert np.ptp(ours[0]) > 0 and np.argsort(ours[0]).tolist() == np.argsort(theirs[0]).tolist()


@pytest.mark.parametrize("n_in,n_out", [(40, 16), (24, 64), (112, 112), (7, 3), (320, 256)])
def test_adaptive_pool_matrix_equals_adaptive_avg_pool1d(n_in, n_out):
    x = torch.randn(5, n_in, dtype=torch.float64)
    want = F.adaptive_avg_pool1d(x[:, None], n_out)[:, 0]
    got = x @ adaptive_pool_matrix(n_in, n_out).double()
    assert torch.allclose(got, want, atol=1e-12)


def test_onnx_predictor_rejects_wrong_sizes_and_files(built, smoke_profile, tmp_path):
    root, *_, manifest = built
    model = make_model("efficientad_s", smoke_profile)
    train = load_images(root, select(manifest, "front", "train", "normal"), model.input_size, True)
    model.fit(train, train[:2])
    path = E.export_onnx(model, tmp_path / "m.onnx")
    w, h = model.input_size
    with pytest.raises(ValueError, match=rf"the model takes {w}x{h}"):
        E.OnnxPredictor(path).predict(np.zeros((1, h + 1, w, 3), np.uint8))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.onnx"):
        E.OnnxPredictor(bad)
    with pytest.raises(ValueError, match="no ONNX export"):
        E.inference_module(make_model("baseline", smoke_profile))
    with pytest.raises(ValueError, match="backend"):
        E.predictor(model, "tensorrt")
