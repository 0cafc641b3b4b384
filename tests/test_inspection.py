"""The inspection loop: stream rendering, pass segmentation, bundle, inspect, fusion, alerts, MQTT."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from lib.acquire import stream as S
from lib.acquire.underbody import DEFECT_TYPES
from lib.config import VIEWPOINTS
from lib.extract.template_matching import Match
from lib.inspection import evaluate as ie
from lib.inspection.alerts import AlertConfig, AlertMonitor, load_alert_config
from lib.inspection.bundle import BundleError, make_bundle, seam_labels, verify_bundle
from lib.inspection.inspector import StreamError, decide, fuse, locate, run_inspection
from lib.inspection.segment import PassSegmenter
from lib.store import Cell

N_CARS = 5
DRIFT = S.DriftEpisode(onset=1, cars=3)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def stream(tmp_path_factory, smoke_profile):
    out = tmp_path_factory.mktemp("stream")
    cars = S.render_stream(
        smoke_profile, out, N_CARS, drift=DRIFT, defect_rate=0.0, chunk_frames=70, progress=False
    )
    return out, cars


@pytest.fixture(scope="module")
def smoke_store(built, smoke_profile, tmp_path_factory):
    """PatchCore† of the smoke line (three viewpoints) trained into its own store."""
    from lib.models import make_model
    from lib.models.train import run_cell

    root, *_, manifest = built
    store = tmp_path_factory.mktemp("store")
    for v in VIEWPOINTS:
        run_cell(
            make_model("patchcore", smoke_profile),
            root,
            manifest,
            Cell("patchcore", v, True, 0),
            store,
            False,
        )
    return root, store


@pytest.fixture(scope="module")
def bundle(smoke_store, tmp_path_factory):
    """Those cells bundled."""
    root, store = smoke_store
    return make_bundle(
        "smoke", "patchcore", tmp_path_factory.mktemp("b") / "bundle", data_root=root, store_root=store
    )


def test_stream_cars_tile_the_frames_and_the_drift_ramps(stream):
    out, cars = stream
    assert (cars.first_frame.iloc[1:].to_numpy() == cars.last_frame.iloc[:-1].to_numpy() + 1).all()
    n = 0
    for f in sorted(out.glob("chunk_*.mp4")):
        cap = cv2.VideoCapture(str(f))
        while cap.read()[0]:
            n += 1
    assert n == cars.last_frame.iloc[-1] + 1  # chunks hold every frame once, in order
    drift = cars[cars.drift == 1]
    assert list(drift.car) == [1, 2, 3] and drift.strength.is_monotonic_increasing
    assert set(drift.robot) == {S.SEAM_ROBOT[DRIFT.seam]}


def test_stream_bytes_do_not_depend_on_workers(tmp_path, smoke_profile):
    a = S.render_stream(
        smoke_profile, tmp_path / "a", 2, drift=None, chunk_frames=50, workers=1, progress=False
    )
    S.render_stream(smoke_profile, tmp_path / "b", 2, drift=None, chunk_frames=50, workers=2, progress=False)
    files = sorted(p.name for p in (tmp_path / "a").glob("chunk_*.mp4"))
    assert len(files) >= 3
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a.defective.sum() == 0


def test_stream_cars_are_not_training_cars(smoke_profile):
    from lib.acquire.sealant_line import plan_passes

    train = {p.car_seed for p in plan_passes(smoke_profile)}
    assert not train & {p.car_seed for p in S.plan_stream(smoke_profile, 50)}


def test_bad_drift_seam_is_named():
    with pytest.raises(ValueError, match="nozzle"):
        S.DriftEpisode(seam="nozzle")


# ---------------------------------------------------------------- segmentation
class FakeMatcher:
    """Replays a score per frame (the frame is its index)."""

    size = (2, 2)

    def __init__(self, scores):
        self.scores = scores

    def match(self, frame):
        return Match(self.scores[int(frame[0, 0, 0])], 0, 0)


def frames(n):
    return [np.full((4, 4, 3), k, np.uint8) for k in range(n)]


def segment(scores: dict, max_gap=5, stop=None, min_gap=1, leave=None):
    seg = PassSegmenter({v: FakeMatcher(s) for v, s in scores.items()}, 0.5, max_gap, leave, min_gap)
    n = len(next(iter(scores.values()))) if stop is None else stop
    out = [p for k, f in enumerate(frames(n)) for p in seg.push(k, f)]
    return out + seg.finish(n - 1)


def test_segmenter_takes_each_view_at_its_peak_and_closes_complete_passes():
    a = [0, 0.6, 0.9, 0.7, 0, 0, 0, 0, 0, 0, 0, 0.6, 0.8, 0, 0, 0]
    b = [0, 0, 0, 0, 0.6, 0.95, 0, 0, 0, 0, 0, 0, 0, 0.7, 0.6, 0]
    passes = segment({"a": a, "b": b})
    assert [p.complete for p in passes] == [True, True]
    assert [p.views["a"].frame_index for p in passes] == [2, 12]
    assert [p.views["b"].frame_index for p in passes] == [5, 13]
    assert passes[0].first_frame == 1 and passes[0].last_frame == 6


def test_segmenter_reports_partial_passes_next_car_gap_and_end():
    # b never shows in the first car: a's second rise starts the next car
    a = [0.8, 0, 0, 0.8, 0, 0, 0, 0, 0, 0, 0, 0, 0.9, 0]
    b = [0, 0, 0, 0, 0.8, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    passes = segment({"a": a, "b": b}, max_gap=4)
    assert [(p.complete, p.reason) for p in passes] == [
        (False, "next car"),
        (True, "all views"),
        (False, "end of stream"),
    ]
    # a missing view with a long gap closes on the gap
    passes = segment({"a": [0.8, 0, 0, 0, 0, 0, 0], "b": [0] * 7}, max_gap=3)
    assert [(p.complete, p.reason, p.last_frame) for p in passes] == [(False, "gap", 3)]


def test_segmenter_hysteresis_keeps_a_hovering_score_one_car():
    """A match score hovering around the enter threshold (the seed-1 stream's center view: 0.497-0.529)
    must not split one car in two; without hysteresis it does."""
    a = [0, 0.6, 0.45, 0.45, 0.45, 0.55, 0.3, 0.2, 0.1, 0, 0, 0, 0, 0]  # 3 frames between leave and enter
    b = [0, 0, 0, 0, 0, 0, 0, 0.7, 0.8, 0.1, 0, 0, 0, 0]
    one = segment({"a": a, "b": b}, min_gap=3)
    assert [(p.complete, p.views["a"].frame_index) for p in one] == [(True, 1)]
    assert one[0].last_frame == 11  # b left at 9 and stayed below 0.4 for 3 frames (9, 10, 11)
    split = segment({"a": a, "b": b}, min_gap=1, leave=0.4999)
    assert [p.reason for p in split] == ["next car", "all views"]  # one car, two verdicts
    with pytest.raises(ValueError, match="below the enter"):
        PassSegmenter({}, 0.5, 30, leave=0.5)


def test_segmenter_closes_a_car_at_lost_frames_and_ids_carry_the_position():
    seg = PassSegmenter({"a": FakeMatcher([0.8, 0.9, 0, 0])}, 0.5, 5, None, 1, first_index=7)
    f = frames(4)
    assert seg.push(0, f[0], ("c_1.mp4", 40)) == [] and seg.push(1, f[1], ("c_1.mp4", 41)) == []
    assert seg.lost(1, 4) == []  # shorter than max_gap: the car goes on, counting them
    (p,) = seg.lost(1, 5)
    assert (p.index, p.reason, p.complete, p.car_id) == (7, "frames lost", False, "000007@c_1.mp4:40")
    assert p.last_where == ("c_1.mp4", 41) and p.frames_lost == 9 and seg.lost(1, 50) == []


def test_segmenter_finds_every_car_of_a_rendered_stream(stream, built):
    from lib.acquire.sealant_line import read_video_frames
    from lib.extract.template_matching import load_matchers

    out, cars = stream
    root = built[0]
    seg = PassSegmenter(load_matchers(root, VIEWPOINTS), 0.5, 30)
    passes, k = [], 0
    for f in sorted(out.glob("chunk_*.mp4")):
        for _, frame in read_video_frames(f):
            passes += seg.push(k, frame)
            k += 1
    passes += seg.finish(k - 1)
    assert len(passes) == N_CARS and all(p.complete for p in passes)
    for p, car in zip(passes, cars.itertuples(), strict=True):
        for v in VIEWPOINTS:
            assert car.first_frame <= p.views[v].frame_index <= car.last_frame


# ---------------------------------------------------------------- alerts and fusion
def k_of_n_run(rearm):
    mon = AlertMonitor(
        AlertConfig(k=2, n=3, L=1e9, rearm=rearm, baseline="validation"),
        {"s": {"robot": "R9", "mean": 0.0, "std": 1.0}},
    )
    out = [
        [a["kind"] for a in mon.update(i, {"s": 0.0}, {"s"} if f else set())]
        for i, f in enumerate([1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1])
    ]
    return [i for i, x in enumerate(out) if "alert" in x], [i for i, x in enumerate(out) if "cleared" in x]


def test_k_of_n_fires_on_the_kth_flag_within_n_once_then_clears_and_rearms():
    # flags at 0, 3, 5, 6, 7, 11, 12: a window of 3 holds 2 flags first at 5 (3, 5) and last at 8;
    # rearm 1: cleared at 9, fires again at 12 (11, 12)
    assert k_of_n_run(1) == ([5, 12], [9])
    # rearm 4: 9, 10, 11 clear is 3 < 4, the condition is back at 12: still the same alarm, no new alert
    assert k_of_n_run(4) == ([5], [])


def test_ewma_matches_the_hand_computed_recursion():
    cfg = AlertConfig(k=1, n=1, lam=0.5, L=2.0, clip=2.0, baseline="validation")
    limit = 2.0 * math.sqrt(0.5 / 1.5)  # 1.1547
    mon = AlertMonitor(cfg, {"s": {"robot": "R1", "mean": 10.0, "std": 2.0}})
    # z = 1 each time: e = 0.5, 0.75, 0.875 ... never above 1.1547; z = 3, clipped to 2:
    # e = 0.5 * 2 + 0.5 * 0.875 = 1.4375
    out = [mon.update(i, {"s": 12.0}, set()) for i in range(3)] + [mon.update(3, {"s": 16.0}, set())]
    assert out[:3] == [[], [], []]
    (alert,) = out[3]
    assert alert["rule"] == "ewma" and alert["robot"] == "R1" and alert["value"] == pytest.approx(1.4375)
    assert alert["limit"] == pytest.approx(limit, abs=1e-4) and alert["kind"] == "alert"


def test_one_car_alone_cannot_fire_the_ewma():
    cfg = AlertConfig(baseline="validation")
    assert cfg.lam * cfg.clip < cfg.ewma_limit  # the arithmetic of alerts.toml
    mon = AlertMonitor(cfg, {"s": {"robot": "R", "mean": 0.0, "std": 1.0}})
    assert mon.update(0, {"s": 1e6}, set()) == []
    # three cars at the clip from 0: 0.6, 1.08, 1.464 > 1.333 fires on the third
    assert [bool(mon.update(i, {"s": 1e6}, set())) for i in (1, 2)] == [False, True]
    with pytest.raises(ValueError, match="one car alone could fire"):
        AlertConfig(lam=0.2, L=4.0, clip=6.7)


def test_line_baseline_is_the_median_and_mad_of_the_warmup():
    mon = AlertMonitor(
        AlertConfig(warmup=5, k=5, n=5, spread="mad"), {"s": {"robot": "R", "mean": 0.0, "std": 1.0}}
    )
    warm = [10.0, 11.0, 12.0, 13.0, 100.0]
    for i, x in enumerate(warm):  # the EWMA does not run yet
        assert mon.update(i, {"s": x}, set()) == []
        assert mon.ewma["s"] == 0.0
    # median 12; |deviations| 2, 1, 0, 1, 88 -> MAD 1 -> sd 1.4826 (the outlier does not move it)
    assert mon.seams["s"]["mean"] == 12.0 and mon.seams["s"]["std"] == pytest.approx(1.4826)
    mon.update(5, {"s": 12.0 + 1.4826}, set())
    assert mon.ewma["s"] == pytest.approx(0.2)
    # spread "sd" (the default): the level is still the median, the sd the sample sd (ddof 1)
    sd = AlertMonitor(AlertConfig(warmup=5), {"s": {"robot": "R", "mean": 0.0, "std": 1.0}})
    for i, x in enumerate(warm):
        sd.update(i, {"s": x}, set())
    assert sd.seams["s"]["mean"] == 12.0 and sd.seams["s"]["std"] == pytest.approx(np.std(warm, ddof=1))


def test_monitor_state_round_trips():
    seams = {"s": {"robot": "R", "mean": 0.0, "std": 1.0}, "t": {"robot": "R", "mean": 0.0, "std": 1.0}}
    rng = np.random.default_rng(0)
    feed = [
        ({"s": float(rng.normal(2)), "t": float(rng.normal())}, {"s"} if rng.random() < 0.4 else set())
        for _ in range(60)
    ]
    a = AlertMonitor(AlertConfig(warmup=10), seams)  # the warm-up ends inside the first part
    for i, (sc, fl) in enumerate(feed[:35]):
        a.update(i, sc, fl)
    b = AlertMonitor(AlertConfig(warmup=10), {k: dict(v) for k, v in seams.items()})
    b.load_state(json.loads(json.dumps(a.state())))
    for i, (sc, fl) in enumerate(feed[35:], start=35):
        assert a.update(i, sc, fl) == b.update(i, sc, fl)


def test_alert_config_errors_name_the_file(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text("[k_of_n]\nk = 3\nm = 10\n")
    with pytest.raises(ValueError, match=r"a\.toml.*k_of_n\.m"):
        load_alert_config(p)
    p.write_text("[k_of_n]\nk = 11\nn = 10\n")
    with pytest.raises(ValueError, match="k <= n"):
        load_alert_config(p)
    p.write_text('[ewma]\nbaseline = "lines"\n')
    with pytest.raises(ValueError, match=r"a\.toml.*baseline"):
        load_alert_config(p)
    p.write_text("[ewma]\nclip = 9.0\n")
    with pytest.raises(ValueError, match=r"a\.toml.*one car alone"):
        load_alert_config(p)
    assert load_alert_config(Path("lib/inspection/alerts.toml")) == AlertConfig()


def test_fusion_by_hand():
    fusion = {
        "coef": [1.0, 2.0, -1.0],
        "intercept": -0.5,
        "threshold": 0.6,
        "normal_median": {"front": 0, "center": -2, "back": 0},
    }
    f = fuse({"front": 0.5, "center": -1.0, "back": 1.0}, fusion)
    p = 1 / (1 + math.exp(-(-0.5 + 0.5 - 2.0 - 1.0)))
    assert f["max_z"] == 1.0 and f["max_verdict"] and f["logistic_p"] == pytest.approx(p, abs=1e-4)
    assert not f["logistic_verdict"]
    # a missing view enters with its validation-normal median, not with 0
    g = fuse({"front": 0.5, "back": 1.0}, fusion)
    assert g["logistic_p"] == pytest.approx(1 / (1 + math.exp(-(-0.5 + 0.5 - 4.0 - 1.0))), abs=1e-4)


def view(z, regions=(), seam="s1"):
    peak = {"bbox": [0, 0, 4, 4], "seam": seam, "robot": "R1", "peak": 1.0}
    return {"z": z, "regions": list(regions), "peak": peak}


def test_decide_fusion_veto_and_the_reason_for_an_overruled_view():
    veto = {"front": 2.0, "center": 3.0, "back": 1.0}
    normal = {"logistic_p": 0.2, "logistic_verdict": False}
    # fusion says normal, center is above its threshold but below its veto level: stated, not silent
    d = decide({"front": view(-1), "center": view(2.5), "back": view(-2)}, normal, veto, 0.5)
    assert not d["anomalous"] and d["rule"] == "fusion"
    (o,) = d["overruled"]
    assert o["view"] == "center" and "below its veto level 3.00" in o["why"] and "p=0.200" in o["why"]
    # at its veto level the view decides, and the reason names it
    d = decide({"front": view(-1), "center": view(3.0), "back": view(-2)}, normal, veto, 0.5)
    assert (
        d["anomalous"] and d["rule"] == "veto" and "view center: z=3.00 >= its veto level 3.00" in d["reason"]
    )
    # the fusion's own anomalous verdict
    d = decide({"front": view(-1)}, {"logistic_p": 0.9, "logistic_verdict": True}, veto, 0.5)
    assert d["anomalous"] and d["rule"] == "fusion" and d["overruled"] == []


def test_locate_names_a_region_a_peak_or_says_image_level_only():
    reg = {"bbox": [1, 2, 3, 4], "seam": "s2", "robot": "R2", "peak": 5.0, "area": 9, "region": 1}
    where, ev = locate({"front": view(0.5, [reg]), "center": view(2.0), "back": view(-1)}, True)
    assert [(w["view"], w["kind"]) for w in where] == [("center", "peak"), ("front", "region")]
    assert where[0]["below_pixel_threshold"] and where[1]["seam"] == "s2" and ev == "regions"
    where, ev = locate({"front": view(-0.1), "center": view(-0.2)}, True)
    assert where == [] and ev.startswith("image-level only")
    assert locate({"front": view(3.0)}, False) == ([], "")


def test_outbox_keeps_order_across_a_restart_and_drops_the_oldest_when_full(tmp_path):
    from lib.inspection.mqtt import Outbox

    box = Outbox(tmp_path / "q", max_messages=3)
    for i in range(5):
        box.put("t", {"i": i})
    assert box.dropped == 2 and [m["payload"]["i"] for m in box.pending] == [2, 3, 4]
    box.ack(box.peek()["seq"])
    box.close()
    with open(tmp_path / "q" / "outbox.jsonl", "a") as fh:
        fh.write('{"seq": 99, "topic": "t", "payl')  # a line cut by a crash
    again = Outbox(tmp_path / "q", max_messages=3)
    assert [m["payload"]["i"] for m in again.pending] == [3, 4]
    again.put("t", {"i": 5})
    assert [m["seq"] for m in again.pending] == [3, 4, 5]
    again.close()
    with pytest.raises(ValueError, match=">= 1"):
        Outbox(tmp_path / "r", max_messages=0)


def test_seam_labels_cover_each_seam_centreline():
    from lib.acquire import sealant_line as sl
    from lib.acquire import underbody as ub

    labels, names = seam_labels("front", 0.25, 15.0)
    x0, y0, w, h = sl.template_box("front", 0.25)
    for j, seam in enumerate(s for s in ub.model_seams() if s.viewpoint == "front"):
        pts = np.round(ub.resample(seam.points, 2.0) * 0.25 - [x0, y0]).astype(int)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        got = labels[pts[inside, 1], pts[inside, 0]]
        assert names[j] == seam.name and (got == j + 1).mean() > 0.8


# ---------------------------------------------------------------- stream evaluation
def test_alert_outcomes_delay_and_false_alarm_rate():
    cars = pd.DataFrame(
        {
            "car": range(8),
            "first_frame": range(0, 80, 10),
            "last_frame": range(9, 89, 10),
            "defective": [0, 0, 1, 1, 1, 0, 0, 0],
            "seam": ["", "", "s1", "s1", "s1", "", "", ""],
            "robot": ["", "", "R1", "R1", "R1", "", "", ""],
            "drift": [0, 0, 1, 1, 1, 0, 0, 0],
        }
    )
    matched = pd.DataFrame({"pass": range(8), "car": range(8)})
    alerts = [
        {"pass": 0, "seam": "s2", "rule": "ewma"},  # false
        {"pass": 3, "seam": "s1", "rule": "k_of_n"},  # true, delay 1
        {"pass": 4, "seam": "s1", "rule": "ewma"},  # true, delay 2
        {"pass": 7, "seam": "s1", "rule": "ewma"},  # 3 cars after the last s1 defect: window 3 -> false
    ]
    out = ie.alert_outcomes(alerts, matched, cars, window=3)
    assert list(out["true"]) == [False, True, True, False]
    d = ie.drift_delay(out, cars)
    assert (d["onset_car"], d["delay_k_of_n"], d["delay_ewma"], d["delay_any"]) == (2, 1, 2, 1)
    fa = ie.false_alarm_rate(out, cars)
    assert fa["false_alarms"] == 2 and fa["per_1000_normal"] == pytest.approx(400.0)


# ---------------------------------------------------------------- bundle and inspect
def test_bundle_detects_missing_altered_and_extra_files(bundle, tmp_path):
    info = verify_bundle(bundle)
    assert info["model"] == "patchcore" and set(info["views"]) == set(VIEWPOINTS)
    for v in VIEWPOINTS:
        m = info["views"][v]
        assert math.isfinite(m["image_threshold"]) and math.isfinite(m["pixel_threshold"])
        assert all(b["std"] > 0 for b in m["seam_baseline"].values())
    c = tmp_path / "c"
    shutil.copytree(bundle, c)
    (c / "front" / "roi.png").write_bytes((c / "front" / "roi.png").read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match=r"altered: .*front/roi\.png"):
        verify_bundle(c)
    (c / "front" / "roi.png").unlink()
    with pytest.raises(BundleError, match=r"missing: .*front/roi\.png"):
        verify_bundle(c)
    shutil.copyfile(bundle / "front" / "roi.png", c / "front" / "roi.png")
    (c / "center" / "notes.txt").write_text("x")
    with pytest.raises(BundleError, match="notes.txt"):
        verify_bundle(c)


def test_bundle_refuses_an_untrained_cell(built, tmp_path):
    root = built[0]
    with pytest.raises(BundleError, match="not trained"):
        make_bundle("smoke", "memseg", tmp_path / "b", data_root=root, store_root=tmp_path / "empty")


def test_inspect_writes_one_verdict_per_car(bundle, stream, tmp_path):
    src, cars = stream
    summary = run_inspection(bundle, src, tmp_path / "out", progress=False)
    records = ie.read_jsonl(tmp_path / "out" / "verdicts.jsonl")
    assert summary["underbodies"] == len(records) == N_CARS
    assert summary["frames"] == cars.last_frame.iloc[-1] + 1
    for r in records:
        assert r["complete"] and set(r["views"]) == set(VIEWPOINTS)
        assert Path(r["overlay"]).is_file()
        assert {"match", "model", "regions"} <= set(r["latency_ms"])
        for view in r["views"].values():
            for reg in view["regions"]:
                assert reg["seam"] == "" or reg["robot"] == S.SEAM_ROBOT[reg["seam"]]
    matched = ie.match_cars(ie.verdict_table(records), cars)
    assert list(matched.car) == list(cars.car)


def test_car_ids_name_where_each_car_starts_and_the_plant_id_comes_from_the_file_name(
    bundle, stream, tmp_path
):
    src, cars = stream
    folder = tmp_path / "named"
    folder.mkdir()
    for i, f in enumerate(sorted(src.glob("chunk_*.mp4"))[:2]):
        shutil.copyfile(f, folder / (f"body_WF0X{i}23_{i:04d}.mp4" if i == 0 else f"chunk_{i:05d}.mp4"))
    run_inspection(bundle, folder, tmp_path / "o", progress=False, overlays="none")
    first = ie.read_jsonl(tmp_path / "o" / "verdicts.jsonl")[0]
    assert first["plant_id"] == "WF0X023" and first["source"]["first"][0] == "body_WF0X023_0000.mp4"
    assert first["car_id"] == f"000000@body_WF0X023_0000.mp4:{first['source']['first'][1]}"


def test_inspect_reports_a_pass_cut_by_the_end_of_the_stream(bundle, stream, tmp_path):
    src, cars = stream
    stop = int((cars.first_frame.iloc[2] + cars.last_frame.iloc[2]) // 2)
    run_inspection(bundle, src, tmp_path / "out", progress=False, max_frames=stop)
    records = ie.read_jsonl(tmp_path / "out" / "verdicts.jsonl")
    assert [r["complete"] for r in records] == [True, True, False]
    assert records[-1]["closed_by"] == "end of stream"


def test_inspect_rejects_bad_sources(bundle, tmp_path):
    small = tmp_path / "small.mp4"
    w = cv2.VideoWriter(str(small), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(3):
        w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    with pytest.raises(StreamError, match=r"small\.mp4: frame 0 is 64x48"):
        run_inspection(bundle, small, tmp_path / "o1", progress=False)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(StreamError, match="junk.mp4"):
        run_inspection(bundle, junk, tmp_path / "o2", progress=False)
    with pytest.raises(StreamError, match="no-such"):
        run_inspection(bundle, str(tmp_path / "no-such"), tmp_path / "o3", progress=False)


def test_cli_inspect_names_a_broken_bundle(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "lib", "inspect", "--bundle", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 1 and "MANIFEST.json is missing" in r.stderr


VOLATILE = ("time", "latency_ms", "overlay")


def stable(records):
    """Records without wall-clock fields (which a re-run cannot repeat)."""
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def test_resume_after_an_interrupt_gives_each_car_one_verdict_and_keeps_alert_state(
    bundle, stream, tmp_path, monkeypatch
):
    from lib.inspection import inspector as I

    src, cars = stream
    run_inspection(bundle, src, tmp_path / "whole", progress=False, overlays="none")
    stop = int((cars.first_frame.iloc[2] + cars.last_frame.iloc[2]) // 2)  # inside car 2
    real = I.open_frames

    def interrupted(*args, **kwargs):
        for n, item in enumerate(real(*args, **kwargs)):
            if n == stop:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(I, "open_frames", interrupted)
    first = run_inspection(bundle, src, tmp_path / "part", progress=False, overlays="none")
    monkeypatch.setattr(I, "open_frames", real)
    assert first["interrupted"] and first["underbodies"] == 2
    state = json.loads((tmp_path / "part" / "state.json").read_text())
    assert state["next_pass"] == 2
    second = run_inspection(bundle, src, tmp_path / "part", progress=False, overlays="none")
    assert second["resumed"] and second["underbodies"] == N_CARS - 2
    whole = ie.read_jsonl(tmp_path / "whole" / "verdicts.jsonl")
    part = ie.read_jsonl(tmp_path / "part" / "verdicts.jsonl")
    assert [r["car_id"] for r in part] == [r["car_id"] for r in whole]
    assert stable(part) == stable(whole)
    assert stable(ie.read_jsonl(tmp_path / "part" / "alerts.jsonl")) == stable(
        ie.read_jsonl(tmp_path / "whole" / "alerts.jsonl")
    )
    assert [h["kind"] for h in ie.read_jsonl(tmp_path / "part" / "health.jsonl")] == ["resumed"]


def test_replayed_alerts_equal_the_run_s(bundle, stream, tmp_path):
    """replay_alerts (trying alert settings on recorded verdicts) gives exactly what inspect raised."""
    cfg = AlertConfig(warmup=5, baseline="line", rearm=1)
    (tmp_path / "a.toml").write_text("[ewma]\nwarmup = 5\n[rearm]\ncars = 1\n")
    run_inspection(
        bundle, stream[0], tmp_path / "o", progress=False, overlays="none", alerts_config=tmp_path / "a.toml"
    )
    records = ie.read_jsonl(tmp_path / "o" / "verdicts.jsonl")
    written = ie.read_jsonl(tmp_path / "o" / "alerts.jsonl")
    replayed = ie.replay_alerts(records, cfg, ie.bundle_seams(verify_bundle(bundle)))
    assert written and stable(replayed) == stable(written)


def test_a_crash_between_state_and_files_is_repaired_on_restart(bundle, stream, tmp_path):
    src, _ = stream
    out = tmp_path / "o"
    run_inspection(bundle, src, out, progress=False, overlays="none", max_frames=200)
    lines = (out / "verdicts.jsonl").read_text().splitlines(keepends=True)
    (out / "verdicts.jsonl").write_text("".join(lines[:-1]))  # the last verdict never reached the file
    run_inspection(bundle, src, out, progress=False, overlays="none")
    ids = [r["car_id"] for r in ie.read_jsonl(out / "verdicts.jsonl")]
    assert len(ids) == len(set(ids)) and ids[len(lines) - 1] == json.loads(lines[-1])["car_id"]


def test_a_state_file_of_another_bundle_is_refused(bundle, stream, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "state.json").write_text(json.dumps({"bundle": "0" * 64, "next_pass": 3}))
    with pytest.raises(StreamError, match="another bundle"):
        run_inspection(bundle, stream[0], out, progress=False)


def faulty_folder(src, dst, zero_chunk=1, truncate_chunk=3):
    """A copy of the stream's chunks with a zeroed region in one and a truncated extra file."""
    dst.mkdir()
    chunks = sorted(src.glob("chunk_*.mp4"))
    for f in chunks:
        shutil.copyfile(f, dst / f.name)
    z = dst / chunks[zero_chunk].name
    data = bytearray(z.read_bytes())
    n = len(data)
    data[int(0.5 * n) : int(0.52 * n)] = bytes(int(0.52 * n) - int(0.5 * n))
    z.write_bytes(bytes(data))
    part = chunks[truncate_chunk].read_bytes()
    (dst / (chunks[truncate_chunk].stem + "_partial.mp4")).write_bytes(part[: len(part) // 2])
    return z.name


def test_corrupt_and_truncated_chunks_are_skipped_with_a_warning(bundle, stream, tmp_path):
    src, cars = stream
    zeroed = faulty_folder(src, tmp_path / "in")
    summary = run_inspection(bundle, tmp_path / "in", tmp_path / "o", progress=False, overlays="none")
    health = ie.read_jsonl(tmp_path / "o" / "health.jsonl")
    kinds = [h["kind"] for h in health]
    assert "corrupt_frames" in kinds and "unreadable_video" in kinds
    lost = [h for h in health if h["kind"] == "corrupt_frames"]
    assert all(h["file"] == zeroed and h["frames_lost"] >= 1 for h in lost)
    # the lost frames keep their place in the frame count: cars still line up with the ground truth
    assert summary["frames"] + sum(h["frames_lost"] for h in lost) == cars.last_frame.iloc[-1] + 1
    records = ie.read_jsonl(tmp_path / "o" / "verdicts.jsonl")
    matched = ie.match_cars(ie.verdict_table(records), cars)
    assert sorted(matched.car) == list(cars.car)


def test_a_black_camera_raises_no_cars_and_black_frame_events(bundle, tmp_path):
    info = verify_bundle(bundle)
    w, h = info["frame_size"]
    folder = tmp_path / "cam"
    folder.mkdir()
    wr = cv2.VideoWriter(str(folder / "dead.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for _ in range(60):
        wr.write(np.zeros((h, w, 3), np.uint8))
    wr.release()
    summary = run_inspection(bundle, folder, tmp_path / "o", progress=False, no_car_s=3.0)
    kinds = [e["kind"] for e in ie.read_jsonl(tmp_path / "o" / "health.jsonl")]
    assert summary["underbodies"] == 0 and kinds == ["black_frames", "no_cars"]


def test_the_bundle_carries_its_backbone_and_runs_without_the_machine_s(
    bundle, stream, tmp_path, monkeypatch
):
    """Weights are packed with their source and SHA-256; inspect reads them from the bundle even
    where the machine has none (the package lookup is switched off)."""
    from lib.fileio import sha256_file
    from lib.inspection.inspector import Inspector
    from lib.models import backbones as B

    info = verify_bundle(bundle)
    (rec,) = info["weights"]
    assert rec["source"] == "package" and rec["comparable"] and not info["random_backbone"]
    assert sha256_file(Path(bundle) / rec["file"]) == rec["sha256"]
    monkeypatch.setattr(B, "_package_file", lambda spec: None)
    monkeypatch.setattr(B, "_find_cached", lambda name: None)
    insp = Inspector(bundle, overlays="none")
    fe = insp.views["front"]["model"].net.extractor.info
    assert fe.source == "file" and Path(fe.location) == Path(bundle) / rec["file"]
    out = run_inspection(bundle, stream[0], tmp_path / "o", progress=False, overlays="none")
    records = ie.read_jsonl(tmp_path / "o" / "verdicts.jsonl")
    assert out["underbodies"] == N_CARS and not any(r["random_backbone"] for r in records)


def test_bundle_refuses_a_random_backbone_unless_allowed_and_a_wrong_profile(built, tmp_path, monkeypatch):
    from lib.inspection import bundle as Bu
    from lib.models import backbones as B
    from lib.models import make_model
    from lib.models.train import run_cell

    root, *_, manifest = built
    with pytest.raises(BundleError, match="made with profile 'smoke', not 'quick'"):
        make_bundle("quick", "patchcore", tmp_path / "q", data_root=root, store_root=tmp_path / "none")
    monkeypatch.setattr(B, "_package_file", lambda spec: None)
    monkeypatch.setattr(B, "_find_cached", lambda name: None)
    from lib.config import load_profile

    store = tmp_path / "store"
    for v in VIEWPOINTS:
        run_cell(
            make_model("patchcore", load_profile("smoke")),
            root,
            manifest,
            Cell("patchcore", v, True, 0),
            store,
            False,
        )
    with pytest.raises(BundleError, match="no pretrained weights.*--allow-random-backbone"):
        Bu.make_bundle("smoke", "patchcore", tmp_path / "r", data_root=root, store_root=store)
    b = Bu.make_bundle(
        "smoke", "patchcore", tmp_path / "r2", data_root=root, store_root=store, allow_random_backbone=True
    )
    info = verify_bundle(b)
    assert info["random_backbone"] and info["weights"][0]["source"] == "random"


def test_export_into_the_bundle_is_listed_and_used_by_onnxruntime(bundle, stream, tmp_path):
    from lib.inspection.inspector import Inspector

    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "lib", "export", "--bundle", str(b), "--out", str(b / "x")],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert r.returncode == 1 and "inside the bundle" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "lib", "export", "--bundle", str(b)], capture_output=True, text=True, cwd=repo
    )
    assert r.returncode == 0, r.stderr
    info = verify_bundle(b)  # still verifies, now with onnx/ listed
    assert sorted(info["extras"]["onnx"]) == sorted(VIEWPOINTS)
    insp = Inspector(b, overlays="none", backend="onnxruntime")
    assert insp._tmp is None  # nothing exported again
    insp.close()
    insp = Inspector(bundle, overlays="none", backend="onnxruntime")  # no exports: a temporary folder
    tmp = Path(insp._tmp.name)
    assert sorted(p.name for p in tmp.iterdir()) == sorted(f"{v}.onnx" for v in VIEWPOINTS)
    insp.close()
    assert not tmp.exists()


# ---------------------------------------------------------------- MQTT against a real broker
@pytest.fixture
def broker():
    from amqtt.broker import Broker

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    holder = {}

    def serve():
        asyncio.set_event_loop(loop)
        holder["broker"] = Broker(cfg, loop=loop)
        loop.run_until_complete(holder["broker"].start())
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    asyncio.run_coroutine_threadsafe(holder["broker"].shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


def test_verdicts_and_alerts_reach_an_mqtt_subscriber(bundle, stream, tmp_path, broker):
    import paho.mqtt.client as mqtt

    src, _ = stream
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", broker)
    sub.subscribe("sealant/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    summary = run_inspection(bundle, src, tmp_path / "out", mqtt=f"127.0.0.1:{broker}", progress=False)
    deadline = time.time() + 10
    while time.time() < deadline and len(got) < summary["underbodies"] + summary["alerts"]:
        time.sleep(0.1)
    sub.loop_stop()
    sub.disconnect()
    verdicts = [p for t, p in got if t == "sealant/verdicts"]
    alerts = [(t, p) for t, p in got if t.startswith("sealant/alerts/")]
    assert [v["pass"] for v in verdicts] == list(range(summary["underbodies"]))
    assert len(alerts) == summary["alerts"]
    assert all(t == f"sealant/alerts/{p['robot']}" for t, p in alerts)
    assert verdicts == ie.read_jsonl(tmp_path / "out" / "verdicts.jsonl")


def test_an_unreachable_broker_is_reported_and_messages_wait_on_disk(bundle, stream, tmp_path):
    """Inspection goes on without the broker: a health event names it, every message waits in the
    outbox (in order) for the next start."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = tmp_path / "o"
    summary = run_inspection(
        bundle, stream[0], out, mqtt=f"127.0.0.1:{port}", progress=False, overlays="none"
    )
    assert summary["underbodies"] == N_CARS and summary["mqtt"]["delivered"] == 0
    health = ie.read_jsonl(out / "health.jsonl")
    assert [h["kind"] for h in health] == ["mqtt_unreachable"] and f"127.0.0.1:{port}" in health[0]["message"]
    queued = ie.read_jsonl(out / "mqtt" / "outbox.jsonl")
    assert summary["mqtt"]["unsent"] == len(queued)
    verdicts = [m["payload"] for m in queued if m["topic"] == "sealant/verdicts"]
    assert verdicts == ie.read_jsonl(out / "verdicts.jsonl")
    assert [m["seq"] for m in queued] == sorted(m["seq"] for m in queued)
    with pytest.raises(ValueError, match="HOST:PORT"):
        run_inspection(bundle, stream[0], tmp_path / "o2", mqtt="nohostport", progress=False)


def test_follow_picks_up_videos_as_they_arrive(bundle, stream, tmp_path):
    """--follow on a folder: chunks renamed into place one by one while inspection runs."""
    src, cars = stream
    live = tmp_path / "live"
    live.mkdir()
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(
            run_inspection(bundle, live, tmp_path / "out", follow=True, idle_timeout=2.0, progress=False)
        )
    )
    worker.start()
    for f in sorted(src.glob("chunk_*.mp4")):
        part = live / (f.name + ".part")  # not a video name until renamed
        shutil.copyfile(f, part)
        part.rename(live / f.name)
        time.sleep(0.3)
    worker.join(60)
    assert not worker.is_alive()
    assert result["underbodies"] == N_CARS and result["frames"] == cars.last_frame.iloc[-1] + 1


def test_onnxruntime_backend_gives_the_same_verdicts(bundle, stream, tmp_path):
    src, _ = stream
    run_inspection(bundle, src, tmp_path / "t", progress=False, overlays="none")
    run_inspection(bundle, src, tmp_path / "o", progress=False, overlays="none", backend="onnxruntime")
    a = ie.read_jsonl(tmp_path / "t" / "verdicts.jsonl")
    b = ie.read_jsonl(tmp_path / "o" / "verdicts.jsonl")
    assert len(a) == len(b) == N_CARS
    for ra, rb in zip(a, b, strict=True):
        for v in VIEWPOINTS:
            assert rb["views"][v]["score"] == pytest.approx(ra["views"][v]["score"], rel=1e-4)
            assert rb["views"][v]["verdict"] == ra["views"][v]["verdict"]


# ---------------------------------------------------------------- soak and fault injection
def test_soak_with_broker_kills_corrupt_chunks_a_paused_camera_and_an_inspect_restart(
    bundle, stream, tmp_path
):
    """The CI-sized soak (lib/inspection/soak.py): every car exactly one verdict, everything written
    reached the broker, every fault a health event, the last will seen when inspect is killed."""
    from lib.inspection.soak import run_soak

    src, cars = stream
    report = run_soak(bundle, src, tmp_path / "soak", progress=lambda *a: None)
    print(json.dumps(report, indent=1))
    assert report["passed"], json.dumps(report, indent=1)
    assert report["verdicts"] == len(cars) == N_CARS


@pytest.fixture(scope="module")
def studied_bundle(smoke_store, tmp_path_factory):
    """The same cells bundled with a size-aware policy (a budget that lets every validation normal
    through, so the smoke line's few images fit it) and the defect-type classifier."""
    root, store = smoke_store
    out = tmp_path_factory.mktemp("b2") / "bundle"
    return make_bundle(
        "smoke", "patchcore", out, data_root=root, store_root=store, size_budget=1000.0, diagnose=True
    )


def test_a_bundle_carries_the_size_policy_and_the_type_classifier(studied_bundle):
    from lib.studies.diagnosis import TypeClassifier
    from lib.studies.operating_points import SizePolicy

    info = verify_bundle(studied_bundle)
    for v in VIEWPOINTS:
        p = SizePolicy.from_json(info["views"][v]["size_policy"])
        assert p.segment_threshold == info["views"][v]["pixel_threshold"]
    clf = TypeClassifier.from_json(info["diagnosis"])
    assert set(clf.classes) <= set(DEFECT_TYPES) and len(clf.classes) >= 2
    rel = info["diagnosis"]["weights"]["file"]
    assert (studied_bundle / rel).is_file() and rel in (studied_bundle / "MANIFEST.json").read_text()


def test_inspect_decides_by_the_size_policy_and_names_each_region_s_type(studied_bundle, stream, tmp_path):
    src, cars = stream
    run_inspection(studied_bundle, src, tmp_path / "out", progress=False)
    records = ie.read_jsonl(tmp_path / "out" / "verdicts.jsonl")
    assert len(records) == N_CARS
    info = verify_bundle(studied_bundle)
    n_regions = 0
    for r in records:
        assert r["decision"]["rule"] == "size-aware policy"
        flagged = [x for v in r["views"].values() for x in v["regions"] if x["flagged"]]
        assert (r["verdict"] == "anomalous") == bool(flagged)
        for v, view in r["views"].items():
            thr = info["views"][v]["size_policy"]["thresholds"]
            for x in view["regions"]:
                n_regions += 1
                k = ("small", "medium", "large").index(x["size_class"])
                assert x["threshold"] == float(thr[k]) and x["flagged"] == (x["peak"] >= float(thr[k]))
                assert x["type"] in DEFECT_TYPES and 0 < x["type_p"] <= 1
    assert n_regions > 0


def test_re_deciding_plain_verdicts_by_the_policy_equals_inspect_with_it(
    bundle, studied_bundle, stream, tmp_path
):
    """Notebook 10 re-decides the fused bundle's verdicts with the size policy from their regions:
    the same decision, car by car, as inspecting with the policy bundle."""
    src, cars = stream
    run_inspection(bundle, src, tmp_path / "plain", progress=False, overlays="none")
    run_inspection(studied_bundle, src, tmp_path / "size", progress=False, overlays="none")
    plain = ie.read_jsonl(tmp_path / "plain" / "verdicts.jsonl")
    sized = ie.read_jsonl(tmp_path / "size" / "verdicts.jsonl")
    offline = ie.size_policy_verdicts(plain, verify_bundle(studied_bundle))
    assert list(offline.size_policy) == [r["verdict"] == "anomalous" for r in sized]
    assert list(offline.final) == [r["verdict"] == "anomalous" for r in plain]
    matched = ie.match_cars(ie.verdict_table(plain), cars).merge(offline[["pass", "size_policy"]], on="pass")
    rates = ie.rule_rates(matched).set_index("rule")
    assert rates.loc["size-aware policy", "false_alarms_per_1000"] == pytest.approx(
        1000 * (matched.size_policy & (matched.defective == 0)).sum() / (matched.defective == 0).sum()
    )


def test_locate_under_a_size_policy_names_the_flagged_region_not_the_z():
    reg = {
        "bbox": [1, 2, 3, 4],
        "seam": "s2",
        "robot": "R2",
        "peak": 0.5,
        "size_class": "small",
        "flagged": True,
    }
    top = {**reg, "peak": 0.9, "flagged": False, "seam": "s1"}
    views = {"front": view(-1.0, [top, reg]), "center": view(2.0, [{**top}])}
    where, evidence = locate(views, True, by_size=True)
    assert [(w["view"], w["seam"], w["size_class"]) for w in where] == [("front", "s2", "small")]
    assert evidence == "regions"
    assert [w["view"] for w in locate(views, True)[0]] == ["center"]  # the fusion's rule: z >= 0
