"""The results store keeps what models produced, and refuses files it cannot trust, naming them."""

import json

import numpy as np
import pandas as pd
import pytest

from lib import store
from lib.evaluate import evaluate as ev
from lib.models import GaussianBaseline
from lib.models.train import run_cell
from lib.store import Cell, StoreError

CELL = Cell("baseline", "front", True, 1)


def _table(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "split": ["val"] + ["test"] * (n - 1),
            "label": ["normal", "anomalous"] + ["normal"] * (n - 2),
            "score": rng.normal(0, 1, n) * 10.0 ** rng.integers(-8, 8, n),
            "time_ms": rng.random(n) * 100,
        }
    )


def _maps(n=3):
    rng = np.random.default_rng(1)
    maps = (1000.0 + rng.random((n, 8, 8)) * 1e-3).astype(np.float32)  # float16 keeps ~2 values here
    maps[0, 0, 0] = 1e6  # float16 would make this inf
    return maps


def test_roundtrip_is_lossless(tmp_path):
    assert CELL.label == "baseline†" and Cell.from_key(CELL.key) == CELL
    table, maps = _table(), _maps()
    assert not store.is_done(tmp_path, CELL)
    store.write_results(tmp_path, CELL, table, maps, {"note": "x"})
    assert store.is_done(tmp_path, CELL) and store.list_cells(tmp_path) == [CELL]
    back = store.read_results(tmp_path, CELL)
    assert back["maps"].dtype == np.float32 and np.array_equal(back["maps"], maps)
    assert back["table"].score.tolist() == table.score.tolist()  # full float64 precision
    assert back["table"].time_ms.tolist() == table.time_ms.tolist()
    assert back["meta"]["note"] == "x" and back["meta"]["cell"]["model"] == "baseline"
    done = json.loads((store.cell_dir(tmp_path, CELL) / "DONE").read_text())
    assert set(done["files"]) == {"scores.csv", "maps.npz", "meta.json"} and done["n_images"] == 3


def test_write_refuses_inconsistent_input(tmp_path):
    with pytest.raises(ValueError, match="anomaly maps"):
        store.write_results(tmp_path, CELL, _table(), _maps()[:1], {})
    dup = _table()
    dup.loc[2, "image_id"] = "img1"
    with pytest.raises(ValueError, match="img1"):
        store.write_results(tmp_path, CELL, dup, _maps(), {})
    with pytest.raises(FileNotFoundError, match="no finished results"):
        store.read_results(tmp_path, Cell("x", "front", False, 0))


def _written(tmp_path):
    store.write_results(tmp_path, CELL, _table(), _maps(), {})
    return store.cell_dir(tmp_path, CELL)


@pytest.mark.parametrize("name", ["maps.npz", "scores.csv", "meta.json"])
def test_truncated_file_names_file_and_cell(tmp_path, name):
    d = _written(tmp_path)
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=rf"{CELL.key}.*{name}.*truncated"):
        store.read_results(tmp_path, CELL)


@pytest.mark.parametrize("name", ["maps.npz", "scores.csv", "meta.json"])
def test_missing_or_altered_file(tmp_path, name):
    d = _written(tmp_path)
    data = bytearray((d / name).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    (d / name).write_bytes(bytes(data))
    with pytest.raises(StoreError, match=rf"{name}.*altered"):
        store.read_results(tmp_path, CELL)
    (d / name).unlink()
    with pytest.raises(StoreError, match=rf"{CELL.key}.*{name}: missing"):
        store.read_results(tmp_path, CELL)


def test_old_format_done_is_refused(tmp_path):
    d = _written(tmp_path)
    (d / "DONE").write_text("ok\n")
    with pytest.raises(StoreError, match="DONE.*older version"):
        store.read_results(tmp_path, CELL)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_map_or_score_names_cell_and_image(tmp_path, bad):
    maps = _maps()
    maps[2, 3, 3] = bad
    store.write_results(tmp_path, CELL, _table(), maps, {})
    with pytest.raises(StoreError, match=rf"{CELL.key}.*maps.npz.*'img2'"):
        store.read_results(tmp_path, CELL)
    table = _table()
    table.loc[1, "score"] = bad
    store.write_results(tmp_path, CELL, table, _maps(), {})
    with pytest.raises(StoreError, match=rf"{CELL.key}.*scores.csv.*'img1'"):
        store.read_results(tmp_path, CELL)


def test_evaluate_store_reports_broken_cells_and_evaluates_the_others(built, tmp_path):
    root, *_, manifest = built
    results = tmp_path / "results"
    good = Cell("baseline", "front", False, 0)
    run_cell(GaussianBaseline(input_size=(106, 60)), root, manifest, good, results, False)
    meta = store.read_results(results, good)["meta"]
    assert len(meta["manifest_sha256"]) == 64 and len(meta["model_config_sha256"]) == 64
    # a cell that lacks one of the manifest's images, and one whose maps are truncated
    res = store.read_results(results, good)
    lacking = Cell("baseline", "front", False, 1)
    store.write_results(results, lacking, res["table"].iloc[1:], res["maps"][1:], {})
    truncated = Cell("baseline", "front", False, 2)
    d = store.write_results(results, truncated, res["table"], res["maps"], {})
    (d / "maps.npz").write_bytes((d / "maps.npz").read_bytes()[:100])
    nan_cell = Cell("baseline", "front", False, 3)
    maps = res["maps"].copy()
    maps[-1, 0, 0] = np.nan
    store.write_results(results, nan_cell, res["table"], maps, {})
    metrics, images, broken, _ = ev.evaluate_store(root, results, manifest, progress=False, n_resamples=5)
    assert set(metrics.seed) == {0} and set(images.seed) == {0}
    errors = dict(zip(broken.cell, broken.error, strict=True))
    assert set(errors) == {lacking.key, truncated.key, nan_cell.key}
    assert "lacks 1 of the manifest's front val/test images" in errors[lacking.key]
    assert res["table"].image_id.iloc[0] in errors[lacking.key]
    assert "maps.npz" in errors[truncated.key] and "truncated" in errors[truncated.key]
    assert res["table"].image_id.iloc[-1] in errors[nan_cell.key]
