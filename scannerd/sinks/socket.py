"""The local HIS socket: protocol v1 over a Unix stream socket, one JSON object per line.

Every connected client gets every event (or those of the devices it subscribed to). A client
that stops reading is disconnected once its buffer passes the limit, so it never stalls the
others. With no client connected, scans wait until their TTL and are then dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import grp
import os
import socket as _socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ..config import SocketConfig
from ..metrics import Metrics
from ..model import Event, ScanEvent, mask
from ..protocol import ProtocolError, dumps, encode_event, hello, parse_command, reply
from .base import Sink, drop_expired

log = structlog.get_logger("scannerd.socket")

CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

MAX_LINE = 64 * 1024

# Scans that waited for a subscriber go to a new connection only once it has shown it is a
# subscriber: it sends `subscribe`, or stays quiet this long. A CLI asking `status` (its first
# line is a command) must not walk away with queued payment codes.
HANDOVER_DELAY_S = 0.2
# First commands that mark a connection as control (read-only tools), not an HIS. An HIS may
# well start with `arm` (kiosk payment page) or `ack`: those keep it a subscriber.
CONTROL_COMMANDS = frozenset({"status", "devices", "metrics", "shapes", "inject"})


class SocketInUse(RuntimeError):
    """Another live daemon answers on the configured path."""


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    peer: str
    devices: frozenset[str] | None = None  # None: every device
    control_only: bool = False  # its first line was a command other than subscribe
    handover: asyncio.TimerHandle | None = None

    def wants(self, event: Event) -> bool:
        if self.devices is None:
            return True
        device = event.device.name if isinstance(event, ScanEvent) else event.device
        return device in self.devices


def _peer_description(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return f"pid={pid} uid={uid}"
    except (OSError, AttributeError):
        return "unknown"


def prepare_socket_path(path: str) -> None:
    """Make the directory and clear a stale socket file, refusing to steal a live one."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)  # stale: left by a daemon that died
            return
        raise
    else:
        raise SocketInUse(f"another scannerd is already serving {path}")
    finally:
        probe.close()


