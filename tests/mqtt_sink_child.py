"""Run only the MQTT sink in a process of its own, for the SIGKILL / last-will test.

    python tests/mqtt_sink_child.py HOST PORT PREFIX

Connects, publishes one scan, prints `ready <published>` once its PUBACK came, then waits to be
killed. Used where the whole daemon is more than the test needs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from scannerd.config import MqttConfig
from scannerd.metrics import Metrics
from scannerd.model import Classification, DeviceInfo, ScanEvent
from scannerd.sinks.mqtt import MqttSink


async def main(host: str, port: int, prefix: str) -> None:
    sink = MqttSink(
        MqttConfig(host=host, port=port, topic_prefix=prefix, keepalive_s=5),
        hostname="child",
        metrics=Metrics(),
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    await sink.start()
    now = time.monotonic_ns()
    sink.deliver(
        ScanEvent(
            id="child-1",
            ts="2026-11-25T10:00:00.000000+08:00",
            device=DeviceInfo("kiosk-1", "inject", "outpatient", "kiosk"),
            code="134567890123456789",
            symbology="qr",
            classification=Classification("wechat", "payment", "wechat.v1", "high"),
            scan_ms=20.0,
            completed_ns=now,
            expires_ns=now + 60_000_000_000,
        )
    )
    deadline = time.monotonic() + 10
    while sink.status()["published"] < 1:
        if time.monotonic() > deadline:
            print(f"not ready: {sink.status()}", flush=True)
            sys.exit(2)
        await asyncio.sleep(0.01)
    print(f"ready {sink.status()['published']}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    # stdout carries only the `ready` line the test waits for.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
