"""Prometheus text over plain HTTP: GET /metrics, nothing else.

Deliberately tiny (no framework): one request per connection, no CORS headers (a browser page
has no business reading a cashier PC's metrics), bound where [metrics] listen says — loopback
unless the site chooses otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

log = structlog.get_logger("scannerd.metrics")

_MAX_REQUEST = 8192


class MetricsServer:
    def __init__(self, listen: str, render: Callable[[], str]) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.render = render
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("metrics_listening", listen=f"{self.host}:{self.port}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace").split()
        if len(head) > _MAX_REQUEST or len(request_line) < 2:
            status, body, ctype = "400 Bad Request", "bad request\n", "text/plain"
        elif request_line[0] != "GET":
            status, body, ctype = "405 Method Not Allowed", "GET only\n", "text/plain"
        elif request_line[1].split("?")[0] != "/metrics":
            status, body, ctype = "404 Not Found", "try /metrics\n", "text/plain"
        else:
            status, body, ctype = "200 OK", self.render(), "text/plain; version=0.0.4; charset=utf-8"
        data = body.encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
