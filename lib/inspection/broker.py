"""A local MQTT broker (amqtt, pure Python) to try the inspection loop without a plant's broker, and
the broker of its soak test: ``--record FILE`` appends every message the broker receives (one JSON
line: topic, client, payload) to FILE, so a test can check what reached the bus whoever subscribed.

    .venv/bin/python -m lib.inspection.broker --port 1883 [--record received.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

RECORD_ENV = "SEALANT_BROKER_RECORD"

try:
    from amqtt.plugins.base import BasePlugin
except ImportError:  # amqtt is a test/runtime requirement; keep the module importable without it
    BasePlugin = object  # type: ignore[assignment,misc]


class Recorder(BasePlugin):  # type: ignore[misc,valid-type]
    """amqtt plugin: every received PUBLISH appended to the file named by $SEALANT_BROKER_RECORD."""

    async def on_broker_message_received(self, *, client_id, message) -> None:
        path = os.environ.get(RECORD_ENV)
        if not path or message is None:
            return
        data = bytes(message.data or b"")
        try:
            payload = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = data.decode("utf-8", "replace")
        with open(path, "a") as fh:
            fh.write(json.dumps({"topic": message.topic, "client_id": client_id, "payload": payload}) + "\n")
            fh.flush()


def broker_config(port: int, host: str = "127.0.0.1", record: bool = False) -> dict:
    plugins = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    if record:
        plugins["lib.inspection.broker.Recorder"] = {}
    return {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}}, "plugins": plugins}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.inspection.broker", description=__doc__)
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--record", default=None, help="append every received message to this JSONL file")
    args = ap.parse_args(argv)
    if args.record:
        os.environ[RECORD_ENV] = os.path.abspath(args.record)
    from amqtt.broker import Broker

    async def serve():
        broker = Broker(broker_config(args.port, args.host, bool(args.record)))
        await broker.start()
        print(f"MQTT broker on {args.host}:{args.port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
