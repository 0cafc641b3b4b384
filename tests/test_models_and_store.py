import numpy as np
import pytest
from helpers import toy_images

from lib.evaluate import bootstrap as B
from lib.evaluate import evaluate as ev
from lib.models import AnomalyModel, GaussianBaseline
from lib.models.train import run_cell, timed_predict
from lib.store import Cell


def test_baseline_scores_defect_above_normal_and_localises():
    model = GaussianBaseline(input_size=(64, 48))
    model.fit(toy_images(20, 0))
    s_norm, _ = model.predict(toy_images(5, 1))
    s_bad, maps = model.predict(toy_images(1, 2, defect=True))
    assert s_bad[0] > s_norm.max()
    y, x = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert 20 <= y < 26 and 30 <= x < 36
    assert maps.shape == (1, 48, 64) and maps.dtype == np.float32


def test_save_load_identical(tmp_path):
    model = GaussianBaseline(input_size=(64, 48), smooth_sigma=1.5)
    model.fit(toy_images(10))
    model.save(tmp_path / "ckpt")
    assert (
        not list((tmp_path / "ckpt").glob("*.pkl")) and (tmp_path / "ckpt" / "weights.safetensors").is_file()
    )
    again = AnomalyModel.load(tmp_path / "ckpt")
    assert isinstance(again, GaussianBaseline) and again.config == model.config
    x = toy_images(3, 5, defect=True)
    a, b = model.predict(x), again.predict(x)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_model_errors(tmp_path):
    with pytest.raises(RuntimeError, match="fit"):
        GaussianBaseline().predict(toy_images(1))
    m = GaussianBaseline(input_size=(64, 48))
    m.fit(toy_images(4))
    with pytest.raises(ValueError, match="expects"):
        m.predict(np.zeros((1, 10, 10, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="checkpoint file missing"):
        AnomalyModel.load(tmp_path)


def test_timed_predict_excludes_warmup():
    m = GaussianBaseline(input_size=(64, 48))
    m.fit(toy_images(4))
    scores, maps, times = timed_predict(m, toy_images(6, 1), warmup=2)
    assert len(scores) == len(times) == 6 and (times > 0).all()


def test_cell_to_tables_on_smoke_dataset(built, tmp_path):
    root, *_, manifest = built
    results = tmp_path / "results"
    for masked in (False, True):
        run_cell(
            GaussianBaseline(input_size=(106, 60)),
            root,
            manifest,
            Cell("baseline", "front", masked, 0),
            results,
            False,
        )
    metrics, images, broken, reps = ev.evaluate_store(root, results, manifest, progress=False, n_resamples=40)
    assert broken.empty
    assert reps.columns[-1] == "b39" and set(reps.subset) <= {"test", "test-real"}
    test_reps = reps[reps.subset == "test"]
    assert len(test_reps) == 2 * len(B.BOOTSTRAP_METRICS)  # 2 cells x 5 metrics
    # per-image pixel counts at the oracle tau add up to the metrics table's pixel counts
    px_rows = metrics[(metrics.subset == "test") & (metrics.level == "pixel") & (metrics.policy == "oracle")]
    for r in px_rows.itertuples():
        mine = images[(images.masked == r.masked) & (images.seed == r.seed)]
        assert (mine.tp_px.sum(), mine.fp_px.sum(), mine.fn_px.sum()) == (r.tp, r.fp, r.fn)
    iv = ev.intervals(metrics, reps)
    assert (iv.ci_low <= iv.ci_high).all() and iv.n_seeds.eq(1).all()
    head = ev.headline_table(iv)
    assert set(head.label) == {"baseline", "baseline†"}
    assert list(head.columns[1:]) == [
        f"{level} {m} front"
        for level, m in (("image", "AUROC"), ("image", "AU-PR"), ("pixel", "AUROC"), ("pixel", "AUPRO"))
    ]
    assert head["image AUROC front"].str.match(r"^\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]$").all()
    assert set(metrics.policy) == {"oracle", "val-calibrated"}
    assert set(metrics.level) == {"image", "pixel"}
    assert {"test", "val", "test-real", "test-synthetic"} >= set(metrics.subset) >= {"test", "val"}
    px = metrics[metrics.level == "pixel"]
    assert px.aupro.between(0, 1).all() and px.auroc.between(0, 1).all()
    assert (metrics.median_ms > 0).all()
    assert set(images.model) == {"baseline"} and images.masked.nunique() == 2
    table = ev.summary_table(metrics, "test", "image", "oracle", ["auroc", "f1"])
    assert set(table.label) == {"baseline", "baseline†"}
    for policy in ("oracle", "val-calibrated"):
        fn = ev.fn_by_size(images, policy)
        assert list(fn.columns[-4:]) == ["small", "medium", "large", "total"] and set(fn.threshold) == {
            policy
        }
        share = ev.image_fp_share(images, policy)
        assert len(share) == 2 and share.fp_share.between(0, 1).all()
