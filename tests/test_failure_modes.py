"""What happens when things go wrong: each probe feeds bad input and checks the clear error or the recovery."""

import json
import os
import shutil
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import baseline_cell_fn, toy_images

import lib
from lib import grid, store
from lib.acquire import sealant_line as sl
from lib.acquire.user_videos import register_user_videos, underbody_ids
from lib.dataset import manifest as mf
from lib.extract.template_matching import VideoDecodeError, extract_crops
from lib.fileio import DataRootBusy, data_root_lock, write_text
from lib.identity import NEW, cell_identity, stale_reason
from lib.models import AnomalyModel, GaussianBaseline
from lib.models.base import CheckpointError
from lib.models.train import run_cell, train_grid
from lib.store import Cell


# ----------------------------------------------------------------------------- stale cells
def test_done_records_identity_and_any_change_makes_the_cell_stale(built, tmp_path, smoke_profile):
    root, *_, manifest = built
    results = tmp_path / "results"
    cell = Cell("baseline", "front", True, 0)
    model = GaussianBaseline(input_size=(106, 60))
    run_cell(model, root, manifest, cell, results, False)
    ident = cell_identity(cell, model.config, root, manifest)
    assert stale_reason(results, cell, ident) is None
    assert stale_reason(results, Cell("baseline", "back", True, 0), ident) == NEW == "new (no results yet)"
    # a review decision drops a row of this viewpoint
    fewer = manifest.drop(manifest.index[(manifest.viewpoint == "front") & (manifest.split == "test")][:1])
    assert (
        stale_reason(results, cell, cell_identity(cell, model.config, root, fewer)) == "manifest rows changed"
    )
    other = GaussianBaseline(input_size=(106, 60), smooth_sigma=3.0)
    assert (
        stale_reason(results, cell, cell_identity(cell, other.config, root, manifest))
        == "model config changed"
    )
    assert stale_reason(results, cell, {**ident, "package_version": "9.9"}).startswith(
        "package version changed"
    )
    # a new ROI margin rewrites the ROI masks: masked cells are stale, raw ones are not
    roi_rel = manifest.roi_path[manifest.viewpoint == "front"].iloc[0]
    copy = tmp_path / "root"
    shutil.copytree(root / "roi", copy / "roi")
    roi = cv2.imread(str(copy / roi_rel), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(copy / roi_rel), cv2.dilate(roi, np.ones((5, 5), np.uint8)))
    assert (
        stale_reason(results, cell, cell_identity(cell, model.config, copy, manifest)) == "ROI masks changed"
    )
    raw = Cell("baseline", "front", False, 0)
    assert cell_identity(raw, model.config, copy, manifest) == cell_identity(
        raw, model.config, root, manifest
    )


def test_grid_identity_matches_what_the_training_path_records(built, tmp_path, smoke_profile):
    root, *_, manifest = built
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("results", "videos"))
    train_grid("baseline", smoke_profile, data, manifest, ["front"], ["masked"], [0], progress=False)
    cell = Cell("baseline", "front", True, 0)
    expected = grid.expected_identities([cell], smoke_profile, data, manifest)
    assert stale_reason(data / "results", cell, expected[cell]) is None


def test_an_interrupted_rerun_leaves_the_cell_not_done(built, tmp_path):
    root, *_, manifest = built
    cell = Cell("baseline", "front", False, 0)
    run_cell(GaussianBaseline(input_size=(106, 60)), root, manifest, cell, tmp_path, False)
    assert store.is_done(tmp_path, cell)

    class Interrupted(GaussianBaseline):
        def predict(self, images):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(Interrupted(input_size=(106, 60)), root, manifest, cell, tmp_path, False)
    assert not store.is_done(tmp_path, cell)  # the old DONE does not vouch for a half-new cell


# ----------------------------------------------------------------------------- crash isolation
def _grid(cells, data_root, runs, executor, identities):
    return grid.run_grid(cells, "smoke", data_root, runs, runs, executor, False, baseline_cell_fn, identities)


