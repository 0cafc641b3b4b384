import pytest

from lib import config


def test_profiles_load_and_scale():
    paper, quick, smoke = (config.load_profile(n) for n in ("paper", "quick", "smoke"))
    assert paper.crop_size == (848, 480)
    assert quick.crop_size == (424, 240)
    assert smoke.crop_size[0] < quick.crop_size[0]
    # Table 2: 345 normal + 15 real defective underbodies (3 front, 6 center, 6 back)
    assert paper.normal_underbodies == 345
    assert paper.defective_underbodies == {"front": 3, "center": 6, "back": 6}
    assert paper.n_passes == 360
    for p in (paper, quick, smoke):  # frames hold the crop with slack for the conveyor motion
        assert p.frame_size[0] > p.crop_size[0] and p.frame_size[1] > p.crop_size[1]


def test_auto_resolves_by_cuda(monkeypatch):
    monkeypatch.setattr(config, "cuda_available", lambda: True)
    assert config.resolve_profile_name("auto") == "paper"
    monkeypatch.setattr(config, "cuda_available", lambda: False)
    assert config.resolve_profile_name("auto") == "quick"


def test_unknown_profile_is_named():
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        config.load_profile("huge")


def test_negative_counts_rejected():
    smoke = config.load_profile("smoke")
    with pytest.raises(ValueError, match="normal_underbodies"):
        smoke.with_overrides(normal_underbodies=-1)
    with pytest.raises(ValueError, match=r"defective_underbodies\['back'\]"):
        smoke.with_overrides(defective_underbodies={"back": -2})
    with pytest.raises(ValueError, match="unknown profile field"):
        smoke.with_overrides(bogus=1)


def test_profile_file_with_missing_field(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('[tiny]\ndescription = "x"\nscale = 0.25\n')
    with pytest.raises(ValueError, match="missing fields"):
        config.load_profile("tiny", bad)


def test_seed_and_device():
    rng_a = config.seed_everything(3)
    rng_b = config.seed_everything(3)
    assert rng_a.random() == rng_b.random()
    with pytest.raises(ValueError, match="seed"):
        config.seed_everything(-1)
    assert config.select_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        config.select_device("tpu")


def test_table3_deviations_list_what_a_profile_changes_and_nothing_else():
    import dataclasses

    from lib.config import load_profile
    from lib.models import table3_deviations

    assert table3_deviations(load_profile("paper")) == []  # paper: Table 3, plumbing fields ignored
    quick = config.load_profile("quick")
    rows = {(r["model"], r["setting"]): r for r in table3_deviations(quick)}
    assert rows[("patchcore", "input_size")]["Table 3"] == (848, 480)
    assert rows[("patchcore", "input_size")]["quick"] == tuple(quick.models["patchcore"]["input_size"])
    assert not any(m == "baseline" for m, _ in rows)  # not a paper model
    same = dataclasses.replace(quick, models={"memseg": {"iterations": 15000, "device": "cpu"}})
    assert table3_deviations(same) == []  # equal to Table 3, and device is not a Table 3 setting


def test_cpu_description_names_the_matrix_units():
    from lib.config import cpu_description

    amx = "model name\t: Intel Xeon 8480\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    d = cpu_description(amx)
    assert d.startswith("Intel Xeon 8480 (") and "AVX-512, avx512_bf16" in d and "no AMX" not in d
    assert d.endswith("AMX)")
    assert "(1 core;" in cpu_description(amx, cores=1)  # taskset -c 0: the cores this run may use
    plain = cpu_description("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert "AVX2" in plain and "no AMX" in plain and "avx512" not in plain


def test_budget_line_sets_a_profile_against_table_3():
    from lib.models import budget_line

    quick = config.load_profile("quick")
    assert budget_line("efficientad_m", quick).startswith("113×65 (Table 3: 256×256), 40 / 70,000 iterations")
    assert budget_line("patchcore", quick) == "212×120 (Table 3: 848×480), no gradient training"
    assert budget_line("memseg") == "256×256, 15,000 / 15,000 iterations"  # Table 3 itself


def test_quick_leaves_efficientad_m_out_and_a_run_can_add_it_back():
    from lib.models import GRID_MODELS, run_models

    quick, paper = config.load_profile("quick"), config.load_profile("paper")
    assert run_models(quick) == ("baseline", "patchcore", "memseg", "efficientad_s", "simplenet")
    assert run_models(paper) == GRID_MODELS  # paper runs every model
    assert run_models(quick, ["+efficientad_m"]) == GRID_MODELS  # added, in table order
    assert run_models(quick, ["simplenet", "patchcore"]) == ("patchcore", "simplenet")  # a list replaces
    with pytest.raises(ValueError, match="unknown model"):
        run_models(quick, ["+efficientad_l"])
    with pytest.raises(ValueError, match="either a list or"):
        run_models(quick, ["patchcore", "+memseg"])
    with pytest.raises(ValueError, match="unknown model"):
        run_models(quick.with_overrides(grid_models=("patchcore", "fastflow")))
    with pytest.raises(ValueError, match="grid_models must be"):
        quick.with_overrides(grid_models=())


def test_quick_efficientad_sees_the_whole_crop_and_paper_keeps_table3_geometry():
    from lib.models import make_model, model_config
    from lib.models.efficientad.torch_model import pdn_coverage

    for name in ("efficientad_s", "efficientad_m"):
        quick = model_config(name, config.load_profile("quick"))
        assert quick.padding and pdn_coverage(quick.input_size[::-1], True) >= 0.95
        paper = model_config(name, config.load_profile("paper"))
        assert not paper.padding and tuple(paper.input_size) == (256, 256)  # Table 3: unpadded
    model = make_model("efficientad_s", config.load_profile("quick"), out_channels=8)
    assert model.map_coverage == 1.0
    import torch

    assert model.net.teacher(torch.zeros(1, 3, 65, 113)).shape[-2:] == (17, 29)  # the net is padded too


def test_cores_are_those_the_run_may_use(monkeypatch):
    """``taskset -c 0 make run``: one core, so one grid worker and '1 core' beside the wall time."""
    from lib import grid
    from lib.config import available_cores, cpu_description

    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0})
    assert available_cores() == 1 and "(1 core;" in cpu_description()
    ex = grid.ProcessExecutor()
    assert ex.workers == 1 and ex.threads == 1
