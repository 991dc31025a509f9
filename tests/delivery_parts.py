"""Real delivery parts for tests: a hub, the Unix socket transport, the command table, and a
client — everything but the daemon, whose part (Services) is a small stand-in here."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from scannerd.command_table import CommandContext, CommandTable
from scannerd.config import SocketConfig
from scannerd.delivery.hub import Hub
from scannerd.delivery.outcomes import DeliveryOutcome, OutcomeMetrics, Outcomes
from scannerd.delivery.unix_socket import UnixSocketServer
from scannerd.metrics import Metrics
from scannerd.model import Classification, DeviceInfo, ScanEvent

DEVICE = DeviceInfo("window-1", "serial", "outpatient", "window", "/dev/ttyACM0")
KIOSK = DeviceInfo("kiosk-2", "serial", "outpatient", "kiosk", "/dev/ttyACM1")
WECHAT = Classification("wechat", "payment", "wechat.v1", "high")

_ids = iter(range(1, 10**9))


def scan(code: str = "134567890123456789", ttl_s: float = 60, device: DeviceInfo = DEVICE, event_id: str | None = None) -> ScanEvent:
    now = time.monotonic_ns()
    return ScanEvent(event_id or f"01TEST{next(_ids):020d}", "2026-11-25T10:00:00.000000+08:00", device, code, "qr", WECHAT,
                     12.5, now, now + int(ttl_s * 1e9))


class Services:
    """The daemon's side of the command table, reduced to what delivery tests need."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.armed: list[str] = []
        self.displayed: list[tuple[str, int | None, str | None]] = []

    def status(self, ctx: CommandContext) -> dict[str, Any]:
        return {"sinks": {"socket": self.hub.counts()}}

    def devices(self) -> list[dict[str, Any]]:
        return [{"name": DEVICE.name}, {"name": KIOSK.name}]

    def metrics_json(self) -> dict[str, Any]:
        return {}

    def metrics_text(self) -> str:
        return ""

    def shapes(self) -> dict[str, Any]:
        return {"shapes": []}

    def known_device(self, name: str) -> bool:
        return name in (DEVICE.name, KIOSK.name)

    def device_names(self) -> list[str]:
        return [DEVICE.name, KIOSK.name]

    async def arm(self, device: str, ttl_s: float | None, amount_fen: int | None, voice: str | None) -> dict[str, Any]:
        self.armed.append(device)
        return {"device": device}

    async def disarm(self, device: str) -> dict[str, Any]:
        return {"device": device}

    async def display(self, device: str, amount_fen: int | None, voice: str | None) -> dict[str, Any]:
        self.displayed.append((device, amount_fen, voice))
        return {"device": device}

    def inject(self, device: str, code: str, symbology: str | None) -> dict[str, Any]:
        return {"event": {"device": device}}

    def subscribe(self, ctx: CommandContext, role: str, devices: list[str] | None, ack: bool, show_codes: bool) -> dict[str, Any]:
        assert ctx.subscriber is not None  # the table only sends subscribe from a connection
        return self.hub.subscribe(ctx.subscriber, role, devices, ack, show_codes)

    def ack(self, ctx: CommandContext, event_id: str) -> dict[str, Any]:
        assert ctx.subscriber is not None
        return self.hub.ack(ctx.subscriber, event_id)


class Rig:
    """Hub + Unix socket + command table on one path, with the outcomes recorded."""

    def __init__(self, path: Path, client_buffer_bytes: int = 64 * 1024, queue_limit: int = 256) -> None:
        self.metrics = Metrics()
        self.outcomes = Outcomes()
        self.outcomes.subscribe(OutcomeMetrics(self.metrics))
        self.seen: list[DeliveryOutcome] = []
        self.outcomes.subscribe(self.seen.append)
        self.hub = Hub(self.outcomes, client_buffer_bytes=client_buffer_bytes, queue_limit=queue_limit)
        self.services = Services(self.hub)
        self.table = CommandTable(self.services)
        self.config = SocketConfig(path=str(path), client_buffer_bytes=client_buffer_bytes)
        self.server = UnixSocketServer(self.config, self.hub, self.table.handle, hostname="h",
                                       commands=self.table.allowed("socket"))

    @property
    def path(self) -> str:
        return self.config.path

    async def __aenter__(self) -> Rig:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        await self.hub.stop()

    def delivered(self) -> float:
        return self.metrics.value("scannerd_delivered_total", {"sink": "socket"})


class AClient:
    """An asyncio client of the socket: what an HIS or a monitor does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.kept: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, path: str, role: str | None = None, **subscribe: Any) -> AClient:
        r, w = await asyncio.open_unix_connection(path, limit=1 << 20)
        c = cls(r, w)
        hello = await c.next()
        assert hello["type"] == "hello" and hello["protocol"] == 2 and hello["subscribe"] == "required"
        if role is not None:
            answer = await c.command({"cmd": "subscribe", "role": role, **subscribe})
            assert answer["ok"], answer
        return c

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        if self.kept:
            return self.kept.pop(0)
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise ConnectionError("closed")
        return json.loads(line)

    async def next_scan(self, timeout: float = 5) -> dict[str, Any]:
        while True:
            msg = await self.next(timeout)
            if msg["type"] == "scan":
                return msg

    async def quiet(self, seconds: float = 0.3) -> bool:
        """Nothing arrives within `seconds`."""
        try:
            await self.next(timeout=seconds)
        except TimeoutError:
            return True
        return False

    async def command(self, cmd: dict[str, Any], timeout: float = 5) -> dict[str, Any]:
        self.writer.write((json.dumps(cmd) + "\n").encode())
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("closed")
            msg = json.loads(line)
            if msg["type"] == "reply":
                return msg
            self.kept.append(msg)

    def close(self) -> None:
        self.writer.close()
