"""The plant's scene: manual sealant at the car model's joints, rare per-car deviations, one knob,
photometric shifts off by default, and the calibration's mechanism."""

import dataclasses
import json

import cv2
import numpy as np
import pytest

from lib.acquire import scene, views
from lib.acquire import sealant_line as sl
from lib.acquire import underbody as ub
from lib.config import load_profile
from lib.evaluate.claims import calibration

SCALE = 0.25
CARS = range(100, 300)


def _nuisance(n):
    return scene.SceneConfig(nuisance=n)


def test_manual_sites_are_the_models_not_the_cars():
    """At nuisance 0 every car of a model carries the same manual sealant; another model's differs."""
    first = ub.model_layout(7, SCALE)
    ub._model_layout.cache_clear()  # drawn anew from the model's seed: the same layout, not a cached one
    assert ub.model_layout(7, SCALE) == first
    a = ub.draw_underbody(5, SCALE, scene=_nuisance(0.0)).manual_mask
    b = ub.draw_underbody(6, SCALE, scene=_nuisance(0.0)).manual_mask
    other = ub.draw_underbody(5, SCALE, model_seed=8, scene=_nuisance(0.0)).manual_mask
    assert a.sum() > 200
    assert np.array_equal(a, b)
    assert (a & other).sum() < 0.2 * a.sum()


def test_manual_sites_vary_per_car_around_the_same_joints():
    """At the default nuisance cars differ at the sites, but the sealant stays where the model puts it."""
    a, b = (ub.draw_underbody(s, SCALE).manual_mask for s in (5, 6))
    nominal = ub.draw_underbody(5, SCALE, scene=_nuisance(0.0)).manual_mask
    assert not np.array_equal(a, b)
    near = cv2.dilate(nominal.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    for m in (a, b):
        assert (m & near).sum() > 0.7 * m.sum()  # mostly at the model's sites (strays are rare)


def test_manual_sites_lie_outside_the_robot_roi_in_every_view():
    layout = ub.model_layout(7, 0.5)
    assert {s.viewpoint for s in layout["sites"]} == set(ub.SECTION_X0)
    assert all(sum(s.viewpoint == v for s in layout["sites"]) == scene.SITES_PER_VIEW for v in ub.SECTION_X0)
    d = ub.draw_underbody(5, 0.5, scene=_nuisance(0.0))
    roi = ub.trajectory_mask(ub.model_seams(), 0.5, d.manual_mask.shape, sl.DEFAULT_ROI_MARGIN) > 0
    assert not (d.manual_mask & roi).any()  # the masking study's ROI never holds operators' sealant


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0])
def test_per_car_variation_stays_within_its_stated_ranges(n):
    sites = ub.model_layout(7, SCALE)["sites"]
    var = {k: v[2] * n for k, v in scene.SITE_VARIATION.items()}
    kept, dx, total = [], [], 0
    for car in CARS:
        mine = ub.car_sites(car, sites, n)
        total += len(sites)
        for s in mine:
            base = _base_of(s, sites)
            assert abs(s.width / base.width - 1) <= var["amount"] + 1e-9
            assert abs(s.length / base.length - 1) <= var["extent"] + 1e-9
            assert abs(s.thickness - 1) <= var["thickness"] + 1e-9
            dx.append(s.x - base.x)
        kept.append(len(mine))
    skipped = 1 - sum(kept) / total
    p = var["skipped"]
    assert abs(skipped - p) <= 4 * np.sqrt(p * (1 - p) / total) + 1e-9
    assert np.std(dx) == pytest.approx(var["offset"], rel=0.15)


def _base_of(site, sites):
    """The model site a car's site came from (same view and kind, nearest)."""
    return min(
        (b for b in sites if b.kind == site.kind and b.viewpoint == site.viewpoint),
        key=lambda b: (b.x - site.x) ** 2 + (b.y - site.y) ** 2,
    )


