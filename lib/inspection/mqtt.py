"""Verdicts and alerts on an MQTT bus (paper 8.4), with paho-mqtt: JSON payloads, QoS 1."""

from __future__ import annotations

import json


class Publisher:
    """Connects to ``HOST:PORT`` at construction (clear error if it cannot) and publishes JSON."""

    def __init__(self, address: str, client_id: str = "sealant-inspect", timeout: float = 5.0):
        import paho.mqtt.client as mqtt

        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--mqtt expects HOST:PORT, got {address!r}")
        self.timeout = timeout
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        try:
            self.client.connect(host, int(port), keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the MQTT broker at {address}: {exc}") from None
        self.client.loop_start()

    def publish(self, topic: str, payload: dict) -> None:
        info = self.client.publish(topic, json.dumps(payload), qos=1)
        info.wait_for_publish(self.timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
