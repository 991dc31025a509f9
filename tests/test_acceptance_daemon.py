"""Through the real daemon: pty scanners → scans → HIS `result` over the socket and MQTT →
the ledger in the state directory → `scannerd report`; and no code at rest anywhere in it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from acceptance_data import CODE_MAKERS
from test_acceptance_at_rest import _everything_under, _leaks

from scannerd.cli import main

from helpers import Client, Daemon, PtyScanner, wait_for
from mqtt_broker import Broker
from test_mqtt import broker, payload, pki, subscriber  # noqa: F401 - the session broker fixtures

PREFIX = "scannerd/acceptance-e2e"
AIM = {"qr": "]Q1", "ean13": "]E0", "code128": "]C0"}


@pytest.fixture
def scanners(tmp_path: Path) -> Iterator[tuple[PtyScanner, PtyScanner]]:
    a, b = PtyScanner(tmp_path, "window-3-by-id"), PtyScanner(tmp_path, "window-7-by-id")
    yield a, b
    a.close()
    b.close()


def _config(tmp_path: Path, a: PtyScanner, b: PtyScanner, mqtt_port: int) -> tuple[Path, Path]:
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[site]
hospital = "H37020201175"
hospital_name = "青岛市市立医院"
area = "emergency"
[socket]
path = "{sock}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
topic_prefix = "{PREFIX}"
[[scanner]]
name = "window-3"
path = "{a.link}"
role = "window"
[[scanner]]
name = "window-7"
path = "{b.link}"
role = "window"
area = "international"
""",
        encoding="utf-8",
    )
    return config, sock


async def test_scans_and_results_through_the_daemon_leave_counts_only(
    broker: Broker, tmp_path: Path, scanners: tuple[PtyScanner, PtyScanner], capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    a, b = scanners
    config, sock = _config(tmp_path, a, b, broker.port)
    state = config.with_suffix(".state")  # STATE_DIRECTORY, as the unit gives it
    rng = random.Random()
    codes: list[str] = []
    async with subscriber(broker.port, f"{PREFIX}/cmd/reply") as sub:
        daemon = Daemon(config, sock)
        try:
            await asyncio.to_thread(daemon.wait_ready)
            client = await asyncio.to_thread(Client, sock)
            await asyncio.to_thread(client.wait_present)
            a.release_slave()
            b.release_slave()
            scans: dict[str, dict[str, object]] = {}
            for pty in (a, b):
                for name, (make, symbology) in CODE_MAKERS.items():
                    code = make(rng)
                    codes.append(code)
                    pty.write(f"{AIM[symbology]}{code}\r".encode())
                    event = await asyncio.to_thread(client.next_of, "scan")
                    assert event["code"] == code
                    scans[f"{event['device']}:{name}"] = event

            def result(scan: str, status: str, medical: bool, **extra: object) -> dict[str, object]:
                cmd = {"cmd": "result", "id": scans[scan]["id"], "status": status, "channel": "unionpay", "medical_insurance": medical, "amount_fen": 1234}
                return client.command({**cmd, **extra})

            # window-3: both kinds done (the 医保码 one refunded afterwards: refunds count).
            assert (await asyncio.to_thread(result, "window-3:unionpay", "paid", False))["ok"] is True
            assert (await asyncio.to_thread(result, "window-3:nhsa_424", "paid", True))["ok"] is True
            assert (await asyncio.to_thread(result, "window-3:nhsa_424", "refunded", True))["ok"] is True
            repeated = await asyncio.to_thread(result, "window-3:unionpay", "paid", False)
            assert repeated["ok"] is False and repeated["error"].startswith("repeated: ")
            unknown = await asyncio.to_thread(client.command, {"cmd": "result", "id": "01JZZZZZZZZZZZZZZZZZZZZZZZ", "status": "paid", "channel": "unionpay"})
            assert unknown["ok"] is False and unknown["error"].startswith("unknown: ")

            # window-7 (area override: international): its UnionPay result arrives over MQTT.
            cmd = {"cmd": "result", "req": "r-7", "id": scans["window-7:unionpay"]["id"], "status": "paid", "channel": "unionpay", "medical_insurance": False}
            await sub.client.publish(f"{PREFIX}/cmd", json.dumps(cmd).encode(), qos=1)
            answer = payload(await sub.get_on(f"{PREFIX}/cmd/reply", timeout=15))
            assert answer["ok"] is True and answer["req"] == "r-7"
            await sub.client.publish(f"{PREFIX}/cmd", json.dumps(cmd).encode(), qos=1)
            again = payload(await sub.get_on(f"{PREFIX}/cmd/reply", timeout=15))
            assert again["ok"] is False and again["error"].startswith("repeated: ")

            status = await asyncio.to_thread(client.command, {"cmd": "status"})
            assert status["acceptance"]["state"] == "ok" and status["acceptance"]["path"] == str(state / "ledger.sqlite")
            assert status["acceptance"]["scans"] == len(codes) and status["acceptance"]["results"] == 4
            # While running: the database and its WAL hold no code and no fragment of one.
            wait_for(lambda: client.command({"cmd": "status"})["acceptance"]["pending"] == 0, timeout=30)
            assert _leaks(_everything_under(state), codes) == []
            client.close()
            assert await asyncio.to_thread(main, ["status", "--socket", str(sock)]) == 0
            assert f"acceptance ledger: ok {state / 'ledger.sqlite'}: {len(codes)} scans, 4 results" in capsys.readouterr().out
        finally:
            assert daemon.stop() == 0

    blob = _everything_under(state)
    assert len(blob) > 4096 and _leaks(blob, codes) == []

    assert main(["report", "-c", str(config), "--format", "json", "--lang", "en", str(state)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["hospital"] == "H37020201175" and report["stations"] == [status["host"]]
    devices = {d["device"]: d for area in report["areas"] for d in area["devices"]}
    assert devices["window-3"]["area"] == "emergency" and devices["window-3"]["complete"] is True
    assert devices["window-3"]["kinds"]["unionpay_medical"] == {"required": True, "scans": 2, "paid": 1, "refunded": 1, "failed": 0, "done": True}
    assert devices["window-7"]["area"] == "international" and devices["window-7"]["missing"] == ["unionpay_medical"]
    assert report["complete"] is False

    # The fleet route: the daemon kept its counts retained on the broker; the report collected
    # from there is the same as the one from the ledger file.
    assert await asyncio.to_thread(main, ["report", "-c", str(config), "--format", "json", "--lang", "en",
                                          "--mqtt", f"127.0.0.1:{broker.port}", "--topic-filter", f"{PREFIX}/acceptance"]) == 0
    fleet = json.loads(capsys.readouterr().out)
    assert {**fleet, "generated": None} == {**report, "generated": None}