def test_no_variation_at_nuisance_zero_and_it_scales_linearly():
    sites = ub.model_layout(7, SCALE)["sites"]
    assert ub.car_sites(11, sites, 0.0) == list(sites)
    compared = 0
    for car in (11, 12, 13):  # same draws, twice the deviation (common random numbers)
        one = {_base_of(a, sites): a for a in ub.car_sites(car, sites, 1.0)}
        two = {_base_of(b, sites): b for b in ub.car_sites(car, sites, 2.0)}
        assert set(two) <= set(one)  # a site skipped at nuisance 1 is skipped at 2 as well
        for base, b in two.items():
            a = one[base]
            assert b.x - base.x == pytest.approx(2 * (a.x - base.x))
            assert b.angle - base.angle == pytest.approx(2 * (a.angle - base.angle))
            assert b.width / base.width - 1 == pytest.approx(2 * (a.width / base.width - 1))
            compared += 1
    assert compared >= 30


def test_stray_marks_rate():
    keepout = ub.trajectory_mask(ub.model_seams(), SCALE, (150, 712), extra_radius=22.0) > 0
    for n in (0.0, 1.0, 4.0):
        counts = [len(ub.stray_marks(c, n, keepout, SCALE)) for c in CARS]
        mean = scene.STRAY_MEAN * n
        sd = np.sqrt(scene.STRAY_CANDIDATES * (mean / 8) * (1 - mean / 8) / len(counts))
        assert abs(np.mean(counts) - mean) <= 4 * sd + 1e-9
    for c in CARS:
        for s in ub.stray_marks(c, 4.0, keepout, SCALE):
            assert not keepout[int(s.y * SCALE), int(s.x * SCALE)]


def test_holes_and_clips_follow_the_model_with_rare_deviations():
    layout = ub.model_layout(7, SCALE)
    model_states = [h[3] for h in layout["holes"]]
    assert len(layout["holes"]) == 34 and set(model_states) <= set(ub.HOLE_STATES)
    s = scene.SceneConfig()
    changed_holes = changed_clips = 0
    for car in CARS:
        states, clips = ub.car_fixtures(car, layout, s)
        changed_holes += sum(a != b for a, b in zip(states, model_states, strict=True))
        assert all(c <= m for c, m in zip(clips, layout["clips"], strict=True))  # only missing, never added
        changed_clips += sum(m and not c for c, m in zip(clips, layout["clips"], strict=True))
    n_holes = len(CARS) * 34
    assert abs(changed_holes / n_holes - s.hole_deviation_rate) < 4 * np.sqrt(0.02 / n_holes)
    n_clips = len(CARS) * sum(layout["clips"])
    assert abs(changed_clips / n_clips - s.clip_missing_rate) < 4 * np.sqrt(0.03 / n_clips)
    # a car with no deviations is the model
    none = dataclasses.replace(s, hole_deviation_rate=0.0, clip_missing_rate=0.0)
    assert ub.car_fixtures(5, layout, none) == (model_states, list(layout["clips"]))


def test_photometric_shifts_off_by_default_and_independent():
    prof = load_profile("smoke")
    base = sl.plan_passes(prof)
    for p in base:
        assert abs(p.gain - 1) <= 0.03 + 1e-12 and abs(p.gain_drift) <= 0.03
        assert p.gamma == 1.0 and p.colour_temp == 0.0 and p.glare[0] == 0.0 and p.shadow[0] == 0.0
    lit = prof.with_overrides(scene={"glare": 0.8, "shadow": 0.5, "colour_temperature": 0.07})
    shifted = sl.plan_passes(lit)
    for a, b in zip(base, shifted, strict=True):  # only the photometric fields change
        assert (a.car_seed, a.speed, a.pose_dy, a.pose_angle, a.noise_sigma, a.gain) == (
            b.car_seed,
            b.speed,
            b.pose_dy,
            b.pose_angle,
            b.noise_sigma,
            b.gain,
        )
        assert 0.4 <= b.glare[0] <= 0.8 and 0.25 <= b.shadow[0] <= 0.5 and abs(b.colour_temp) <= 0.07


