"""The paper profile before a GPU: the dry-run profile, the resource plan's arithmetic, the GPU check's logic."""

import dataclasses

import pandas as pd
import pytest
import torch

from lib.__main__ import _variants, _views, dry_run_profile, main
from lib.config import load_profile
from lib.models import GRID_MODELS, make_model, model_config
from lib.models import gpu_check as G
from lib.models import resources as R
from lib.report import table8_comparison

#: the only settings in which paper-dry's models may differ from paper's: budgets, the random backbone, and
#: MemSeg's memory of normal images (Table 3's 30 needs more training images than a dry run has)
BUDGETS = {"iterations", "teacher_iterations", "meta_epochs", "gan_epochs", "allow_random_backbone"}
COUNTS = {"memory_samples"}


def test_paper_dry_is_the_paper_geometry_at_token_budgets():
    """A dry run proves nothing unless its sizes are the paper's: same frame, crop, input sizes, backbones and
    every Table 3 setting, with only budgets and counts shrunk."""
    paper, dry = load_profile("paper"), load_profile("paper-dry")
    assert dry.dry_run and not paper.dry_run
    assert (dry.frame_size, dry.crop_size, dry.scale) == (paper.frame_size, paper.crop_size, 1.0)
    assert dry.crop_size == (848, 480)
    for name in GRID_MODELS:
        a = dataclasses.asdict(model_config(name, paper))
        b = dataclasses.asdict(model_config(name, dry))
        differ = {k for k in a if a[k] != b[k]}
        assert differ <= BUDGETS | COUNTS, (name, differ)
        for k in differ - {"allow_random_backbone"} - COUNTS:
            assert b[k] <= 2, (name, k, b[k])  # "2 training iterations per model"
    assert all(2 <= n <= 3 for n in dry.normals_per_view.values())


def test_dry_run_flag_and_views():
    assert dry_run_profile("paper") == dry_run_profile("auto") == "paper-dry"
    with pytest.raises(ValueError, match="dry run of the paper profile"):
        dry_run_profile("quick")
    assert _views("center, back") == ("center", "back")
    with pytest.raises(ValueError, match="unknown viewpoint"):
        _views("top")
    assert _variants("masked,raw") == ("raw", "masked") and _variants("raw") == ("raw",)
    with pytest.raises(ValueError, match="--variants"):
        _variants("both")
    assert main(["run", "--profile", "smoke", "--dry-run"]) == 1


def test_makespan_is_longest_first_by_hand():
    # 5,4,3,3,3 on two GPUs: A 5, B 4, B 7, A 8, B 10
    assert R._makespan([3, 3, 5, 4, 3], 2) == 10
    assert R._makespan([3, 3, 5, 4, 3], 1) == 18
    assert R._makespan([3, 3, 5, 4, 3], 8) == 5


def test_meter_counts_flops_and_saved_activations_by_hand():
    lin = torch.nn.Linear(10, 20, bias=False)
    x = torch.randn(3, 10)
    m = R._Meter()
    m.run(lambda: lin(x))
    assert m.flops == 2 * 3 * 10 * 20  # one (3x10)(10x20) matmul
    assert (
        m.saved_bytes == 3 * 10 * 4
    )  # the input, saved for the weight's gradient; the weight is not counted
    assert m.transient_bytes == (3 * 10 + 3 * 20) * 4
    m2 = R._Meter()
    m2.run(lambda: lin(x).sum().backward())
    assert m2.flops == 2 * m.flops  # forward + the weight's gradient (the input needs none)


def test_training_flops_are_linear_in_the_budget():
    """The plan scales one measured unit by the paper's budget: that holds only if k units cost k times one
    (a counter that missed the backward pass, or a fit whose cost grew with the step, would break it)."""
    prof = load_profile("smoke")
    imgs = R._probe_images(6, (64, 64), seed=1)
    flops = []
    for k in (1, 2, 3):
        model = make_model("memseg", prof, iterations=k, device="cpu", precision="fp32")
        meter = R._Meter()
        meter.run(lambda model=model: model.fit(imgs))
        flops.append(meter.flops)
    assert flops[1] > flops[0]
    assert flops[2] - flops[0] == 2 * (flops[1] - flops[0])


