"""`scannerd run` with an [mqtt] section against a real mosquitto: pty scanner → MQTT and the
socket; commands over MQTT; last will on SIGKILL; the socket keeps working with the broker down.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Client, Daemon, PtyScanner, wechat_code
from mqtt_broker import Broker
from test_mqtt import broker, payload, pki, subscriber  # noqa: F401 - the session broker fixtures

PREFIX = "his/ward-a/kiosk-7"


def write_config(tmp_path: Path, pty: PtyScanner, mqtt_port: int, role: str) -> tuple[Path, Path]:
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[site]
area = "outpatient"
[socket]
path = "{sock}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
topic_prefix = "{PREFIX}"
keepalive_s = 5
[[scanner]]
name = "kiosk-7"
path = "{pty.link}"
baudrate = 9600
role = "{role}"
terminator = "CR"
"""
    )
    return config, sock


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyScanner]:
    p = PtyScanner(tmp_path, "scanner-by-id")
    yield p
    p.close()


async def test_daemon_scan_command_and_last_will(broker: Broker, tmp_path: Path, pty: PtyScanner) -> None:  # noqa: F811
    config, sock = write_config(tmp_path, pty, broker.port, "kiosk")
    async with subscriber(broker.port, f"{PREFIX}/#") as sub:
        daemon = Daemon(config, sock)
        try:
            await asyncio.to_thread(daemon.wait_ready)
            assert (await sub.get_on(f"{PREFIX}/status", timeout=10)).payload == b"online"
            state = await sub.get_on(f"{PREFIX}/device/kiosk-7/state")
            assert payload(state) == {"type": "device", "device": "kiosk-7", "state": "present"}
            client = await asyncio.to_thread(Client, sock)
            await asyncio.to_thread(client.wait_present)
            pty.release_slave()
            # A kiosk's scan window is live only while armed: before that, a read is a reject.
            early = wechat_code()
            pty.write(f"{early}\r".encode())
            rejected = payload(await sub.get_on(f"{PREFIX}/reject/kiosk-7", timeout=10))
            assert rejected["reason"] == "not_armed" and early not in rejected["masked"]

            # Arm the kiosk over MQTT, as the kiosk's HIS does when it shows the payment page.
            await sub.client.publish(f"{PREFIX}/cmd", b'{"cmd":"arm","device":"kiosk-7","ttl_s":30,"req":"pay-1"}', qos=1)
            answer = payload(await sub.get_on(f"{PREFIX}/cmd/reply"))
            assert answer["ok"] is True and answer["cmd"] == "arm" and answer["req"] == "pay-1"

            code = wechat_code()
            pty.write(f"]Q1{code}\r".encode())
            m = await sub.get_on(f"{PREFIX}/scan/kiosk-7", timeout=10)
            event = payload(m)
            assert (event["code"], event["channel"], event["kind"], event["device"]) == (code, "wechat", "payment", "kiosk-7")
            assert m.retain is False and m.qos == 1
            on_socket = await asyncio.to_thread(client.next_of, "scan")
            assert on_socket["id"] == event["id"]
            status = await asyncio.to_thread(client.command, {"cmd": "status"})
            assert status["sinks"]["mqtt"]["state"] == "connected"
            client.close()

            daemon.signal(signal.SIGKILL)
            assert (await sub.get_on(f"{PREFIX}/status", timeout=15)).payload == b"offline"
        finally:
            daemon.stop()
    assert code not in daemon.log() and early not in daemon.log()


async def test_socket_works_while_broker_is_down_and_mqtt_catches_up(tmp_path: Path, pty: PtyScanner) -> None:
    down = Broker(tmp_path / "late", persistent=True)
    his = {"identifier": "his-late", "clean_session": False}
    with down:
        # The HIS has a persistent session, so the broker keeps what arrives before it resubscribes.
        async with subscriber(down.port, f"{PREFIX}/scan/#", **his):
            pass
    config, sock = write_config(tmp_path, pty, down.port, "window")
    daemon = Daemon(config, sock)
    try:
        await asyncio.to_thread(daemon.wait_ready)
        client = await asyncio.to_thread(Client, sock)
        await asyncio.to_thread(client.wait_present)
        pty.release_slave()
        code = wechat_code()
        pty.write(f"{code}\r".encode())
        on_socket: dict[str, Any] = await asyncio.to_thread(client.next_of, "scan")
        assert on_socket["code"] == code
        mqtt = (await asyncio.to_thread(client.command, {"cmd": "status"}))["sinks"]["mqtt"]
        assert mqtt["state"] != "connected" and mqtt["queued"] >= 1
        with down:
            async with subscriber(down.port, f"{PREFIX}/scan/#", **his) as sub:
                # Within the 60 s payment TTL, so it is published once the broker is back.
                got = payload(await sub.get(timeout=20))
        assert got["id"] == on_socket["id"] and got["code"] == code
        events = [e.get("event") for e in daemon.log_events()]
        assert events.count("mqtt.connect_failed") == 1, events
        client.close()
    finally:
        daemon.stop()
