"""The precision setting: what `auto` picks, what runs in bf16, what stays fp32, parity at smoke size,
and that a change of precision re-runs a cell. bf16 runs on any CPU (emulated where there is no
native unit), so every test here runs in CI whatever its CPU."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers import toy_images

from lib import precision as P
from lib.config import load_profile
from lib.evaluate import metrics as M
from lib.identity import cell_identity, config_identity, stale_reason
from lib.models import REGISTRY, AnomalyModel, make_model, model_config
from lib.models.base import resolve_precision
from lib.models.export import export_onnx
from lib.models.train import run_cell
from lib.store import Cell

AMX = frozenset({"avx512f", "amx_tile", "amx_bf16", "amx_int8"})
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})
DEEP = ("patchcore", "simplenet", "memseg", "efficientad_s")


def test_auto_picks_bf16_only_on_native_units_and_for_models_whose_parity_held():
    assert P.resolve("auto", "cpu", AMX) == "bf16"
    assert P.resolve("auto", "cpu", AVX512_BF16) == "bf16"
    assert P.resolve("auto", "cpu", AVX2) == "fp32"  # emulated bf16 would be slower
    assert P.resolve("auto", "cpu", AMX, model_allows=False) == "fp32"
    assert P.resolve("bf16", "cpu", AVX2) == "bf16" and P.resolve("fp32", "cpu", AMX) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        P.resolve("fp16")
    assert (
        "auto: fp32" in P.describe(AVX2)
        and "auto: bf16 for models" in P.describe(AVX512_BF16)
        and "AMX bf16 matrix units" in P.describe(AMX)
    )


def test_configs_carry_a_concrete_precision(monkeypatch):
    """`auto` never reaches a config: the identity, the checkpoint and the tables record what ran."""
    for name in REGISTRY:
        cfg = model_config(name, load_profile("smoke"))
        assert getattr(cfg, "precision", "fp32") in ("fp32", "bf16"), name
    cls = REGISTRY["patchcore"]
    monkeypatch.setattr(P, "cpu_flags", lambda: AMX)
    monkeypatch.setattr(cls, "auto_bf16", True)
    assert model_config("patchcore", load_profile("smoke"), device="cpu").precision == "bf16"
    monkeypatch.setattr(cls, "auto_bf16", False)
    assert model_config("patchcore", load_profile("smoke"), device="cpu").precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        model_config("patchcore", None, precision="half")


def test_profile_precision_and_the_run_override(monkeypatch):
    monkeypatch.setenv("SEALANT_PRECISION", "bf16")
    prof = load_profile("smoke")
    assert prof.precision == "bf16"
    assert model_config("memseg", prof).precision == "bf16"
    assert model_config("memseg", prof, precision="fp32").precision == "fp32"  # an explicit override wins
    monkeypatch.setenv("SEALANT_PRECISION", "half")
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or auto"):
        load_profile("smoke")


def _conv_input_dtypes(model, run):
    """The dtypes every Conv2d of the model's modules (its net and any inference copy) receives."""
    run()  # builds any lazily made inference copy first
    seen = []
    nets = [v for v in vars(model).values() if isinstance(v, torch.nn.Module)]
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
        for net in nets
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return set(seen)


@pytest.mark.parametrize("name", DEEP)
def test_bf16_runs_the_convolutions_in_bf16_and_returns_fp32(name):
    cls = REGISTRY[name]
    train = toy_images(12, 0)
    test = np.concatenate([toy_images(3, 1), toy_images(3, 2, defect=True)])
    model = make_model(name, None, **cls.quick_fit, input_size=(64, 48), precision="fp32")
    model.fit(train, train[:4])
    assert _conv_input_dtypes(model, lambda: model.predict(test)) == {torch.float32}
    with P.module_precision(model.net, "bf16"):
        dtypes = _conv_input_dtypes(model, lambda: model.predict(test))
        scores, maps = model.predict(test)
    assert torch.bfloat16 in dtypes  # autocast reached the convolutions
    assert maps.dtype == np.float32 and np.isfinite(maps).all() and np.isfinite(scores).all()
    # the numerically sensitive parts hold fp32 state
    for key, value in model.state_dict().items():
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.asarray(value).dtype == np.float32, key
    assert _conv_input_dtypes(model, lambda: model.predict(test)) == {torch.float32}  # restored


#: models whose quick_fit finds the toy defects (fp32 image and pixel AUROC >= 0.95): only there does an
#: AUROC comparison say anything; SimpleNet (1 meta epoch) and MemSeg (2 iterations) are not trained enough
DETECTING = ("patchcore", "efficientad_s")