def test_shadow_and_glare_change_the_frame_where_they_fall():
    prof = load_profile("smoke").with_overrides(scene={"shadow": 0.8, "glare": 1.0})
    plan = dataclasses.replace(sl.plan_passes(prof)[0], shadow=(0.8, 0.25), glare=(1.0, 0.75, 0.5))
    flat = dataclasses.replace(plan, shadow=(0.0, 0.25), glare=(0.0, 0.75, 0.5))
    synth = sl.FrameSynth(prof.frame_size, prof.seed)
    drawing = ub.draw_underbody(plan.car_seed, prof.scale)
    k = 40
    a = dict((i, f) for i, f, _ in sl.pass_frames(plan, prof, synth, drawing, wanted={k}))[k].astype(float)
    b = dict((i, f) for i, f, _ in sl.pass_frames(flat, prof, synth, drawing, wanted={k}))[k].astype(float)
    w = a.shape[1]
    assert a[:, int(0.2 * w) : int(0.3 * w)].mean() < 0.7 * b[:, int(0.2 * w) : int(0.3 * w)].mean()
    assert a[:, int(0.72 * w) : int(0.78 * w)].mean() > b[:, int(0.72 * w) : int(0.78 * w)].mean() + 10


def test_scene_table_is_validated_naming_the_profile():
    prof = load_profile("smoke")
    with pytest.raises(ValueError, match=r"profile 'smoke' \[scene\].*unknown scene field.*'fog'"):
        prof.with_overrides(scene={"fog": 1.0})
    with pytest.raises(ValueError, match=r"profile 'smoke' \[scene\].*nuisance must lie in"):
        prof.with_overrides(scene={"nuisance": -1})
    with pytest.raises(ValueError, match="glare must lie in"):
        scene.SceneConfig(glare=2.0)


def test_variation_table_lists_every_knob_scaled():
    t = scene.variation_table(scene.SceneConfig(nuisance=2.0))
    assert set(scene.SITE_VARIATION) <= set(t.what)
    row = t[t.what == "offset"].iloc[0]
    assert "8" in row["rate or range"]  # 4 px at nuisance 1, doubled
    assert "mean 1 per car" in t[t.what == "stray sealant marks"].iloc[0]["rate or range"]


def test_a_root_of_another_scene_is_rendered_anew(tmp_path, monkeypatch):
    prof = load_profile("smoke")
    calls = []
    monkeypatch.setattr(sl, "simulate_line", lambda p, root, **k: calls.append(p.scene) or {})
    meta = {"profile": "smoke", "seed": 0, "scene": prof.scene_config.identity()}
    (tmp_path / "simulation.json").write_text(json.dumps(meta))
    assert views.load_or_simulate(prof, tmp_path)["reused"] is True
    assert not calls
    other = prof.with_overrides(scene={"nuisance": 2.0})
    views.load_or_simulate(other, tmp_path)
    assert calls == [{"nuisance": 2.0}]
    meta.pop("scene")  # rendered by the simulator before scenes were recorded
    (tmp_path / "simulation.json").write_text(json.dumps(meta))
    views.load_or_simulate(prof, tmp_path)
    assert len(calls) == 2


def test_calibration_is_deterministic_at_the_default(tmp_path, smoke_profile):
    """The mechanism at smoke size (not the band: smoke's validation split has a handful of images):
    the default's raw PatchCore validation AUROC per view, twice from scratch, identical."""
    a = calibration.calibration_point(smoke_profile, scene.CALIBRATED_NUISANCE, tmp_path / "a", workers=1)
    b = calibration.calibration_point(smoke_profile, scene.CALIBRATED_NUISANCE, tmp_path / "b", workers=2)
    keys = [f"val_auroc_{v}" for v in ("front", "center", "back", "mean")]
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert all(0.0 <= a[k] <= 1.0 for k in keys)
    same = sorted(
        p.name for p in (tmp_path / "a" / f"nuisance_{scene.CALIBRATED_NUISANCE:g}/data/videos").iterdir()
    )
    for name in same[:3]:
        pa = tmp_path / "a" / f"nuisance_{scene.CALIBRATED_NUISANCE:g}/data/videos" / name
        pb = tmp_path / "b" / f"nuisance_{scene.CALIBRATED_NUISANCE:g}/data/videos" / name
        assert pa.read_bytes() == pb.read_bytes()


