"""The protocol over a loopback WebSocket, for browser HIS and the diagnostic page.

A thin transport like the Unix socket: each connection is a Peer of the subscriber hub and a
caller of the command table; one JSON object per text message, the same objects as the socket's
lines. What is left here is what a browser needs:

- **Origin**, checked before the upgrade: exactly one of `allowed_origins`, or the listener's own
  page (http://127.0.0.1:PORT and the other loopback names); no Origin only with
  `allow_no_origin`. Anything else gets 403 and never a WebSocket.
- **Token**, in the first message: `{"cmd":"auth","token":"…"}` (compared in constant time).
  Before it the client gets `hello` and nothing else; any other first message, a wrong token or
  silence for 10 s closes the connection (1008). Wrong tokens are rate-limited for everyone: a
  bucket of 5 failures refills one every 2 s, and while it is empty every `auth` is refused
  without being compared, so guessing costs at least 2 s a try however many connections try.
  (Not the Sec-WebSocket-Protocol header: it shows in proxies' logs and DevTools' headers.)
- **Pacing**: the library's `send` is a coroutine; the Peer's `write` enqueues into a
  per-connection queue that one sender task drains, `buffered()` is what waits there plus the
  kernel-bound bytes, and `on_writable` fires when it has drained — so the hub paces an HIS and
  drops a monitor that does not read, exactly as on the socket, without waiting on anyone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import http
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..config import WebSocketConfig, is_loopback
from ..protocol import ProtocolError, decode_command, dumps, hello, reply
from .http_listener import HttpListener, host_allowed, metrics_response, response, static_page
from .hub import Hub, Subscriber

log = structlog.get_logger("scannerd.websocket")

PATH = "/ws"
MAX_MESSAGE = 64 * 1024
AUTH_TIMEOUT_S = 10.0
AUTH_BURST = 5
AUTH_REFILL_S = 2.0

WEBSOCKET = "websocket"

# The command table's `handle(transport, command, subscriber, peer_uid)`: the transport says who
# sent a message; what it means is decided there.
Dispatch = Callable[[str, dict[str, Any], Subscriber, int | None], Awaitable[dict[str, Any]]]


class AuthLimiter:
    """A token bucket of failed authentications, shared by every connection."""

    def __init__(self, burst: int = AUTH_BURST, refill_s: float = AUTH_REFILL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.refill_s, self.clock = burst, refill_s, clock
        self._level = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self._level = min(self.burst, self._level + (now - self._at) / self.refill_s)
        self._at = now

    def wait_s(self) -> float:
        """0 when an attempt may be checked now; otherwise seconds until one may."""
        self._refill()
        return 0.0 if self._level >= 1 else (1 - self._level) * self.refill_s

    def failed(self) -> None:
        self._refill()
        self._level = max(0.0, self._level - 1)


class _WebSocketPeer:
    """A WebSocket connection as the hub sees it (see the module doc, "Pacing")."""

    def __init__(self, connection: ServerConnection, description: str) -> None:
        self.connection = connection
        self.description = description
        self._queue: collections.deque[tuple[str, int]] = collections.deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._writable: list[Callable[[], None]] = []
        self._closed = False
        self._close_with = (1000, "")
        self.sender = asyncio.get_running_loop().create_task(self._send_all())

    def write(self, data: bytes) -> bool:
        if self._closed or self.connection.state is not State.OPEN:
            return False  # closing (our side or theirs): nothing written, nothing to count
        # One message per JSON line. Split on b"\n" only: str.splitlines() also cuts at U+2028
        # and friends, which JSON leaves unescaped inside strings.
        for line in data.split(b"\n"):
            if line:
                self._queue.append((line.decode("utf-8"), len(line) + 1))
        self._queued_bytes += len(data)
        self._wake.set()
        return True

    def buffered(self) -> int:
        transport = self.connection.transport
        return self._queued_bytes + (0 if transport is None else transport.get_write_buffer_size())

    def on_writable(self, callback: Callable[[], None]) -> None:
        self._writable.append(callback)
        self._wake.set()

    def close(self, why: str | None) -> None:
        if why:
            self._closed = True
            self._queue.clear()
            self._queued_bytes = 0
            self.connection.transport.abort()  # its unread backlog is not worth waiting for
        else:
            self.finish(1000, "")

    def finish(self, code: int, reason: str) -> None:
        """Close once what is queued has gone out (a refusal's reply first, then the close)."""
        if not self._closed:
            self._closed = True
            self._close_with = (code, reason[:120])
            self._wake.set()

    async def _send_all(self) -> None:
        try:
            while True:
                while not self._queue:
                    if self._closed:
                        await self.connection.close(*self._close_with)
                        return
                    if self._writable:
                        await self.connection.drain()  # nothing queued: wait for the kernel to take the rest
                        callbacks, self._writable = self._writable, []
                        for callback in callbacks:
                            callback()
                        continue
                    self._wake.clear()
                    await self._wake.wait()
                text, size = self._queue.popleft()
                try:
                    await self.connection.send(text)
                finally:
                    self._queued_bytes = max(0, self._queued_bytes - size)
        except ConnectionClosed:
            pass


class WebSocketServer:
    name = "websocket"

    def __init__(self, config: WebSocketConfig, hub: Hub, dispatch: Dispatch, *, hostname: str,
                 commands: Callable[[], list[str]], metrics_text: Callable[[], str]) -> None:
        self.config = config
        self.hub = hub
        self.dispatch = dispatch
        self.hostname = hostname
        self.commands = commands
        self.metrics_text = metrics_text
        self.limiter = AuthLimiter()
        self.connections: dict[ServerConnection, Subscriber | None] = {}
        self.listener = HttpListener("websocket", config.host, config.port, self._process_request, self._serve,
                                     max_message_bytes=MAX_MESSAGE)

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        # Out of the hub together first, so what one HIS held never goes to another that is
        # closing too; then the listener closes every connection (1001).
        self.hub.detach_all([sub for sub in self.connections.values() if sub is not None])
        await self.listener.stop()

    def reconfigure(self, config: WebSocketConfig) -> None:
        """Same address, new settings: new origins and inject rights apply to what comes next;
        a new token also closes the sessions the old one opened."""
        assert config.listen == self.config.listen
        old, self.config = self.config, config
        if config.token != old.token:
            sessions = [sub for sub in self.connections.values() if sub is not None]
            for sub in sessions:
                if isinstance(sub.peer, _WebSocketPeer):
                    sub.peer.finish(1008, "the token was changed; authenticate again")
            # Now, not when the closes complete, and all together: nothing more is written to
            # them, and what one held never goes to another that is closing too.
            self.hub.detach_all(sessions)

    def status(self) -> dict[str, Any]:
        authenticated = sum(1 for sub in self.connections.values() if sub is not None)
        return {**self.listener.status(), "connections": len(self.connections), "authenticated": authenticated}

    # --- before the upgrade -------------------------------------------------------------------

    def allowed_origins(self) -> set[str]:
        port = self.config.port
        own = {f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"}
        if is_loopback(self.config.host) and self.config.host not in ("localhost", "::1"):
            own.add(f"http://{self.config.host}:{port}")
        return own | set(self.config.allowed_origins)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not host_allowed(request, self.config.host):
            return self._refused(request, http.HTTPStatus.MISDIRECTED_REQUEST, "wrong Host for a loopback endpoint")
        path = request.path.split("?")[0]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if path == "/metrics":
                return metrics_response(self.metrics_text)
            return static_page(path) or response(http.HTTPStatus.NOT_FOUND, "not found: try / or /metrics\n")
        if path != PATH:
            return self._refused(request, http.HTTPStatus.NOT_FOUND, f"the WebSocket is at {PATH}")
        origins = request.headers.get_all("Origin")
        if len(origins) > 1:
            return self._refused(request, http.HTTPStatus.FORBIDDEN, "more than one Origin header")
        origin = origins[0] if origins else None
        if origin is None and not self.config.allow_no_origin:
            return self._refused(request, http.HTTPStatus.FORBIDDEN,
                                 "no Origin header (allow_no_origin = true admits non-browser clients)")
        if origin is not None and origin not in self.allowed_origins():
            return self._refused(request, http.HTTPStatus.FORBIDDEN, f"origin {origin[:100]!r} is not in allowed_origins")
        if len(self.connections) >= self.config.max_clients:
            return self._refused(request, http.HTTPStatus.SERVICE_UNAVAILABLE,
                                 f"too many connections ({self.config.max_clients}); raise [websocket] max_clients")
        return None

    @staticmethod
    def _refused(request: Request, status: http.HTTPStatus, why: str) -> Response:
        log.warning("websocket_refused", status=status.value, why=why, origin=",".join(request.headers.get_all("Origin"))[:100])
        return response(status, why + "\n")

    # --- a connection ---------------------------------------------------------------------------

    async def _serve(self, connection: ServerConnection) -> None:
        origin = ",".join(connection.request.headers.get_all("Origin")) if connection.request else ""
        peer = _WebSocketPeer(connection, f"websocket {connection.remote_address!r} origin={origin[:100] or 'none'}")
        self.connections[connection] = None
        try:
            peer.write(dumps({**hello(self.hostname, self.commands()), "auth": "required"}))
            if not await self._authenticate(connection, peer):
                return
            sub = self.hub.attach(peer)
            self.connections[connection] = sub
            log.info("client_connected", peer=peer.description, transport=WEBSOCKET)
            try:
                await self._read_commands(connection, sub)
            finally:
                self.hub.detach(sub)
                log.info("client_disconnected", peer=peer.description, transport=WEBSOCKET)
        except ConnectionClosed:
            pass
        finally:
            self.connections.pop(connection, None)
            peer.close(None)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(peer.sender, 3.0)

    async def _authenticate(self, connection: ServerConnection, peer: _WebSocketPeer) -> bool:
        try:
            message = await asyncio.wait_for(connection.recv(), AUTH_TIMEOUT_S)
        except TimeoutError:
            await self._refuse(peer, "?", "no auth within 10 s", None)
            return False
        tag: str | None = None
        try:
            obj = decode_command(message.encode() if isinstance(message, str) else message)
        except ProtocolError as e:
            await self._refuse(peer, "?", f"authenticate first: {e}", None)
            return False
        if isinstance(obj.get("req"), str):
            tag = obj["req"][:64]
        if obj.get("cmd") != "auth":
            await self._refuse(peer, obj["cmd"][:64], 'authenticate first: send {"cmd":"auth","token":"…"}', tag)
            return False
        token = obj.get("token")
        if not isinstance(token, str) or set(obj) - {"cmd", "token", "req"}:
            await self._refuse(peer, "auth", '"token" must be a string (and auth takes nothing else)', tag)
            return False
        wait = self.limiter.wait_s()
        if wait > 0:
            await self._refuse(peer, "auth", f"too many bad tokens; try again in {math.ceil(wait)} s", tag)
            return False
        if not hmac.compare_digest(token.encode("utf-8"), self.config.token.encode("utf-8")):
            self.limiter.failed()
            await self._refuse(peer, "auth", "bad token", tag)
            return False
        peer.write(dumps(reply("auth", True, **({} if tag is None else {"req": tag}))))
        return True

    async def _refuse(self, peer: _WebSocketPeer, cmd: str, why: str, tag: str | None) -> None:
        log.warning("websocket_auth_refused", peer=peer.description, why=why)
        peer.write(dumps(reply(cmd, False, error=why, **({} if tag is None else {"req": tag}))))
        peer.finish(1008, why)  # after the reply: policy violation

    async def _read_commands(self, connection: ServerConnection, sub: Subscriber) -> None:
        while not sub.closed:
            message = await connection.recv()
            if sub.closed:
                return
            if isinstance(message, bytes):
                answer = reply("?", False, error="binary messages are not part of the protocol; send JSON text")
            elif not message.strip():
                continue
            else:
                try:
                    obj = decode_command(message.encode("utf-8"))
                except ProtocolError as e:
                    answer = reply("?", False, error=str(e))
                else:
                    answer = await self.dispatch(WEBSOCKET, obj, sub, None)  # no Unix credentials over TCP
            # Paced for an HIS like its scans; a monitor or a tool that stopped reading is dropped.
            self.hub.reply(sub, dumps(answer))