def test_killed_worker_fails_its_cell_only_and_the_rerun_matches_an_uninterrupted_run(built, tmp_path):
    root, *_, manifest = built
    cells = [Cell("baseline", v, False, 0) for v in ("front", "center", "back")]
    config = GaussianBaseline(input_size=(106, 60)).config
    idents = {c: cell_identity(c, config, root, manifest) for c in cells}
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    for d in (clean, faulty):
        shutil.copytree(root, d, ignore=shutil.ignore_patterns("results", "videos"))
    ex = grid.make_executor("process", workers=2)
    out = _grid(cells, clean, clean / "runs", ex, idents)
    assert [r["error"] for r in out["results"]] == [None] * 3
    (faulty / "runs").mkdir()
    (faulty / "runs" / "kill-baseline-center").touch()
    out = _grid(cells, faulty, faulty / "runs", ex, idents)
    errors = {r["cell"]: r["error"] for r in out["results"]}
    assert "killed by signal SIGKILL" in errors["baseline/center/raw/seed0"]
    assert errors["baseline/front/raw/seed0"] is None and errors["baseline/back/raw/seed0"] is None
    failed = faulty / "runs" / "cells" / "baseline_center_raw_seed0" / "FAILED.json"
    record = json.loads(failed.read_text())
    assert "SIGKILL" in record["error"] and "about to be killed" in open(record["log"]).read()
    assert not store.is_done(faulty / "results", cells[1])
    again = _grid(cells, faulty, faulty / "runs", ex, idents)
    assert [r["cell"] for r in again["results"]] == ["baseline/center/raw/seed0"]
    assert again["results"][0]["error"] is None and len(again["skipped"]) == 2
    assert not failed.exists()
    for c in cells:
        a, b = store.read_results(clean / "results", c), store.read_results(faulty / "results", c)
        assert np.array_equal(a["maps"], b["maps"])
        assert a["table"].drop(columns="time_ms").equals(b["table"].drop(columns="time_ms"))


def test_a_cell_function_that_raises_fails_only_that_cell(tmp_path):
    def boom(cell, *args):
        if cell.viewpoint == "center":
            raise MemoryError("out of memory")
        return grid.dry_run_cell(cell, *args)

    cells = [Cell("baseline", v, False, 0) for v in ("front", "center")]
    out = grid.run_grid(cells, "smoke", tmp_path / "d", tmp_path / "r", tmp_path, None, False, boom)
    errors = {r["cell"]: r["error"] for r in out["results"]}
    assert errors == {
        "baseline/front/raw/seed0": None,
        "baseline/center/raw/seed0": "MemoryError: out of memory",
    }


# ----------------------------------------------------------------------------- extraction
def test_video_corrupted_in_the_middle_names_file_and_frame(tiny_line, tmp_path):
    root, _ = tiny_line
    passes = sl.read_passes(root)
    row = passes.iloc[1].copy()
    data = bytearray((root / row.video_path).read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + n // 6] = bytes(n // 6)
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    row["video_path"] = str(bad)
    plan = row.to_frame().T.reset_index(drop=True)
    with pytest.raises(
        VideoDecodeError, match=rf"corrupt.mp4: decoding stopped at frame \d+ of {row.n_frames}"
    ):
        extract_crops(root, plan, 0.5, lambda r: {"front": 1}, progress=False)


# ----------------------------------------------------------------------------- manifest
def test_manifest_refuses_unknown_viewpoints_unless_declared(built, tmp_path):
    root, *_, manifest = built
    bad = manifest.copy()
    bad.loc[2, "viewpoint"] = "rear"
    with pytest.raises(mf.ManifestError, match=r"row 3, column 'viewpoint': unknown viewpoint 'rear'"):
        mf.validate(bad, "m.csv")
    path = tmp_path / "data_manifest.csv"
    mf.write_csv(path, bad)
    with pytest.raises(mf.ManifestError, match="unknown viewpoint 'rear'"):
        mf.read_manifest(path)
    mf.declare_viewpoints(path, ["front", "center", "back", "rear"])
    assert (mf.read_manifest(path).viewpoint == "rear").sum() == 1


@pytest.mark.parametrize("evil", ["../outside.png", "/etc/passwd", "frames/../../x.png"])
def test_manifest_paths_must_stay_inside_the_data_root(built, evil):
    root, *_, manifest = built
    bad = manifest.copy()
    bad.loc[0, "image_path"] = evil
    with pytest.raises(mf.ManifestError, match=r"row 1, column 'image_path': path .* leaves the data root"):
        mf.validate(bad, "m.csv")


def test_manifest_symlink_out_of_the_data_root(built, tmp_path):
    root, *_, manifest = built
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("results", "videos"))
    outside = tmp_path / "outside.png"
    shutil.copy(data / manifest.image_path.iloc[0], outside)
    (data / "link.png").symlink_to(outside)
    bad = manifest.copy()
    bad.loc[0, "image_path"] = "link.png"
    with pytest.raises(mf.ManifestError, match="outside the data root"):
        mf.validate(bad, data / "m.csv", data_root=data, check_files=True)