def test_choose_is_the_declared_rule():
    pts = [
        {"nuisance": 0.0, "val_auroc_mean": 0.868},  # the anchor: never the default
        {"nuisance": 1.0, "val_auroc_mean": 0.875},
        {"nuisance": 2.0, "val_auroc_mean": 0.85},
    ]
    assert calibration.choose(pts)["nuisance"] == 1.0
    assert calibration.choose(pts + [{"nuisance": 0.5, "val_auroc_mean": 0.875}])["nuisance"] == 0.5  # tie
    assert calibration.choose(pts, target=0.5)["nuisance"] == 2.0
    with pytest.raises(ValueError, match="admissible"):
        calibration.choose(pts[:1])


def test_committed_calibration_curve_matches_the_default():
    cal = scene.read_calibration()
    assert cal["chosen_nuisance"] == scene.CALIBRATED_NUISANCE
    assert cal["profile"] == "quick"
    chosen = next(p for p in cal["points"] if p["nuisance"] == cal["chosen_nuisance"])
    assert chosen == calibration.choose(cal["points"])
    lo, hi = calibration.ACCEPT_BAND
    assert lo <= chosen["val_auroc_mean"] <= hi


def test_realism_section_helpers(smoke_profile):
    from lib.acquire import realism

    t = realism.realism_table()
    assert list(t.aspect) == [
        "perforations",
        "manual sealant patterns",
        "structural characteristics",
        "background noise",
        "conveyor motion",
        "one camera",
    ]
    crops = realism.view_crops(12, scale=smoke_profile.scale)
    assert {v: c.shape[1::-1] for v, c in crops.items()} == dict.fromkeys(crops, smoke_profile.crop_size)
    strip = realism.site_strip(range(3), site=1, scale=0.25, half=40)
    assert [t for _, t in strip] == ["car 0", "car 1", "car 2"]
    assert all(p.shape == (20, 20, 3) for p, _ in strip)
    assert not np.array_equal(strip[0][0], strip[1][0])  # the hand varies from car to car
    with pytest.raises(ValueError, match="site must lie in"):
        realism.site_strip([1], site=99)


def test_calibration_curve_figure_marks_the_default():
    from lib import plots

    cal = {
        "points": [
            {
                "nuisance": n,
                "val_auroc_front": a,
                "val_auroc_center": a,
                "val_auroc_back": a,
                "val_auroc_mean": a,
            }
            for n, a in ((0.0, 0.95), (1.0, 0.87), (2.0, 0.8))
        ],
        "accept_band": [0.8, 0.92],
        "target": 0.868,
        "chosen_nuisance": 1.0,
        "profile": "quick",
        "cpu": "test",
    }
    fig = plots.calibration_curve(cal)
    ax = fig.axes[0]
    assert [ln.get_xdata()[0] for ln in ax.lines if ln.get_label().startswith("default")] == [1.0]
    mean = next(ln for ln in ax.lines if ln.get_label() == "mean over views")
    assert list(mean.get_ydata()) == [0.95, 0.87, 0.8]


def test_run_check_reads_raw_patchcore_validation_only():
    import pandas as pd

    rows = []
    for masked in (False, True):
        for view, a in (("front", 0.9), ("center", 0.8), ("back", 0.85)):
            for subset in ("val", "test"):
                rows.append(
                    {
                        "model": "patchcore",
                        "masked": masked,
                        "seed": 0,
                        "viewpoint": view,
                        "subset": subset,
                        "level": "image",
                        "policy": "oracle",
                        "auroc": a if (subset == "val" and not masked) else 0.1,
                    }
                )
    check = calibration.run_check(pd.DataFrame(rows))
    assert check["mean"] == pytest.approx(0.85) and check["in_band"]
    assert (check["front"], check["center"], check["back"]) == (0.9, 0.8, 0.85)
    with pytest.raises(ValueError, match="needs all of"):
        calibration.run_check(pd.DataFrame(rows[2:]))