@pytest.mark.parametrize("name", DEEP)
def test_parity_at_smoke_size(name):
    """Same weights, bf16 inference: maps within 5 % of the fp32 map's range (measured 0.6-3.2 %), image
    scores in nearly the same order (Spearman >= 0.95; measured 0.976-1); for the models that find the
    toy defects, image and pixel AUROC within 0.01 of fp32's."""
    from scipy.stats import spearmanr

    cls = REGISTRY[name]
    train = toy_images(12, 0)
    normal, defect = toy_images(4, 1), toy_images(4, 2, defect=True)
    test = np.concatenate([normal, defect])
    gt = np.zeros((8, 48, 64), np.uint8)
    gt[4:, 20:26, 30:36] = 1
    y = np.r_[np.zeros(4), np.ones(4)]
    model = make_model(name, None, **cls.quick_fit, input_size=(64, 48), precision="fp32")
    model.fit(train, train[:4])
    s32, m32 = model.predict(test)
    with P.module_precision(model.net, "bf16"):
        s16, m16 = model.predict(test)
    assert np.abs(m32 - m16).max() <= 0.05 * np.ptp(m32)
    assert spearmanr(s32, s16).statistic >= 0.95
    if name in DETECTING:
        img = [M.roc_auc(y, s) for s in (s32, s16)]
        px = [M.PixelScores(list(gt), list(m)).auroc() for m in (m32, m16)]
        assert min(img[0], px[0]) >= 0.95  # the fp32 model does find the defects
        assert abs(img[0] - img[1]) <= 0.01 and abs(px[0] - px[1]) <= 0.01


def test_bf16_training_runs_and_is_recorded(built, tmp_path):
    root, *_, manifest = built
    cell = Cell("memseg", "front", True, 0)
    model = make_model("memseg", None, **REGISTRY["memseg"].quick_fit, input_size=(64, 64), precision="bf16")
    run_cell(model, root, manifest, cell, tmp_path, progress=False)
    meta = json.loads((tmp_path / "memseg" / "front" / "masked" / "seed0" / "meta.json").read_text())
    assert meta["precision"] == "bf16"
    saved = json.loads(
        (tmp_path / "memseg" / "front" / "masked" / "seed0" / "checkpoint" / "config.json").read_text()
    )
    assert saved["config"]["precision"] == "bf16"
    assert (
        REGISTRY["memseg"].load(tmp_path / "memseg" / "front" / "masked" / "seed0" / "checkpoint").precision
        == "bf16"
    )


def test_a_change_of_precision_reruns_the_cell(built, tmp_path):
    root, *_, manifest = built
    cell = Cell("patchcore", "front", False, 0)
    cls = REGISTRY["patchcore"]
    model = make_model("patchcore", None, **cls.quick_fit, input_size=(64, 48), precision="fp32")
    run_cell(model, root, manifest, cell, tmp_path, progress=False)
    fp32 = cell_identity(cell, model.config, root, manifest)
    bf16 = cell_identity(cell, dataclasses.replace(model.config, precision="bf16"), root, manifest)
    assert stale_reason(tmp_path, cell, fp32) is None
    assert stale_reason(tmp_path, cell, bf16) == "model config changed"


def test_fp32_identity_and_checkpoints_from_before_the_setting_stay_valid(tmp_path):
    """A config without `precision` ran fp32: same identity as fp32 now, and its checkpoint loads as fp32."""
    cfg = model_config(
        "patchcore", None, **REGISTRY["patchcore"].quick_fit, input_size=(64, 48), precision="fp32"
    )
    older = [
        (k, object, dataclasses.field(default=v))
        for k, v in dataclasses.asdict(cfg).items()
        if k != "precision"
    ]
    legacy = dataclasses.make_dataclass("Legacy", older, frozen=True)()
    assert config_identity(legacy) == config_identity(cfg)
    assert config_identity(dataclasses.replace(cfg, precision="bf16")) != config_identity(cfg)
    model = REGISTRY["patchcore"](cfg)
    model.fit(toy_images(6, 0))
    ckpt = model.save(tmp_path / "ckpt")
    saved = json.loads((ckpt / "config.json").read_text())
    del saved["config"]["precision"]
    (ckpt / "config.json").write_text(json.dumps(saved))
    assert REGISTRY["patchcore"].load(ckpt).precision == "fp32"


def test_onnx_export_traces_fp32_and_restores_the_precision(tmp_path):
    cls = REGISTRY["efficientad_s"]
    model = make_model("efficientad_s", None, **cls.quick_fit, input_size=(64, 48), precision="bf16")
    model.fit(toy_images(6, 0))
    traced = []
    convs = [m for m in model.net.student.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [c.register_forward_pre_hook(lambda _m, args: traced.append(args[0].dtype)) for c in convs]
    export_onnx(model, tmp_path / "m.onnx")
    for h in hooks:
        h.remove()
    assert (tmp_path / "m.onnx").is_file() and set(traced) == {torch.float32}
    assert model.net.precision == "bf16"


def test_resolve_precision_leaves_configs_without_the_field_alone():
    @dataclasses.dataclass(frozen=True)
    class NoField:
        x: int = 1

    assert resolve_precision(NoField()) == NoField()
    assert AnomalyModel.auto_bf16 is False  # a model must earn bf16 in `auto` by measurement
