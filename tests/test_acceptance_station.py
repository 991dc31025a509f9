"""The daemon's acceptance side as the service wires it: ledger + fleet publisher behind one object."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from acceptance_data import medical_scan

from scannerd.acceptance import read_ledger_file
from scannerd.acceptance.counts import from_json
from scannerd.acceptance.station import StationAcceptance
from scannerd.config import parse_config


async def test_scans_results_status_and_retained_counts(tmp_path: Path) -> None:
    ledger_path = tmp_path / "state" / "ledger.sqlite"
    config = parse_config({"site": {"hospital": "H37020201175", "hospital_name": "测试医院"}, "acceptance": {"ledger": str(ledger_path)}})
    held: dict[str, bytes] = {}  # what a broker would retain, per topic

    async def publish_retained(topic: str, body: bytes) -> None:
        held[topic] = body

    station = StationAcceptance(config, "kiosk-host", publish_retained=publish_retained, topic_prefix="scannerd/kiosk-host", publish_interval_s=0.05, flush_interval_s=0.05)
    await station.start()
    scan = medical_scan(random.Random(1), device="kiosk-1", role="kiosk")
    station.on_scan(scan)
    reply = station.result_command({"cmd": "result", "id": scan.id, "status": "paid", "channel": "unionpay", "medical_insurance": True, "amount_fen": 990})
    assert reply == {"ok": True}
    deadline = time.monotonic() + 30
    while station.ledger.snapshot() != _held(held) or station.status()["state"] != "ok":
        assert time.monotonic() < deadline, "the retained counts never caught up"
        await asyncio.sleep(0.02)
    status = station.status()
    assert status["state"] == "ok" and status["fleet"]["topic"] == "scannerd/kiosk-host/acceptance" and status["fleet"]["published"] >= 1
    await station.stop()
    on_disk = read_ledger_file(str(ledger_path))
    assert on_disk.station == "kiosk-host" and on_disk.hospital_name == "测试医院"
    assert sum(t.count for t in on_disk.results.values()) == 1


def _held(held: dict[str, bytes]):  # type: ignore[no-untyped-def]
    body = held.get("scannerd/kiosk-host/acceptance")
    return from_json(json.loads(body)) if body else None


async def test_without_mqtt_only_the_ledger_runs(tmp_path: Path) -> None:
    config = parse_config({"acceptance": {"ledger": str(tmp_path / "l.sqlite")}})
    station = StationAcceptance(config, "h")
    await station.start()
    assert station.publisher is None and "fleet" not in station.status()
    await station.stop()


async def test_first_retained_message_carries_the_counts_already_in_the_file(tmp_path: Path) -> None:
    from acceptance_data import write_station

    ledger_path = tmp_path / "ledger.sqlite"
    write_station(str(ledger_path), "kiosk-host", [("kiosk-1", "kiosk", "inpatient", ["medical:paid", "standard:refunded"])], random.Random(2))
    config = parse_config({"acceptance": {"ledger": str(ledger_path)}})
    held: dict[str, bytes] = {}

    async def publish_retained(topic: str, body: bytes) -> None:
        held[topic] = body

    # A long interval: only the message at start goes out during this test, no later correction.
    station = StationAcceptance(config, "kiosk-host", publish_retained=publish_retained, topic_prefix="scannerd/kiosk-host", publish_interval_s=3600)
    await station.start()
    deadline = time.monotonic() + 30
    while not held:
        assert time.monotonic() < deadline, "nothing published at start"
        await asyncio.sleep(0.02)
    first = _held(held)
    assert sum(t.count for t in first.scans.values()) == 2 and sum(t.count for t in first.results.values()) == 2
    await station.stop()
