"""The daemon's TCP listener: plain HTTP answers (the diagnostic page, /metrics) and, for
`[websocket]`, the WebSocket upgrade, on one port built on `websockets`.

Two policies live here:

- **A busy port never stops the scanners.** When the address is taken (at boot or on reload) the
  endpoint is reported `unavailable` in `status` with the error, and retried with backoff
  (1 s doubling to 60 s) until it binds or is stopped.
- **Loopback means loopback.** On a loopback bind, a request whose Host header is not a loopback
  name for this port is refused (421): a hostile page that re-points its own DNS name at
  127.0.0.1 (DNS rebinding) cannot read the page or /metrics as if it were same-origin.

No CORS headers are ever sent: a page of another origin has no business reading these answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import importlib.resources
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..config import is_loopback

log = structlog.get_logger("scannerd.http")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0

ProcessRequest = Callable[[ServerConnection, Request], Response | None]
Handler = Callable[[ServerConnection], Awaitable[None]]

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def response(status: http.HTTPStatus, body: bytes | str, content_type: str = "text/plain; charset=utf-8",
             **extra: str) -> Response:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(data))
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Connection"] = "close"
    for key, value in extra.items():
        headers[key.replace("_", "-")] = value
    return Response(status.value, status.phrase, headers, data)


@functools.cache
def _page_file(name: str) -> bytes:
    # Read once: no file I/O on the event loop per request (an upgrade restarts the daemon).
    return importlib.resources.files("scannerd.web").joinpath(name).read_bytes()


def static_page(path: str) -> Response | None:
    """The diagnostic page's files (package data, no build step, nothing from outside)."""
    found = _STATIC.get(path)
    if found is None:
        return None
    name, ctype = found
    body = _page_file(name)
    return response(http.HTTPStatus.OK, body, ctype,
                    # Its own scripts and its own WebSocket only; never framed (the inject button).
                    Content_Security_Policy="default-src 'none'; script-src 'self'; style-src 'self'; "
                                            "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
                    X_Frame_Options="DENY", Referrer_Policy="no-referrer")


def process_metrics() -> str:
    """Resident memory and open descriptors (for leak hunting), in the names client libraries use."""
    lines = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        lines += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
                  "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {rss}"]
    with contextlib.suppress(OSError):
        fds = len(os.listdir("/proc/self/fd"))
        lines += ["# HELP process_open_fds Number of open file descriptors.",
                  "# TYPE process_open_fds gauge", f"process_open_fds {fds}"]
    return "\n".join(lines) + "\n" if lines else ""


def metrics_response(render: Callable[[], str]) -> Response:
    return response(http.HTTPStatus.OK, render() + process_metrics(), "text/plain; version=0.0.4; charset=utf-8")


def host_allowed(request: Request, bind_host: str) -> bool:
    """On a loopback bind, only loopback Host names (see the module doc). Any port: an SSH
    tunnel or a local proxy may forward another one, and the name is what a rebinding page forges."""
    if not is_loopback(bind_host):
        return True
    hosts = request.headers.get_all("Host")
    if len(hosts) != 1:
        return False
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::\d{1,5})?", hosts[0])
    return m is not None and is_loopback(m.group(1).strip("[]").lower())


def metrics_only(render: Callable[[], str], bind_host: str) -> ProcessRequest:
    """`[metrics] listen`: GET /metrics and nothing else (no page, no WebSocket)."""

    def process(connection: ServerConnection, request: Request) -> Response:
        if not host_allowed(request, bind_host):
            return response(http.HTTPStatus.MISDIRECTED_REQUEST, "wrong Host for a loopback endpoint\n")
        if request.path.split("?")[0] == "/metrics":
            return metrics_response(render)
        return response(http.HTTPStatus.NOT_FOUND, "try /metrics\n")

    return process


async def _refuse(connection: ServerConnection) -> None:
    await connection.close(1008, "no WebSocket here")


# websockets logs through the standard library, which log.py renders as our own masked JSON
# lines; its per-connection chatter (handshakes refused, pings) stays below warning.
_LIB_LOG = logging.getLogger("scannerd.websockets")
_LIB_LOG.setLevel(logging.WARNING)


class HttpListener:
    """One TCP listener, kept up with backoff while its address cannot be bound."""

    def __init__(self, name: str, host: str, port: int, process_request: ProcessRequest,
                 handler: Handler | None = None, *, max_message_bytes: int = 64 * 1024) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.process_request = process_request
        self.handler = handler or _refuse
        self.max_message_bytes = max_message_bytes
        self.server: Server | None = None
        self.state = "stopped"  # stopped | listening | unavailable
        self.error = ""
        self.attempts = 0
        self._retry_task: asyncio.Task[None] | None = None

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self, initial_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> None:
        """Listen now if possible; otherwise report `unavailable` and keep trying in the
        background (initial_s, doubling up to max_s). Never raises for a busy port."""
        if not await self._bind():
            self._retry_task = asyncio.get_running_loop().create_task(self._retry(initial_s, max_s),
                                                                      name=f"{self.name}-retry")

    async def _bind(self) -> bool:
        self.attempts += 1
        try:
            self.server = await serve(
                self.handler, self.host, self.port, process_request=self.process_request,
                max_size=self.max_message_bytes, compression=None, server_header=None, logger=_LIB_LOG,
                # A send completes when the kernel took every byte: the subscriber hub paces a
                # slow reader by what is really still waiting, not by a library buffer.
                write_limit=(0, 0), max_queue=4, ping_interval=20, ping_timeout=20, close_timeout=2)
        except OSError as e:
            # asyncio wraps the errno in "error while attempting to bind on address …": the plain reason reads better.
            reason = os.strerror(e.errno) if e.errno else str(e)
            if (self.state, self.error) != ("unavailable", reason):
                # Once per change, not once per retry: a port taken for days is one log line.
                log.error(f"{self.name}_unavailable", listen=self.listen, error=reason, retrying=True,
                          scanners="unaffected")
            self.state, self.error = "unavailable", reason
            return False
        self.state, self.error = "listening", ""
        log.info(f"{self.name}_listening", listen=self.listen, attempts=self.attempts)
        return True

    async def _retry(self, delay: float, max_s: float) -> None:
        while True:
            await asyncio.sleep(delay)
            delay = min(max_s, delay * 2)
            if await self._bind():
                return

    async def stop(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            await asyncio.gather(self._retry_task, return_exceptions=True)
            self._retry_task = None
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 3.0)
            self.server = None
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "listen": self.listen, "attempts": self.attempts}
        if self.error:
            out["error"] = self.error
        return out