class SocketSink(Sink):
    name = "socket"

    def __init__(
        self,
        config: SocketConfig,
        *,
        hostname: str,
        metrics: Metrics,
        on_command: CommandHandler,
        queue_limit: int = 256,
    ) -> None:
        self.config = config
        self.hostname = hostname
        self.metrics = metrics
        self.on_command = on_command
        self.queue_limit = queue_limit
        self.clients: set[_Client] = set()
        self._pending: collections.deque[ScanEvent] = collections.deque()
        self._server: asyncio.base_events.Server | None = None
        self._expiry: asyncio.TimerHandle | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        path = self.config.path
        prepare_socket_path(path)
        # Create the socket with the final mode from the first instant: no window where a
        # process outside the group could connect.
        old_umask = os.umask(0o777 & ~self.config.mode)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=path, limit=MAX_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(path, self.config.mode)
        if self.config.group:
            try:
                gid = grp.getgrnam(self.config.group).gr_gid
                os.chown(path, -1, gid)
            except (KeyError, PermissionError) as e:
                log.error("socket_group_failed", group=self.config.group, error=str(e))
        log.info("socket_listening", path=path, mode=oct(self.config.mode))

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            self._drop(client, None)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(OSError):
            os.unlink(self.config.path)

    def status(self) -> dict[str, Any]:
        return {"state": "listening" if self._server else "stopped", "clients": len(self.clients), "queued": len(self._pending)}

    def reconfigure(self, config: SocketConfig, queue_limit: int) -> None:
        """Same path, new mode/group/limits: applied in place, no client dropped."""
        assert config.path == self.config.path
        self.config = config
        self.queue_limit = queue_limit
        os.chmod(config.path, config.mode)
        if config.group:
            try:
                os.chown(config.path, -1, grp.getgrnam(config.group).gr_gid)
            except (KeyError, PermissionError) as e:
                log.error("socket_group_failed", group=config.group, error=str(e))

    def take_pending(self) -> list[ScanEvent]:
        """Hand the waiting scans to a successor sink (socket path changed on reload)."""
        pending, self._pending = list(self._pending), collections.deque()
        self._arm_expiry()
        return pending

    def adopt_pending(self, events: list[ScanEvent]) -> None:
        for event in events:
            self.deliver(event)

    # --- delivery -------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        if isinstance(event, ScanEvent) and event.expires_ns is not None and time.monotonic_ns() >= event.expires_ns:
            self._expired(event, "ttl passed before delivery")  # never hand out a stale code
            return
        receivers = [c for c in self.clients if c.wants(event)]
        if not receivers:
            if isinstance(event, ScanEvent):
                self._queue(event)
            return
        self._send(event, receivers)

    def _send(self, event: Event, receivers: list[_Client]) -> None:
        now = time.monotonic_ns()
        line = dumps(encode_event(event, now))
        written = 0
        for client in receivers:
            if self._write(client, line):
                written += 1
        if not isinstance(event, ScanEvent):
            return
        if written == 0:
            self._queue(event)  # every receiver was gone or stuck: wait for the next one
            return
        self.metrics.inc("scannerd_delivered_total", {"sink": self.name})
        self.metrics.observe("scannerd_delivery_latency_seconds", (now - event.completed_ns) / 1e9, {"sink": self.name})

    def _write(self, client: _Client, line: bytes) -> bool:
        """Write or drop: a client whose backlog is over the limit is disconnected, not waited for."""
        if client.writer.is_closing():
            return False
        if client.writer.transport.get_write_buffer_size() + len(line) > self.config.client_buffer_bytes:
            self.metrics.inc("scannerd_client_disconnects_total")
            self._drop(client, "not reading: buffer full")
            return False
        client.writer.write(line)
        return True

    def _queue(self, event: ScanEvent) -> None:
        if len(self._pending) >= self.queue_limit:
            old = self._pending.popleft()
            self._expired(old, "queue full")
        self._pending.append(event)
        log.info("queued_no_subscriber", device=event.device.name, masked=mask(event.code), queued=len(self._pending))
        self._arm_expiry()

    def _expired(self, event: ScanEvent, why: str) -> None:
        self.metrics.inc("scannerd_expired_total", {"sink": self.name})
        log.warning("scan_dropped_undelivered", device=event.device.name, masked=mask(event.code), why=why, sink=self.name)

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        first = min(e.expires_ns or 0 for e in self._pending)
        delay = max(0.0, (first - time.monotonic_ns()) / 1e9)
        self._expiry = loop.call_later(delay + 0.001, self._expire_pending)

    def _expire_pending(self) -> None:
        self._expiry = None
        self._pending = drop_expired(
            self._pending, time.monotonic_ns(), lambda e: e.expires_ns, lambda e: self._expired(e, "ttl passed with no subscriber")
        )
        self._arm_expiry()

    def _flush_pending(self, client: _Client) -> None:
        """A subscriber arrived: hand it what waited, if still within TTL."""
        if client.handover is not None:
            client.handover.cancel()
            client.handover = None
        if client.control_only or client not in self.clients:
            return
        self._expire_pending()
        remaining: collections.deque[ScanEvent] = collections.deque()
        for event in self._pending:
            if client.wants(event):
                self._send(event, [client])
            else:
                remaining.append(event)
        self._pending = remaining
        self._arm_expiry()

    # --- clients --------------------------------------------------------------------------

    def _drop(self, client: _Client, why: str | None) -> None:
        if client not in self.clients:
            return
        self.clients.discard(client)
        if client.handover is not None:
            client.handover.cancel()
        if why:
            log.warning("client_dropped", peer=client.peer, why=why)
        if why:
            client.writer.transport.abort()  # its unread backlog is not worth waiting for
        else:
            client.writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer=writer, peer=_peer_description(writer))
        writer.write(dumps(hello(self.hostname)))
        self.clients.add(client)
        log.info("client_connected", peer=client.peer, clients=len(self.clients))
        client.handover = asyncio.get_running_loop().call_later(HANDOVER_DELAY_S, self._flush_pending, client)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # line over MAX_LINE
                    writer.write(dumps(reply("?", False, error=f"line longer than {MAX_LINE} bytes")))
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await self._command(client, line)
                self._write(client, dumps(response))
        except (ConnectionError, OSError):
            pass
        finally:
            if client.handover is not None:
                client.handover.cancel()
            if client in self.clients:
                self.clients.discard(client)
                log.info("client_disconnected", peer=client.peer, clients=len(self.clients))
            with contextlib.suppress(Exception):
                writer.close()

    async def _command(self, client: _Client, line: bytes) -> dict[str, Any]:
        try:
            cmd = parse_command(line)
        except ProtocolError as e:
            return reply("?", False, error=str(e))
        name = cmd["cmd"]
        if client.handover is not None and name in CONTROL_COMMANDS:
            # A control connection (CLI, monitoring) asks before it listens: it never takes
            # the scans that wait for an HIS.
            client.control_only = True
            client.handover.cancel()
            client.handover = None
        if name == "subscribe":
            client.control_only = False
            devices = cmd.get("devices")
            if devices is not None and (not isinstance(devices, list) or not all(isinstance(d, str) for d in devices)):
                return reply(name, False, error='"devices" must be a list of device names, or absent for all')
            client.devices = None if devices is None else frozenset(devices)
            self._flush_pending(client)
            return reply(name, True, devices=devices)
        try:
            return await self.on_command(cmd)
        except Exception as e:  # a bug in one command must not take the connection down
            log.exception("command_failed", cmd=name)
            return reply(name, False, error=f"internal error: {type(e).__name__}")
