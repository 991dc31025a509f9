"""What the WebSocket transport costs over the Unix socket, per scan handed to an HIS.

One hub, both transports (the daemon's real classes), one HIS client on each in the same event
loop: each scan goes hub → transport → client, and the time from `hub.deliver` to the client
holding the parsed event is measured. The baseline is the Unix socket in the same run; the
ratio (WebSocket / Unix socket, medians) is the number to watch. Target: ≤ 3.

    .venv/bin/python bench/bench_websocket.py [--scans 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog
from websockets.asyncio.client import connect

from scannerd.config import SocketConfig, WebSocketConfig
from scannerd.delivery.hub import Hub
from scannerd.delivery.outcomes import Outcomes
from scannerd.delivery.unix_socket import UnixSocketServer
from scannerd.delivery.websocket import WebSocketServer
from scannerd.model import Classification, DeviceInfo, ScanEvent

TOKEN = "bench-token-0123456789abcdef"
DEVICE = DeviceInfo("window-1", "serial", "outpatient", "window", "/dev/ttyACM0")
WECHAT = Classification("wechat", "payment", "wechat.v1", "high")
TARGET = 3.0


def event(i: int) -> ScanEvent:
    now = time.monotonic_ns()
    return ScanEvent(f"01BENCH{i:019d}", "2026-11-25T10:00:00.000000+08:00", DEVICE, f"1345678901{i:08d}", "qr",
                     WECHAT, 12.5, now, now + 60_000_000_000)


async def handle(transport: str, obj: dict[str, Any], sub: Any, uid: int | None) -> dict[str, Any]:
    """The command table's part, reduced to subscribe (the only command the bench sends)."""
    result = hub.subscribe(sub, obj["role"], None, False, False)
    return {"type": "reply", "cmd": obj["cmd"], "ok": True, **result}


hub: Hub


async def measure(n: int, receive: Any) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        hub.deliver(event(i))
        msg = await receive()
        assert msg["type"] == "scan", msg
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


async def main(n: int) -> int:
    global hub
    hub = Hub(Outcomes())
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        unix = UnixSocketServer(SocketConfig(path=f"{tmp}/s.sock"), hub, handle, hostname="bench", commands=[])
        ws = WebSocketServer(WebSocketConfig(listen=f"127.0.0.1:{port}", token=TOKEN, allow_no_origin=True), hub, handle,
                             hostname="bench", commands=lambda: [], metrics_text=lambda: "")
        await unix.start()
        await ws.start()
        try:
            # Unix socket HIS.
            reader, writer = await asyncio.open_unix_connection(f"{tmp}/s.sock")
            await reader.readline()
            writer.write(b'{"cmd":"subscribe","role":"his"}\n')
            await reader.readline()
            await asyncio.sleep(0.05)  # the hand-over release

            async def unix_next() -> dict[str, Any]:
                return dict(json.loads(await reader.readline()))

            unix_us = await measure(n, unix_next)
            writer.close()
            await asyncio.sleep(0.05)

            # WebSocket HIS.
            async with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as client:
                await client.recv()
                await client.send(json.dumps({"cmd": "auth", "token": TOKEN}))
                await client.recv()
                await client.send('{"cmd":"subscribe","role":"his"}')
                await client.recv()
                await asyncio.sleep(0.05)

                async def ws_next() -> dict[str, Any]:
                    return dict(json.loads(await client.recv()))

                ws_us = await measure(n, ws_next)
        finally:
            await ws.stop()
            await unix.stop()
    u, w = statistics.median(unix_us), statistics.median(ws_us)
    p99 = lambda xs: sorted(xs)[int(len(xs) * 0.99)]  # noqa: E731
    print(f"scans: {n} each")
    print(f"unix socket  median {u:7.1f} µs  p99 {p99(unix_us):7.1f} µs   (baseline)")
    print(f"websocket    median {w:7.1f} µs  p99 {p99(ws_us):7.1f} µs")
    ratio = w / u
    print(f"ratio websocket/unix: {ratio:.2f}  (target ≤ {TARGET})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=3000)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # connect/disconnect lines
    sys.exit(asyncio.run(main(parser.parse_args().scans)))
