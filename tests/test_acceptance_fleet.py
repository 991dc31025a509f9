"""Fleet view: three stations publish retained counts to one real mosquitto; `report --mqtt`
gives the same report as the ledger files copied into one directory."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import aiomqtt
import pytest
from acceptance_data import MIXED, Plan, feed, unionpay_scan

from scannerd.acceptance import Ledger
from scannerd.acceptance.fleet import FleetPublisher, acceptance_topic, payload
from scannerd.cli import main
from scannerd.config import AcceptanceConfig, SiteConfig

from mqtt_broker import Broker

SITE = SiteConfig(hospital="H37020201175", hospital_name="青岛市市立医院")


async def _until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def _station(broker: Broker, directory: Path, station: str, plan: Plan, rng: random.Random) -> tuple[int, int]:
    """One station: its ledger, its fleet publisher on its own MQTT connection, a day of scans.
    Returns (messages published, scans fed)."""
    path = str(directory / f"{station}.sqlite")
    ledger = Ledger(path, station=station, site=SITE, acceptance=AcceptanceConfig(ledger=path), flush_interval_s=0.05)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"test-{station}") as client:

        async def publish(topic: str, body: bytes) -> None:
            await client.publish(topic, body, qos=1, retain=True)

        publisher = FleetPublisher(ledger.snapshot, publish, acceptance_topic(f"scannerd/{station}"), min_interval_s=1.0)
        ledger.add_listener(publisher.notify)
        ledger.start()
        await publisher.start()
        feed(ledger, plan, rng)
        # A burst of 150 more scans: debounced into a few messages, not 150.
        for _ in range(150):
            ledger.on_scan(unionpay_scan(rng, device=plan[0][0], role=plan[0][1], area=plan[0][2]))
        await _until(lambda: publisher.last_payload == payload(ledger.snapshot()))
        await publisher.stop()
        ledger.stop()
        return publisher.published, len(plan) + 150


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Broker(tmp_path / "broker", users={"tech": "s3cret-pw"})
    b.start()
    yield b
    b.stop()


def test_three_stations_over_mqtt_match_the_directory_report(broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stations_dir = tmp_path / "copied"
    stations_dir.mkdir()
    rng = random.Random(21)

    async def day() -> list[tuple[int, int]]:
        return list(await asyncio.gather(*(_station(broker, stations_dir, s, plan, rng) for s, plan in MIXED.items())))

    published = asyncio.run(day())
    for messages, scans in published:
        assert 1 <= messages < scans // 10, published  # debounced: far fewer messages than changes

    async def stranger() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.publish("scannerd/printer/acceptance", b"not json", qos=1, retain=True)

    asyncio.run(stranger())

    config = tmp_path / "config.toml"
    config.write_text('[site]\nhospital = "H37020201175"\nhospital_name = "青岛市市立医院"\n', encoding="utf-8")
    base = ["report", "-c", str(config), "--lang", "en"]

    assert main([*base, "--format", "json", str(stations_dir)]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    assert main([*base, "--format", "json", "--mqtt", f"127.0.0.1:{broker.port}", "--wait", "1"]) == 0
    captured = capsys.readouterr()
    from_mqtt = json.loads(captured.out)
    assert "skipped scannerd/printer/acceptance" in captured.err
    from_dir.pop("generated"), from_mqtt.pop("generated")
    assert from_mqtt == from_dir
    assert from_mqtt["stations"] == ["station-a", "station-b", "station-c"] and from_mqtt["complete"] is False

    # The table a technician reads, both ways, and through the password listener with auth options.
    assert main([*base, str(stations_dir)]) == 0
    table_dir = capsys.readouterr().out
    password_file = tmp_path / "mqtt.pw"
    password_file.write_text("s3cret-pw\n")
    password_file.chmod(0o600)
    mqtt_args = ["--mqtt", f"127.0.0.1:{broker.auth_port}", "--username", "tech", "--password-file", str(password_file), "--wait", "1"]
    assert main([*base, *mqtt_args]) == 0
    table_mqtt = capsys.readouterr().out
    assert table_mqtt == table_dir and "== Emergency: missing ==" in table_mqtt

    password_file.write_text("wrong\n")
    assert main([*base, *mqtt_args]) == 1
    assert "cannot read scannerd/+/acceptance" in capsys.readouterr().err


def test_report_mqtt_unreachable_broker_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mqtt_broker import free_port

    assert main(["report", "--mqtt", f"127.0.0.1:{free_port()}", "--wait", "0.5"]) == 1
    assert "error: cannot read scannerd/+/acceptance from 127.0.0.1:" in capsys.readouterr().err