def test_manifest_roi_size_and_sha256(built, tmp_path):
    root, *_, manifest = built
    data = tmp_path / "data"
    shutil.copytree(root, data, ignore=shutil.ignore_patterns("results", "videos"))
    mf.write_csv(data / "data_manifest.csv", manifest)
    assert len(mf.read_manifest(data / "data_manifest.csv", verify=True)) == len(manifest)
    row = manifest[manifest.roi_path != ""].iloc[0]
    roi = cv2.imread(str(data / row.roi_path), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(data / row.roi_path), roi[:-1])
    with pytest.raises(mf.ManifestError, match=r"column 'roi_path': ROI mask size \(\d+, \d+\) differs"):
        mf.read_manifest(data / "data_manifest.csv", check_files=True)
    cv2.imwrite(str(data / row.roi_path), roi)
    img = data / manifest.image_path.iloc[4]
    im = cv2.imread(str(img))
    im[0, 0] = 255 - im[0, 0]
    cv2.imwrite(str(img), im)
    mf.read_manifest(data / "data_manifest.csv", check_files=True)  # files and sizes fine
    with pytest.raises(mf.ManifestError, match=r"row 5, column 'sha256': .* has SHA-256"):
        mf.read_manifest(data / "data_manifest.csv", verify=True)
    cli = [sys.executable, "-m", "lib", "check-data", "--data-root", str(data)]
    proc = subprocess.run(cli, capture_output=True, text=True)
    assert proc.returncode == 1 and "row 5, column 'sha256'" in proc.stderr
    proc = subprocess.run(cli + ["--no-verify"], capture_output=True, text=True)
    assert proc.returncode == 0 and f"{len(manifest)} rows" in proc.stdout


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture
def checkpoint(tmp_path):
    model = GaussianBaseline(input_size=(64, 48))
    model.fit(toy_images(4))
    return model.save(tmp_path / "ckpt")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["config"].update(colour="red"), "unknown config key 'colour'"),
        (lambda c: c["config"].pop("min_std"), "config key 'min_std' is missing"),
        (
            lambda c: c["config"].update(smooth_sigma="wide"),
            "config key 'smooth_sigma': expected float, got str",
        ),
        (lambda c: c["config"].update(input_size=64), "config key 'input_size': expected tuple, got int"),
        (lambda c: c["config"].update(input_size=[32, 24]), r"tensor 'mean' has shape \(48, 64, 3\)"),
        (lambda c: c.update(model="nope"), "unknown model 'nope'"),
    ],
)
def test_bad_checkpoint_config_names_file_and_key(checkpoint, edit, message):
    cfg = json.loads((checkpoint / "config.json").read_text())
    edit(cfg)
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message) as info:
        AnomalyModel.load(checkpoint)
    assert str(checkpoint) in str(info.value)


def test_bad_checkpoint_weights(checkpoint):
    from safetensors.numpy import load_file, save_file

    state = load_file(str(checkpoint / "weights.safetensors"))
    save_file({"mean": state["mean"]}, str(checkpoint / "weights.safetensors"))
    with pytest.raises(CheckpointError, match=r"weights.safetensors: tensor 'std' is missing"):
        AnomalyModel.load(checkpoint)
    (checkpoint / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        AnomalyModel.load(checkpoint)
    (checkpoint / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        AnomalyModel.load(checkpoint)


# ----------------------------------------------------------------------------- user videos
def test_user_video_lists_and_ids(tmp_path):
    with pytest.raises(ValueError, match="empty list"):
        register_user_videos([], {"front": "t.png"}, tmp_path)
    with pytest.raises(TypeError, match="list of video paths"):
        register_user_videos(str(tmp_path), {"front": "t.png"}, tmp_path)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "pass.mp4").touch()
    assert underbody_ids([tmp_path / "a/pass.mp4", tmp_path / "b/pass.mp4"]) == ["a__pass", "b__pass"]
    (tmp_path / "a" / "pass.avi").touch()
    with pytest.raises(ValueError, match="both give underbody id 'pass'"):
        underbody_ids([tmp_path / "a/pass.mp4", tmp_path / "a/pass.avi"])
    with pytest.raises(ValueError, match="not inside videos_root"):
        underbody_ids([tmp_path / "a/pass.mp4"], videos_root=tmp_path / "b")


# ----------------------------------------------------------------------------- files and locks
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_text(tmp_path / "x.txt", "hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_second_run_on_the_same_data_root_is_refused(tmp_path):
    with data_root_lock(tmp_path, "first run"):
        with pytest.raises(DataRootBusy, match=rf"in use by pid {os.getpid()} .*first run"):
            with data_root_lock(tmp_path, "second run"):
                pass
    with data_root_lock(tmp_path, "third run"):  # released after the first
        pass


def test_package_version_matches_pyproject():
    text = lib.__file__.rsplit("/lib/", 1)[0] + "/pyproject.toml"
    assert f'version = "{lib.__version__}"' in open(text).read()
