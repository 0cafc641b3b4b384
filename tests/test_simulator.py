import hashlib
import json

import cv2
import numpy as np
import pytest

from lib.acquire import sealant_line as sl
from lib.acquire import underbody as ub
from lib.acquire import views
from lib.acquire.user_videos import probe_video, register_user_videos


def _digest_tree(root):
    out = {}
    sim_outputs = ("videos", "defects", "templates", "passes.csv", "poses.csv")
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).parts[0] in sim_outputs:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_outputs_layout_and_shapes(tiny_line, smoke_profile):
    root, summary = tiny_line
    passes = sl.read_passes(root)
    assert len(passes) == smoke_profile.n_passes
    assert passes.defective.sum() == 3
    assert set(passes[passes.defective == 1].defect_viewpoint) == {"front", "center", "back"}
    cap = cv2.VideoCapture(str(root / passes.video_path.iloc[0]))
    ok, frame = cap.read()
    assert ok and frame.shape[1::-1] == smoke_profile.frame_size
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == passes.n_frames.iloc[0]
    cap.release()
    meta = json.loads((root / "templates" / "templates.json").read_text())
    for view, n_regions in (("front", 4), ("center", 8), ("back", 5)):
        t = views.read_template_set(root, view)
        assert t["template"].shape[1::-1] == smoke_profile.crop_size
        assert t["roi"].shape == t["trajectory"].shape == t["template"].shape[:2]
        # ROI = trajectory + margin: contains it, and is larger
        assert (
            np.all(t["roi"][t["trajectory"] > 0] > 0) and (t["roi"] > 0).sum() > (t["trajectory"] > 0).sum()
        )
        assert sorted(np.unique(t["regions"])) == list(range(1, n_regions + 1))
        assert meta["viewpoints"][view]["n_regions"] == n_regions
    assert summary["timing"]["frames_per_s_one_core"] > 0


def test_same_seed_same_bytes_any_workers(tmp_path, smoke_profile, tiny_line):
    root, _ = tiny_line
    other = tmp_path / "again"
    sl.simulate_line(smoke_profile, other, workers=2, progress=False)
    assert _digest_tree(root) == _digest_tree(other)


def test_other_seed_other_data(tmp_path, smoke_profile):
    a = sl.plan_passes(smoke_profile, seed=1)
    b = sl.plan_passes(smoke_profile, seed=2)
    assert [p.car_seed for p in a] != [p.car_seed for p in b]


def test_every_view_is_visible_at_some_frame(tiny_line, smoke_profile):
    root, _ = tiny_line
    poses = sl.read_poses(root)
    for pid in (0, 1):
        ks = [sl.peak_frame(poses, pid, v, smoke_profile) for v in ("front", "center", "back")]
        # the car moves right to left: the front shows first, then center, then back (Figure 2)
        assert ks[0] < ks[1] < ks[2]


def test_frame_gt_masks_lie_inside_frame_and_on_beads(tiny_line, smoke_profile):
    root, _ = tiny_line
    passes, poses = sl.read_passes(root), sl.read_poses(root)
    for _, row in passes[passes.defective == 1].iterrows():
        crop, gt, k = views.peak_crop(
            root, int(row.pass_id), row.defect_viewpoint, smoke_profile, poses, passes
        )
        assert gt.shape == crop.shape[:2]
        assert gt.any(), f"pass {row.pass_id}: defect not visible at its peak frame"
        full = sl.frame_defect_mask(root, int(row.pass_id), k, poses, passes)
        assert full.sum() >= gt.sum()  # whole-frame mask contains the crop's
        roi = views.read_template_set(root, row.defect_viewpoint)["roi"]
        assert (roi[gt > 0] > 0).mean() > 0.9  # the defect lies on a bead, inside the ROI


@pytest.mark.parametrize("kind", ub.DEFECT_TYPES)
def test_each_defect_type_renders_on_a_bead(kind):
    scale = 0.5
    normal = ub.draw_underbody(5, scale)
    defect = ub.ProcessDefect(
        kind,
        "center_tunnel_l",
        0.5,
        60.0 if kind != "hole" else 14.0,
        {"narrowing": 0.4, "misalignment": 2.5, "bifurcation": 1.5}.get(kind, 0.0),
        "medium",
    )
    bad = ub.draw_underbody(5, scale, defect)
    m = bad.defect_mask > 0
    assert m.any()
    assert not normal.defect_mask.any()
    beads = normal.bead_mask | bad.bead_mask
    assert beads[m].all(), "GT covers only sealant (nominal or defective)"
    # the image changes where the defect is, and nowhere far from it
    diff = np.abs(normal.diffuse.astype(int) - bad.diffuse.astype(int)).max(axis=2) > 3
    near = cv2.dilate(m.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert diff[m].mean() > 0.3
    assert not diff[~near].any()


def test_unknown_defect_type():
    with pytest.raises(ValueError, match="unknown defect type 'crack'"):
        ub.apply_defect(np.zeros((4, 2)), np.ones(4), ub.ProcessDefect("crack", "x", 0.5, 5, 0, "small"))


def test_unwritable_data_root(tmp_path, smoke_profile):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="data root"):
        sl.simulate_line(smoke_profile, blocker / "sub", progress=False)


def test_interrupted_write_leaves_nothing(tmp_path, smoke_profile, monkeypatch):
    """A failure while rendering a video leaves no half-written video behind."""
    plans = sl.plan_passes(smoke_profile)[:1]

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sl.FrameSynth, "render", boom)
    with pytest.raises(RuntimeError):
        sl.render_pass(plans[0], smoke_profile, tmp_path)
    assert not list((tmp_path / "videos").glob("*"))


def test_bad_user_video_and_template(tmp_path, tiny_line):
    root, _ = tiny_line
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video")
    with pytest.raises(OSError, match="junk.mp4"):
        probe_video(junk)
    video = root / "videos" / "pass_0000.mp4"
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((500, 900, 3), np.uint8))
    with pytest.raises(ValueError, match="big.png.*larger than"):
        register_user_videos([video], {"front": big}, tmp_path / "user")


def test_user_videos_register(tmp_path, tiny_line):
    root, _ = tiny_line
    video = root / "videos" / "pass_0000.mp4"
    with pytest.warns(UserWarning, match="no ROI mask"):
        passes = register_user_videos([video], {"front": root / "templates" / "front.png"}, tmp_path / "u")
    assert len(passes) == 1 and (tmp_path / "u" / "templates" / "front.png").is_file()