def test_probe_and_plan_on_a_small_profile():
    probe = R.probe_model("efficientad_s", "smoke")
    assert set(probe["units"]) == {"iterations", "teacher_iterations"}
    assert all(u["flops"] > 0 for u in probe["units"].values()) and probe["infer_flops"] > 0
    assert probe["cpu_peak_bytes"] > probe["cpu_growth_bytes"] > 0
    table, totals = R.plan([probe], "smoke")
    row = table.iloc[0]
    gpu = R.GPUSpec()
    unit = probe["units"]["iterations"]["flops"]
    assert row.gpu_ms_per_unit["iterations"] == round(unit / gpu.flops_per_s * 1e3, 2)
    cfg = model_config("efficientad_s", load_profile("smoke"))
    work = R.paper_workload("smoke")
    n_eval = max(w["val"] + w["test"] for w in work.values())
    want = cfg.iterations * unit / gpu.flops_per_s + n_eval * probe["infer_flops"] / gpu.flops_per_s
    assert row.cell_s == pytest.approx(want, abs=1e-3)
    assert totals["cells"] == 3 * 2 * len(load_profile("smoke").grid_seeds)
    # the teacher is distilled once per profile: added once, not per cell
    once = cfg.teacher_iterations * probe["units"]["teacher_iterations"]["flops"] / gpu.flops_per_s
    assert row.once_per_profile_s == pytest.approx(once, abs=1e-3)
    assert totals["wall_s_by_gpus"][1] == pytest.approx(totals["cells"] * want + once, abs=2e-3)
    text = R.plan_markdown(table, totals, "test CPU")
    assert "efficientad_s" in text and "ESTIMATED" in text and "test CPU" in text


def test_paper_workload_and_the_patchcore_bank():
    """Table 2's training frames (345 per view, the issue's figure) and the 9 GB pre-coreset bank it makes:
    the plan keeps that bank on the host and puts only its projection and the coreset on the GPU."""
    work = R.paper_workload("paper")
    assert work["front"]["train"] == 69 * 5 == 345
    probe = {
        "model": "patchcore",
        "input": "848x480",
        "batch": 4,
        "units": {"image": {"flops": 1e11, "saved_bytes": 0, "cpu_s": 1.0}},
        "fit_transient_bytes": 2**28,
        "infer_flops": 2e11,
        "infer_transient_bytes": 2**28,
        "infer_cpu_s": 1.0,
        "param_bytes": 350 * 2**20,
        "trainable_bytes": 0,
        "bank_bytes": 4 * 1024 * 1000,
        "cpu_peak_bytes": 2**32,
        "cpu_growth_bytes": 2**31,
    }
    table, _ = R.plan([probe], "paper")
    row = table.iloc[0]
    n_patches = max(w["train"] for w in work.values()) * 106 * 60
    assert f"{n_patches * 1024 * 4 / 2**30:.1f} GiB kept on the host" in row.note
    assert row.fits_card and row.gpu_train_gib < 24
    k = round(n_patches * 0.05)
    assert row.gflop_per_image == pytest.approx((2e11 + 2 * 6360 * (k - 1000) * 1024) / 1e9, abs=0.01)


def test_latency_ms_warms_up_synchronises_and_counts():
    calls = []
    ms = G.latency_ms(lambda: calls.append(1), "cpu", warmup=3, repeats=5)
    assert len(calls) == 8 and len(ms) == 5 and all(v >= 0 for v in ms)
    with pytest.raises(ValueError, match="repeats"):
        G.latency_ms(lambda: None, "cpu", 0, 0)
    assert G.p95(list(range(1, 21))) == pytest.approx(19.05)


def test_gpu_check_refuses_without_cuda_and_tiny_writes_its_csv(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(G.NoCudaError, match="--tiny"):
            G.run_check(["baseline"], tmp_path / "x.csv")
    out = tmp_path / "tiny.csv"
    table, env = G.run_check(["baseline", "efficientad_s"], out, tiny=True, units=1, warmup=1, repeats=2)
    back = pd.read_csv(out)
    assert list(back.columns) == list(G.COLUMNS) and len(back) == 2
    assert back.tiny.all() and (back.device == "cpu").all() and (back.repeats == 2).all()
    assert (back.p95_ms >= back.median_ms).all() and back.torch.iloc[0] == torch.__version__
    with pytest.raises(ValueError, match="unknown model"):
        G.run_check(["nope"], tmp_path / "y.csv", tiny=True)
    # a tiny CPU run is never shown as a GPU figure
    t8 = table8_comparison(out)
    assert len(t8) == 5 and t8.ours_s_per_image.str.startswith("not measured").all()
    gpu_row = back.iloc[[1]].assign(tiny=False, device="cuda", median_ms=80.0, p95_ms=90.0, gpu="H200")
    gpu_row.to_csv(tmp_path / "gpu.csv", index=False)
    t8 = table8_comparison(tmp_path / "gpu.csv").set_index("model")
    assert t8.loc["efficientad_s", "ours_s_per_image"].startswith("0.080 (p95 0.090) on H200")
    assert t8.loc["memseg", "ours_s_per_image"].startswith("not measured")


def test_gpu_check_script_without_cuda_exits_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import importlib.util

    from lib.config import REPO_ROOT

    spec = importlib.util.spec_from_file_location(
        "gpu_check_script", REPO_ROOT / "benchmarks" / "gpu_check.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--models", "baseline"]) == 2
    assert "add --tiny" in capsys.readouterr().err
