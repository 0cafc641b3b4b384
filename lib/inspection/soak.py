"""Soak and fault injection for the inspection loop: a rendered stream fed chunk by chunk to
``python -m lib inspect --follow`` (a real process) while the harness kills and restarts the MQTT
broker (a real process), corrupts a chunk, drops a truncated one, pauses the camera and kills and
restarts ``inspect`` itself.

It passes only if every car the simulator drew gets exactly one verdict in ``verdicts.jsonl``;
every verdict, alert and health event written to the files reached the broker (QoS 1 duplicates
allowed: de-duplicated by ``car_id`` / ``alert_id`` / ``event_id``), with the same content; and
every injected fault shows as a health event. ``tests/test_inspection.py`` runs it at smoke size
in CI; ``benchmarks/soak.py`` runs it on a longer stream.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

#: wall-clock fields a re-inspected car cannot repeat
VOLATILE = ("time", "latency_ms", "overlay")
#: the health events each injected fault must raise
EXPECTED_EVENTS = {
    "broker killed": {"mqtt_disconnected", "mqtt_reconnected", "mqtt_unreachable"},
    "zeroed region in a chunk": {"corrupt_frames"},
    "truncated chunk": {"unreadable_video"},
    "camera paused": {"no_cars"},
    "inspect killed and restarted": {"resumed"},
}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_port(port: int, up: bool, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            if up:
                return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not come {'up' if up else 'down'} within {timeout} s")


def read_jsonl(path) -> list[dict]:
    p = Path(path)
    out = []
    if p.is_file():
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def stable(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in VOLATILE}


def zero_region(path: Path, lo: float = 0.5, hi: float = 0.52) -> None:
    data = bytearray(path.read_bytes())
    n = len(data)
    data[int(lo * n) : int(hi * n)] = bytes(int(hi * n) - int(lo * n))
    path.write_bytes(bytes(data))


class _Proc:
    def __init__(self, args, log: Path, env=None):
        self.args, self.log, self.env = args, log, env
        self.p = None

    def start(self):
        fh = open(self.log, "a")  # noqa: SIM115 - handed to the child process
        self.p = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        fh.close()
        return self

    def kill(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)


def run_soak(
    bundle,
    stream_dir,
    work,
    feed_s: float = 0.4,
    broker_down_s: float = 3.0,
    pause_s: float = 4.0,
    no_car_s: float = 2.0,
    idle_timeout: float = 8.0,
    timeout_s: float = 600.0,
    progress=print,
) -> dict:
    """Run the soak; return a report ({"passed", "failures", counts}). ``stream_dir``: a rendered
    stream (``lib.acquire.stream.render_stream``: chunks + cars.csv) of at least 5 chunks."""
    repo = Path(__file__).resolve().parents[2]
    work = Path(work)
    if work.exists():
        shutil.rmtree(work)
    live, out = work / "live", work / "out"
    live.mkdir(parents=True)
    chunks = sorted(Path(stream_dir).glob("chunk_*.mp4"))
    if len(chunks) < 5:
        raise ValueError(f"{stream_dir}: the soak needs a stream of >= 5 chunks, found {len(chunks)}")
    cars = pd.read_csv(Path(stream_dir) / "cars.csv")
    port = free_port()
    record = work / "broker.jsonl"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    broker = _Proc(
        [sys.executable, "-m", "lib.inspection.broker", "--port", str(port), "--record", str(record)],
        work / "broker.log",
        env,
    )
    inspect_args = [
        sys.executable,
        "-m",
        "lib",
        "inspect",
        str(live),
        "--bundle",
        str(bundle),
        "--out",
        str(out),
        "--follow",
        "--idle-timeout",
        str(idle_timeout),
        "--mqtt",
        f"127.0.0.1:{port}",
        "--overlays",
        "none",
        "--no-car-timeout",
        str(no_car_s),
        "--heartbeat",
        "1",
    ]
    inspect = _Proc(inspect_args, work / "inspect.log", env)
    status = []  # sealant/status as a subscriber sees it (the last will)
    t0 = time.monotonic()

    def watch_status():
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-status")
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("sealant/status", qos=1)
        c.on_message = lambda cl, u, m: status.append(json.loads(m.payload))
        c.reconnect_delay_set(0.2, 1)
        c.connect_async("127.0.0.1", port)
        c.loop_start()
        return c

    def feed(f: Path, name: str | None = None):
        part = live / ((name or f.name) + ".part")
        shutil.copyfile(f, part)
        part.rename(live / (name or f.name))
        time.sleep(feed_s)

    def verdict_count():
        return len(read_jsonl(out / "verdicts.jsonl"))

    def wait_for(cond, what, limit=120.0):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.1)
        raise TimeoutError(f"soak: {what} did not happen within {limit} s (see {work})")

    failures = []
    try:
        broker.start()
        _wait_port(port, True)
        sub = watch_status()
        inspect.start()
        feed(chunks[0])
        wait_for(lambda: verdict_count() > 0, "a first verdict")
        # 1. the broker dies; inspection goes on and buffers; a chunk arrives with a zeroed region
        progress("soak: killing the broker")
        broker.kill()
        _wait_port(port, False)
        zeroed = work / chunks[1].name
        shutil.copyfile(chunks[1], zeroed)
        zero_region(zeroed)
        n_before = verdict_count()
        feed(zeroed)
        feed(chunks[2])
        wait_for(lambda: verdict_count() > n_before, "a verdict while the broker is down")
        time.sleep(broker_down_s)
        # 2. inspect dies too, with messages in its outbox; both come back (the outbox is on disk)
        progress("soak: killing inspect while the broker is down")
        inspect.kill()
        progress("soak: restarting the broker and inspect")
        broker.start()
        _wait_port(port, True)
        inspect.start()
        # 3. a truncated chunk, then the camera pauses
        truncated = chunks[3].read_bytes()
        (work / "partial.mp4").write_bytes(truncated[: len(truncated) // 2])
        feed(work / "partial.mp4", chunks[2].stem + "_partial.mp4")
        wait_for(
            lambda: "unreadable_video" in {h["kind"] for h in read_jsonl(out / "health.jsonl")},
            "the truncated chunk's event",
        )
        progress("soak: camera paused")
        time.sleep(pause_s)
        n_before = verdict_count()
        feed(chunks[3])
        wait_for(lambda: verdict_count() > n_before, "a verdict after the pause")
        # 4. inspect is killed while the broker is up: the broker sends its last will
        progress("soak: killing inspect")
        inspect.kill()
        will_deadline = time.monotonic() + 15
        while time.monotonic() < will_deadline and not any(
            s.get("reason", "").startswith("inspector lost") for s in status
        ):
            time.sleep(0.1)
        for f in chunks[4:]:
            feed(f)
        progress("soak: restarting inspect")
        inspect.start()
        remaining = timeout_s - (time.monotonic() - t0)
        inspect.p.wait(max(10.0, remaining))
        rc = inspect.p.returncode
        if rc != 0:
            failures.append(f"inspect exited with {rc} (log: {work / 'inspect.log'})")
        time.sleep(0.5)
        sub.loop_stop()
        sub.disconnect()
    finally:
        inspect.kill()
        broker.kill()

    # ------------------------------------------------------------------ the checks
    from lib.inspection import evaluate as ie

    verdicts = read_jsonl(out / "verdicts.jsonl")
    alerts = read_jsonl(out / "alerts.jsonl")
    health = read_jsonl(out / "health.jsonl")
    received = read_jsonl(record)
    ids = [v["car_id"] for v in verdicts]
    if len(ids) != len(set(ids)):
        failures.append(f"{len(ids) - len(set(ids))} car id(s) have more than one verdict in verdicts.jsonl")
    matched = ie.match_cars(ie.verdict_table(verdicts), cars) if verdicts else cars.iloc[:0]
    per_car = matched.car.value_counts() if len(matched) else pd.Series(dtype=int)
    missing = sorted(set(cars.car) - set(per_car.index))
    doubled = sorted(per_car[per_car > 1].index.tolist())
    if missing:
        failures.append(f"cars without a verdict: {missing}")
    if doubled:
        failures.append(f"cars with more than one verdict: {doubled}")
    by_topic: dict[str, dict] = {"verdicts": {}, "alerts": {}, "health": {}}
    for m in received:
        t, p = m["topic"], m["payload"]
        if t == "sealant/verdicts":
            by_topic["verdicts"].setdefault(p["car_id"], []).append(p)
        elif t.startswith("sealant/alerts/"):
            by_topic["alerts"].setdefault((p["alert_id"], p["kind"]), []).append(p)
        elif t == "sealant/health":
            by_topic["health"].setdefault(p["event_id"], []).append(p)
    for v in verdicts:
        got = by_topic["verdicts"].get(v["car_id"], [])
        if not got:
            failures.append(f"verdict {v['car_id']} never reached the broker")
        elif all(stable(g) != stable(v) for g in got):
            failures.append(f"verdict {v['car_id']} reached the broker with other content")
    for a in alerts:
        if not by_topic["alerts"].get((a["alert_id"], a["kind"])):
            failures.append(f"{a['kind']} {a['alert_id']} never reached the broker")
    for h in health:
        if h["kind"] in ("mqtt_unreachable",):
            continue
        if not by_topic["health"].get(h["event_id"]):
            failures.append(f"health event {h['kind']} ({h['event_id']}) never reached the broker")
    kinds = {h["kind"] for h in health}
    for fault, want in EXPECTED_EVENTS.items():
        if not want & kinds:
            failures.append(f"{fault}: no health event ({' or '.join(sorted(want))})")
    if not any(s.get("reason", "").startswith("inspector lost") for s in status):
        failures.append("inspect was killed but no last-will 'offline' status reached a subscriber")
    beats = [m["payload"] for m in received if m["topic"] == "sealant/heartbeat"]
    if not beats or not all({"underbodies", "frames", "mqtt_queued"} <= set(b) for b in beats):
        failures.append(f"heartbeats: {len(beats)} received, each must carry the counts")
    dup = sum(len(g) - 1 for g in by_topic["verdicts"].values())
    return {
        "passed": not failures,
        "failures": failures,
        "cars": len(cars),
        "verdicts": len(verdicts),
        "alerts": len(alerts),
        "health_events": sorted(kinds),
        "broker_messages": len(received),
        "heartbeats": len(beats),
        "duplicate_verdict_messages": dup,
        "status_messages": [s.get("state") + ("/" + s["reason"] if "reason" in s else "") for s in status],
        "wall_s": round(time.monotonic() - t0, 1),
        "work": str(work),
    }
