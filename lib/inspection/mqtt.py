"""Verdicts, alerts and health events on an MQTT bus (paper 8.4), with paho-mqtt: JSON, QoS 1.

Inspection never waits for the broker. ``Publisher.publish`` appends the message to a bounded
outbox on disk (``<out>/mqtt/outbox.jsonl``) and returns; one sender thread delivers the outbox in
order, one message at a time, each until the broker acknowledges it (QoS 1). When the broker goes
away the sender waits and paho reconnects with backoff; a restart of ``inspect`` finds the unsent
messages in the outbox and delivers them first. A message may arrive twice (QoS 1 is at least
once); every payload carries ``car_id`` or ``event_id`` for the subscriber to de-duplicate.

Topics: ``sealant/verdicts``, ``sealant/alerts/<robot>``, ``sealant/health`` (warnings, faults),
``sealant/heartbeat`` (counts, every ``heartbeat_s``) and ``sealant/status`` (retained: ``online``
on connect, ``offline`` on a clean stop, and ``offline`` from the broker as the last will when the
inspector vanishes without one).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

from lib.fileio import write_json

STATUS_TOPIC = "sealant/status"
HEALTH_TOPIC = "sealant/health"
HEARTBEAT_TOPIC = "sealant/heartbeat"


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--mqtt expects HOST:PORT, got {address!r}")
    return host, int(port)


class Outbox:
    """An ordered, bounded queue of messages persisted in ``directory`` (append-only log + acked mark).

    ``outbox.jsonl`` holds one ``{"seq", "topic", "payload"}`` per line; ``acked.json`` the highest
    delivered ``seq``. On open, the log is compacted to its unacknowledged tail (atomically)."""

    def __init__(self, directory, max_messages: int = 10000):
        if max_messages < 1:
            raise ValueError(f"the MQTT outbox needs room for >= 1 message, got {max_messages}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log, self.mark = self.dir / "outbox.jsonl", self.dir / "acked.json"
        self.max = max_messages
        self.lock = threading.Lock()
        self.dropped = 0
        acked = json.loads(self.mark.read_text())["seq"] if self.mark.is_file() else -1
        pending = []
        if self.log.is_file():
            for line in self.log.read_text().splitlines():
                try:
                    m = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: never acknowledged, never sent
                    continue
                if m["seq"] > acked:
                    pending.append(m)
        self.pending = collections.deque(pending)
        self.next_seq = max([acked, *(m["seq"] for m in pending)]) + 1
        self.acked = acked
        tmp = self.log.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in pending))
        tmp.replace(self.log)
        self._fh = open(self.log, "a")  # noqa: SIM115 - kept open for appends, closed in close()

    def put(self, topic: str, payload: dict) -> None:
        with self.lock:
            m = {"seq": self.next_seq, "topic": topic, "payload": payload}
            self.next_seq += 1
            self._fh.write(json.dumps(m) + "\n")
            self._fh.flush()
            self.pending.append(m)
            while len(self.pending) > self.max:  # the oldest goes; it stays in verdicts/alerts.jsonl
                self._ack_locked(self.pending.popleft()["seq"])
                self.dropped += 1

    def peek(self) -> dict | None:
        with self.lock:
            return self.pending[0] if self.pending else None

    def ack(self, seq: int) -> None:
        with self.lock:
            if self.pending and self.pending[0]["seq"] == seq:
                self.pending.popleft()
            self._ack_locked(seq)

    def _ack_locked(self, seq: int) -> None:
        self.acked = max(self.acked, seq)
        write_json(self.mark, {"seq": self.acked})

    def __len__(self) -> int:
        return len(self.pending)

    def close(self) -> None:
        self._fh.close()


class Publisher:
    """Queue messages for a broker at ``HOST:PORT``; deliver them in order from a thread, reconnecting.

    ``status``: called for the heartbeat's counts. ``on_event(kind, message)``: told when the
    connection is lost or back (the inspector turns these into health events)."""

    def __init__(
        self,
        address: str,
        outbox_dir,
        client_id: str = "sealant-inspect",
        heartbeat_s: float = 30.0,
        status=None,
        on_event=None,
        ack_timeout: float = 5.0,
        max_messages: int = 10000,
    ):
        import paho.mqtt.client as mqtt

        self.host, self.port = parse_address(address)
        self.address = address
        self.outbox = Outbox(outbox_dir, max_messages)
        self.heartbeat_s = heartbeat_s
        self.status = status or (lambda: {})
        self.on_event = on_event or (lambda kind, message: None)
        self.ack_timeout = ack_timeout
        self.client_id = client_id
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.delivered = 0
        self.ever_connected = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.will_set(
            STATUS_TOPIC,
            json.dumps({"state": "offline", "reason": "inspector lost (last will)", "client_id": client_id}),
            qos=1,
            retain=True,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=8)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self.thread.start()

    # paho callbacks (its network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if getattr(reason_code, "is_failure", False):
            return
        client.publish(
            STATUS_TOPIC, json.dumps({"state": "online", "client_id": self.client_id}), qos=1, retain=True
        )
        if self.ever_connected:
            self.on_event("mqtt_reconnected", f"MQTT broker {self.address} reachable again")
        self.ever_connected = True
        self.connected.set()
        self.wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self.stopping.is_set():
            self.on_event(
                "mqtt_disconnected",
                f"MQTT broker {self.address} lost ({reason_code}); buffering messages and reconnecting",
            )

    def publish(self, topic: str, payload: dict) -> None:
        """Queue (never blocks on the network)."""
        self.outbox.put(topic, payload)
        self.wake.set()

    def _run(self):
        next_beat = time.monotonic() + self.heartbeat_s
        while not self.stopping.is_set() or (self.connected.is_set() and len(self.outbox)):
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.heartbeat_s
                if self.connected.is_set():
                    beat = {
                        **self.status(),
                        "mqtt_queued": len(self.outbox),
                        "mqtt_dropped": self.outbox.dropped,
                    }
                    self.client.publish(HEARTBEAT_TOPIC, json.dumps(beat), qos=0)
            m = self.outbox.peek()
            if m is None or not self.connected.is_set():
                self.wake.wait(min(0.5, self.heartbeat_s))
                self.wake.clear()
                continue
            try:
                info = self.client.publish(m["topic"], json.dumps(m["payload"]), qos=1)
                info.wait_for_publish(self.ack_timeout)
                ok = info.is_published()
            except (RuntimeError, ValueError, OSError):  # not connected (any more): wait, then again
                ok = False
            if ok:
                self.outbox.ack(m["seq"])
                self.delivered += 1
            else:
                self.connected.wait(0.5)

    def close(self, drain_s: float = 10.0) -> dict:
        """Deliver what is queued (up to ``drain_s``), say offline, disconnect. Unsent messages stay
        in the outbox for the next start. Returns the counts."""
        deadline = time.monotonic() + drain_s
        while len(self.outbox) and self.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stopping.set()
        self.wake.set()
        self.thread.join(2.0)
        if self.connected.is_set():
            info = self.client.publish(
                STATUS_TOPIC,
                json.dumps({"state": "offline", "reason": "stopped", "client_id": self.client_id}),
                qos=1,
                retain=True,
            )
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self.outbox.close()
        return {"delivered": self.delivered, "unsent": len(self.outbox), "dropped": self.outbox.dropped}
