"""Prometheus text over plain HTTP: GET /metrics, nothing else.

Deliberately tiny (no framework): one request per connection, no CORS headers (a browser page
has no business reading a cashier PC's metrics), bound where [metrics] listen says — loopback
unless the site chooses otherwise.

One policy at boot and on reload (`start_or_retry`): a port that cannot be bound (taken by
another program, an address not yet configured) never stops the scanners. The endpoint is
reported `unavailable` with the reason in `status()`, logged once per state change, and
retried with backoff until it listens or is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

log = structlog.get_logger("scannerd.metrics")

_MAX_REQUEST = 8192

RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 60.0


class MetricsServer:
    def __init__(self, listen: str, render: Callable[[], str]) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.listen = listen
        self.render = render
        self._server: asyncio.base_events.Server | None = None
        self._retry: asyncio.Task[None] | None = None
        self.state = "stopped"  # stopped | listening | unavailable
        self.error = ""
        self.attempts = 0

    async def start(self) -> None:
        """Listen now; raises OSError when the address cannot be bound."""
        self.attempts += 1
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.state, self.error = "listening", ""
        log.info("metrics_listening", listen=self.listen, attempts=self.attempts)

    async def start_or_retry(self, initial_s: float = RETRY_INITIAL_S, max_s: float = RETRY_MAX_S) -> None:
        """Listen now if possible; otherwise report `unavailable` and keep trying in the
        background (initial_s, doubling up to max_s). Never raises for a busy port."""
        try:
            await self.start()
        except OSError as e:
            self._unavailable(e)
            self._retry = asyncio.create_task(self._retry_loop(initial_s, max_s), name="metrics-retry")

    async def _retry_loop(self, delay: float, max_s: float) -> None:
        while True:
            await asyncio.sleep(delay)
            delay = min(max_s, delay * 2)
            try:
                await self.start()
                return
            except OSError as e:
                self._unavailable(e)

    def _unavailable(self, e: OSError) -> None:
        reason = e.strerror or str(e)
        if (self.state, self.error) != ("unavailable", reason):
            # Once per change, not once per retry: a port taken for days is one log line.
            log.error("metrics_unavailable", listen=self.listen, error=reason, retrying=True)
        self.state, self.error = "unavailable", reason

    def status(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {"state": self.state, "listen": self.listen, "attempts": self.attempts}
        if self.error:
            out["error"] = self.error
        return out

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        self.state = "stopped"

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
