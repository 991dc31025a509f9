"""The socket sink on a real Unix socket: protocol v1, many clients, slow clients, TTL queue."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from scannerd.config import SocketConfig
from scannerd.metrics import Metrics
from scannerd.model import Classification, DeviceInfo, RejectEvent, ScanEvent
from scannerd.protocol import reply
from scannerd.sinks.socket import SocketInUse, SocketSink

DEVICE = DeviceInfo("window-1", "serial", "outpatient", "window", "/dev/ttyACM0")
WECHAT = Classification("wechat", "payment", "wechat.v1", "high")


def scan(code: str = "134567890123456789", ttl_s: float = 60, device: DeviceInfo = DEVICE) -> ScanEvent:
    now = time.monotonic_ns()
    return ScanEvent("01TEST", "2026-11-25T10:00:00.000000+08:00", device, code, "qr", WECHAT, 12.5, now, now + int(ttl_s * 1e9))


async def echo_commands(cmd: dict[str, Any]) -> dict[str, Any]:
    return reply(cmd["cmd"], True, echoed=cmd)


class AClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, path: str) -> AClient:
        r, w = await asyncio.open_unix_connection(path)
        c = cls(r, w)
        hello = await c.next()
        assert hello["type"] == "hello" and hello["protocol"] == 1
        return c

    async def next(self, timeout: float = 3) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise ConnectionError("closed")
        return json.loads(line)

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.writer.write((json.dumps(cmd) + "\n").encode())
        while True:
            msg = await self.next()
            if msg["type"] == "reply":
                return msg


@pytest.fixture
async def sink(tmp_path: Path):
    metrics = Metrics()
    s = SocketSink(SocketConfig(path=str(tmp_path / "s.sock"), client_buffer_bytes=64 * 1024), hostname="h", metrics=metrics, on_command=echo_commands)
    await s.start()
    yield s
    await s.stop()


async def test_socket_mode_and_hello(sink: SocketSink) -> None:
    assert stat.S_IMODE(os.stat(sink.config.path).st_mode) == 0o660
    c = await AClient.connect(sink.config.path)
    assert sink.status()["clients"] == 1
    c.writer.close()


async def test_scan_reaches_every_client_with_latency(sink: SocketSink) -> None:
    a = await AClient.connect(sink.config.path)
    b = await AClient.connect(sink.config.path)
    sink.deliver(scan())
    for c in (a, b):
        msg = await c.next()
        assert msg["type"] == "scan" and msg["channel"] == "wechat" and msg["code"] == "134567890123456789"
        assert msg["latency"]["scan_ms"] == 12.5 and msg["latency"]["pipeline_us"] >= 0
    assert sink.metrics.value("scannerd_delivered_total", {"sink": "socket"}) == 1


async def test_reject_event_shape(sink: SocketSink) -> None:
    a = await AClient.connect(sink.config.path)
    sink.deliver(RejectEvent("2026-11-25T10:00:00+08:00", "window-1", "non_printable", "12**34"))
    msg = await a.next()
    assert msg == {"type": "reject", "ts": "2026-11-25T10:00:00+08:00", "device": "window-1", "reason": "non_printable", "masked": "12**34"}


async def test_commands_and_bad_lines(sink: SocketSink) -> None:
    a = await AClient.connect(sink.config.path)
    r = await a.command({"cmd": "status"})
    assert r["ok"] and r["echoed"] == {"cmd": "status"}
    a.writer.write(b"not json\n")
    r = await a.next()
    assert r["type"] == "reply" and not r["ok"] and "JSON" in r["error"]
    r = await a.command({"cmd": "reboot"})
    assert not r["ok"] and "unknown cmd" in r["error"]


async def test_subscribe_filters_devices(sink: SocketSink) -> None:
    a = await AClient.connect(sink.config.path)
    assert (await a.command({"cmd": "subscribe", "devices": ["kiosk-2"]}))["ok"]
    sink.deliver(scan())  # window-1: not for this client, and with a subscriber missing it queues
    kiosk = DeviceInfo("kiosk-2", "evdev", "outpatient", "kiosk")
    sink.deliver(scan("250000000000000001", device=kiosk))
    msg = await a.next()
    assert msg["device"] == "kiosk-2"


async def test_client_that_never_reads_is_dropped_and_others_keep_receiving(sink: SocketSink) -> None:
    # A raw socket with a tiny receive buffer that never reads: the kernel buffer fills, then
    # the per-client user-space buffer (64 KiB here), then the sink drops it.
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(sink.config.path)
    good = await AClient.connect(sink.config.path)
    await asyncio.sleep(0.05)
    assert sink.status()["clients"] == 2
    got = 0
    for i in range(3000):
        sink.deliver(scan(f"1345678901234{i:05d}"))
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the good client's reads run
            while True:
                try:
                    await good.next(timeout=0.001)
                    got += 1
                except TimeoutError:
                    break
        if sink.status()["clients"] == 1:
            break
    assert sink.status()["clients"] == 1, "the client that never reads was not dropped"
    assert sink.metrics.total("scannerd_client_disconnects_total") == 1
    # The good client still gets new events.
    sink.deliver(scan("139999999999999999"))
    while True:
        msg = await good.next()
        if msg["code"] == "139999999999999999":
            break
    stuck.close()


async def test_no_subscriber_queues_until_ttl_then_drops(sink: SocketSink) -> None:
    sink.deliver(scan("134567890123450001", ttl_s=0.2))
    sink.deliver(scan("134567890123450002", ttl_s=30))
    assert sink.status()["queued"] == 2
    await asyncio.sleep(0.35)
    assert sink.status()["queued"] == 1
    assert sink.metrics.value("scannerd_expired_total", {"sink": "socket"}) == 1
    c = await AClient.connect(sink.config.path)
    msg = await c.next()
    assert msg["code"] == "134567890123450002"
    assert sink.status()["queued"] == 0


async def test_stale_socket_replaced_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    first = SocketSink(SocketConfig(path=str(path)), hostname="h", metrics=Metrics(), on_command=echo_commands)
    await first.start()
    second = SocketSink(SocketConfig(path=str(path)), hostname="h", metrics=Metrics(), on_command=echo_commands)
    with pytest.raises(SocketInUse):
        await second.start()
    await first.stop()
    assert not path.exists()


async def test_regular_file_at_socket_path_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_text("important")
    s = SocketSink(SocketConfig(path=str(path)), hostname="h", metrics=Metrics(), on_command=echo_commands)
    with pytest.raises(SocketInUse, match="not a socket"):
        await s.start()
    assert path.read_text() == "important"


async def test_a_control_client_never_takes_queued_scans(sink: SocketSink) -> None:
    sink.deliver(scan("134567890123450003", ttl_s=30))
    cli = await AClient.connect(sink.config.path)
    assert (await cli.command({"cmd": "status"}))["ok"]  # `scannerd status` while the HIS is away
    await asyncio.sleep(0.3)
    assert sink.status()["queued"] == 1
    his = await AClient.connect(sink.config.path)  # the HIS reconnects and gets it
    msg = await his.next()
    assert msg["code"] == "134567890123450003"
    assert sink.status()["queued"] == 0
    with pytest.raises(asyncio.TimeoutError):
        await cli.next(timeout=0.3)


async def test_subscribe_takes_only_its_devices_queued_scans(sink: SocketSink) -> None:
    kiosk = DeviceInfo("kiosk-2", "evdev", "outpatient", "kiosk")
    sink.deliver(scan("134567890123450004", ttl_s=30))
    sink.deliver(scan("250000000000000005", ttl_s=30, device=kiosk))
    c = await AClient.connect(sink.config.path)
    c.writer.write(b'{"cmd":"subscribe","devices":["kiosk-2"]}\n')
    first = await c.next()
    second = await c.next()
    got = {m["type"]: m for m in (first, second)}
    assert got["scan"]["device"] == "kiosk-2" and got["reply"]["ok"]
    assert sink.status()["queued"] == 1  # window-1's scan still waits for its own HIS


async def test_a_scan_no_client_could_take_is_queued_not_counted_delivered(sink: SocketSink) -> None:
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(sink.config.path)
    await asyncio.sleep(0.3)  # past the handover: it is a subscriber
    delivered_before = None
    for i in range(5000):
        delivered_before = sink.metrics.value("scannerd_delivered_total", {"sink": "socket"})
        sink.deliver(scan(f"1345678901234{i:05d}"))
        await asyncio.sleep(0)
        if sink.status()["clients"] == 0:
            break
    assert sink.status()["clients"] == 0
    # The scan that found the client stuck was not counted delivered; it waits in the queue.
    assert sink.metrics.value("scannerd_delivered_total", {"sink": "socket"}) == delivered_before
    assert sink.status()["queued"] == 1
    stuck.close()


async def test_a_scan_past_its_ttl_is_never_delivered(sink: SocketSink) -> None:
    his = await AClient.connect(sink.config.path)
    await asyncio.sleep(0.3)
    stale = scan("134567890123450007", ttl_s=30)
    stale = ScanEvent(stale.id, stale.ts, stale.device, stale.code, stale.symbology, stale.classification,
                      stale.scan_ms, stale.completed_ns, time.monotonic_ns() - 1)
    sink.deliver(stale)
    with pytest.raises(asyncio.TimeoutError):
        await his.next(timeout=0.3)
    assert sink.metrics.value("scannerd_expired_total", {"sink": "socket"}) == 1


async def test_an_his_that_starts_with_arm_is_a_subscriber(sink: SocketSink) -> None:
    sink.deliver(scan("134567890123450008", ttl_s=30))
    his = await AClient.connect(sink.config.path)
    his.writer.write(b'{"cmd":"arm","device":"kiosk-1","ttl_s":60}\n')
    got = [await his.next(), await his.next()]
    assert {m["type"] for m in got} == {"reply", "scan"}
    assert sink.status()["queued"] == 0
