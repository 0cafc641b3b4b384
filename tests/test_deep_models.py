"""Backbones (every weights path), PatchCore and SimpleNet: shapes, determinism, behaviour, save/load."""

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import toy_images

from lib.config import load_profile
from lib.models import AnomalyModel, make_model
from lib.models import backbones as bb
from lib.models.patchcore.torch_model import greedy_coreset


def test_backbone_from_offline_package():
    fe = bb.FeatureExtractor("tf_efficientnet_lite0", ("layer2", "layer3"))
    assert fe.info.source == "package" and fe.info.comparable
    feats = fe(torch.zeros(1, 64, 96, 3, dtype=torch.uint8))
    assert [f.shape[1] for f in feats] == fe.channels and fe.strides == [8, 16]


def test_backbone_random_warns_loudly():
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS"):
        fe = bb.FeatureExtractor("resnet18", ("layer2",))
    assert fe.info.source == "random" and not fe.info.comparable and "NOT COMPARABLE" in str(fe.info)


def test_backbone_from_local_file_and_cache(tmp_path, monkeypatch):
    """A tiny saved state dict stands in for a user's file and for the torch cache."""
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(ref.conv1.weight, 0.01)
    sd = ref.state_dict()
    path = tmp_path / "resnet18.safetensors"
    save_file(sd, str(path))
    fe = bb.FeatureExtractor("resnet18", ("layer2",), weights=path)
    assert fe.info.source == "file" and torch.allclose(fe.model.conv1.weight, sd["conv1.weight"])
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(sd, hub / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fe2 = bb.FeatureExtractor("resnet18", ("layer2",))
    assert fe2.info.source == "torch-cache"
    with pytest.raises(FileNotFoundError, match="not found"):
        bb.FeatureExtractor("resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown backbone"):
        bb.FeatureExtractor("vgg16")
    with pytest.raises(ValueError, match="no layer"):
        bb.FeatureExtractor("resnet18", ("layer9",))


def test_greedy_coreset_covers_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    pts = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    idx = greedy_coreset(pts, 4 / 200, projection_dim=2, seed=1)
    chosen = pts[idx]
    # one point from each cluster: k-center picks the farthest points first
    assert sorted({int(torch.cdist(c[None], centres).argmin()) for c in chosen}) == [0, 1, 2, 3]
    assert torch.equal(idx, greedy_coreset(pts, 4 / 200, projection_dim=2, seed=1))


def test_greedy_coreset_chunked_projection_is_bit_identical():
    """The projection runs in row chunks (the paper's 9 GB bank stays on the host): any chunk size gives
    the same coreset as one product, and a chunking that drops or repeats rows would not."""
    feats = torch.randn(1000, 32, generator=torch.Generator().manual_seed(3))
    whole = greedy_coreset(feats, 0.05, 16, seed=2, chunk_rows=10**6)
    for rows in (1, 7, 999, 1000):
        assert torch.equal(greedy_coreset(feats, 0.05, 16, seed=2, chunk_rows=rows), whole)
    with pytest.raises(ValueError, match="chunk_rows"):
        greedy_coreset(feats, 0.05, 16, chunk_rows=0)


def test_patchcore_fit_bank_equals_the_reference_construction():
    """fit() embeds into one host buffer batch by batch; its memory bank must equal, bit for bit, the
    plain construction (every batch's embeddings concatenated, then the coreset), with a last batch
    shorter than the others."""
    model = make_model("patchcore", load_profile("smoke"), input_size=(64, 48), batch_size=3)
    imgs = toy_images(7, seed=4)
    model.fit(imgs)
    with torch.no_grad():
        feats = torch.cat([model.net.embed(torch.from_numpy(imgs[i : i + 3]))[0] for i in range(0, 7, 3)])
    keep = greedy_coreset(feats, model.config.coreset_ratio, model.config.projection_dim, model.config.seed)
    assert model.history["n_patches"] == len(feats)
    assert torch.equal(model.net.memory_bank, feats[keep])


@pytest.mark.parametrize("name", ["patchcore", "simplenet"])
def test_model_shapes_save_load_determinism(name, tmp_path):
    prof = load_profile("smoke")
    # SimpleNet's layer-2 grid needs a larger image than PatchCore to place a 6-pixel defect
    f = 2 if name == "simplenet" else 1
    over = {"input_size": (64 * f, 48 * f)}
    if name == "simplenet":
        over.update(meta_epochs=12, gan_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # offline package weights: no random-init warning
        model = make_model(name, prof, **over)

    def grow(a):
        return np.stack([cv2.resize(x, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST) for x in a])

    train = grow(toy_images(12, 0))
    model.fit(train)
    normal = grow(toy_images(4, 1))
    bad = grow(toy_images(1, 2, defect=True))
    s_norm, m_norm = model.predict(normal)
    s_bad, m_bad = model.predict(bad)
    assert m_norm.shape == (4, 48 * f, 64 * f) and s_norm.shape == (4,)
    # detection itself is tested where an untrained model fails: tests/test_models_learn.py
    model.save(tmp_path / name)
    again = AnomalyModel.load(tmp_path / name)
    s2, m2 = again.predict(bad)
    assert np.allclose(s2, s_bad, atol=1e-5) and np.allclose(m2, m_bad, atol=1e-5)
    twin = make_model(name, prof, **over)  # same seed, same data -> same model
    twin.fit(train)
    assert np.allclose(twin.predict(bad)[0], s_bad, atol=1e-5)


def test_make_model_rejects_unknown_settings():
    with pytest.raises(ValueError, match="no setting"):
        make_model("patchcore", None, colour="red")
    with pytest.raises(ValueError, match="unknown model"):
        make_model("memseg9000")


def test_perlin_mask_bounds_and_determinism():
    from lib.models.memseg.anomaly_synthesis import SynthesisConfig, perlin_mask, synthesize

    cfg = SynthesisConfig()
    cover = []
    for seed in range(20):
        m = perlin_mask((64, 64), cfg, np.random.default_rng(seed))
        assert set(np.unique(m)) <= {0.0, 1.0}
        cover.append(m.mean())
    assert 0.0 < min(cover) and max(cover) < 0.6  # threshold 0.5 keeps the noise's upper tail only
    a = perlin_mask((64, 64), cfg, np.random.default_rng(3))
    assert np.array_equal(a, perlin_mask((64, 64), cfg, np.random.default_rng(3)))
    fg = np.zeros((64, 64), bool)
    fg[:, :20] = True
    assert not perlin_mask((64, 64), cfg, np.random.default_rng(4), fg)[:, 20:].any()  # foreground only
    img = np.full((64, 64, 3), 100, np.uint8)
    out, mask = synthesize(img, SynthesisConfig(anomaly_probability=1.0), np.random.default_rng(5))
    assert mask.any() and np.array_equal(out[mask == 0], img[mask == 0])


def test_memseg_and_efficientad_components():
    from lib.models.efficientad.torch_model import AutoEncoder, pdn
    from lib.models.memseg.torch_model import CoordAttention, MemSegModel

    x = torch.zeros(2, 3, 128, 128)
    assert pdn("small")(x).shape[1] == 384 and pdn("medium", 768)(x).shape[1] == 768
    assert AutoEncoder(384, input_size=(128, 128))(x, (24, 24)).shape == (2, 384, 24, 24)
    assert CoordAttention(64)(torch.ones(2, 64, 8, 12)).shape == (2, 64, 8, 12)
    net = MemSegModel(memory_samples=2)
    net.set_memory(torch.zeros(2, 3, 64, 64))
    assert net.logits(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    scores, maps = net.eval()(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
    assert scores.shape == (1,) and maps.shape == (1, 64, 64)


@pytest.mark.parametrize("name", ["memseg", "efficientad_s"])
def test_trainable_models_learn_and_reload(name, tmp_path):
    over = {"input_size": (64, 48)}
    if name == "memseg":
        over.update(iterations=60, batch_size=4, memory_samples=4, lr=0.003)
    else:
        over.update(iterations=120, teacher_iterations=40)
    model = make_model(name, None, **over)
    train = toy_images(16, 0)
    history = model.fit(train, toy_images(4, 9))
    # training lowers the loss (EfficientAD: its autoencoder term; the total is dominated by the noisy
    # batch-1 hard-feature and penalty terms early on) and, for EfficientAD, the teacher distillation loss
    key = "loss" if name == "memseg" else "ae_loss"
    losses = [c[key] for c in history["curve"]]
    q = max(1, len(losses) // 4)
    assert np.mean(losses[-q:]) < np.mean(losses[:q])
    if name != "memseg":
        t = history["teacher_curve"]
        assert np.mean(t[-len(t) // 4 :]) < np.mean(t[: len(t) // 4])
    s_bad, m_bad = model.predict(toy_images(1, 2, defect=True))  # detection: tests/test_models_learn.py
    model.save(tmp_path / name)
    again = AnomalyModel.load(tmp_path / name)
    s2, m2 = again.predict(toy_images(1, 2, defect=True))
    assert np.allclose(s2, s_bad, atol=1e-5) and np.allclose(m2, m_bad, atol=1e-5)


def test_efficientad_teacher_is_distilled_once_stored_and_reused(built):
    from safetensors.torch import load_file

    from lib.models.efficientad.teacher import ensure_teacher, teacher_info, teacher_path

    root, *_, manifest = built
    cfg = make_model("efficientad_s", None, input_size=(64, 48), teacher_iterations=3).config
    path = ensure_teacher(cfg, root, manifest, seed=0, progress=False)
    assert path == teacher_path(root, cfg, 0) and path.is_file()
    info = teacher_info(path)
    n_train = int(((manifest.split == "train") & (manifest.label == "normal")).sum())
    assert len(info["curve"]) == 3 and info["training_images"] == n_train  # training normals only
    stamp = path.stat().st_mtime_ns
    assert ensure_teacher(cfg, root, manifest, seed=0, progress=False) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not distilled again
    other = make_model("efficientad_s", None, input_size=(64, 48), teacher_iterations=4).config
    assert teacher_path(root, other, 0) != path  # another schedule is another teacher
    model = make_model("efficientad_s", None, input_size=(64, 48), iterations=2, teacher_weights=str(path))
    history = model.fit(toy_images(6, 0), toy_images(2, 3))
    stored = load_file(str(path))
    assert all(torch.equal(v, stored[k]) for k, v in model.net.teacher.state_dict().items())
    assert str(path) in history["teacher"] and history["teacher_curve"] == info["curve"]


def test_efficientad_channels_last_inference_matches_the_trained_net():
    model = make_model("efficientad_s", None, input_size=(64, 48), iterations=2, teacher_iterations=1)
    model.fit(toy_images(4, 0), toy_images(2, 1))
    imgs = toy_images(3, 2, defect=True)
    _, maps = model.predict(imgs)
    with torch.no_grad():
        ref = model.net.normalised_map(model._t(imgs)).numpy()
    assert np.allclose(maps, ref, atol=1e-5)
    state = model.state_dict()
    state["q_st_b"] = state["q_st_b"] * 2  # new weights must reach the inference copy
    model.load_state_dict(state)
    _, maps2 = model.predict(imgs)
    assert not np.allclose(maps2, maps, atol=1e-6)


def test_model_config_without_building_the_model():
    from lib.models import model_config

    quick = load_profile("quick")
    cfg = model_config("efficientad_m", quick)
    assert cfg.model_size == "medium" and tuple(cfg.input_size) == tuple(
        quick.models["efficientad_m"]["input_size"]
    )
    assert make_model("efficientad_m", quick).config == cfg
    with pytest.raises(ValueError, match="unknown model"):
        model_config("nope")


def test_check_weights_says_where_it_looked_and_what_file_to_put_where(tmp_path, monkeypatch):
    from lib.__main__ import main
    from lib.models.backbones import weights_report

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rows = {r["backbone"]: r for r in weights_report()}
    assert set(rows) == {"resnext101_32x8d", "wide_resnet50_2"} and not any(r["found"] for r in rows.values())
    put = Path(rows["resnext101_32x8d"]["put"])
    # torchvision's own file name for the ImageNet (V1) weights, under the torch hub cache looked in
    assert put == tmp_path / "torch" / "hub" / "checkpoints" / "resnext101_32x8d-8ba56ff5.pth"
    assert any(str(tmp_path / "torch") in p for p in rows["resnext101_32x8d"]["looked_in"])
    assert main(["check-weights", "--strict"]) == 1 and main(["check-weights"]) == 0
    put.parent.mkdir(parents=True)
    put.write_bytes(b"")  # only looked for, never read
    (r,) = weights_report(["resnext101_32x8d"])
    assert r["found"] and r["source"] == "torch-cache" and r["location"] == str(put)
    assert main(["check-weights", "--strict", "--backbone", "resnext101_32x8d"]) == 0
    with pytest.raises(ValueError, match="unknown backbone"):
        weights_report(["vgg"])
