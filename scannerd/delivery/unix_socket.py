"""The local HIS socket: the protocol over a Unix stream socket, one JSON object per line.

A thin transport: each connection is a Peer of the subscriber hub (which decides what it
receives) and a caller of the command table (which decides what its lines mean). What is left
here is the socket itself: its path, mode and group, the greeting, line limits, a cap on
connections, and the Unix credentials of each peer (SO_PEERCRED) for the command layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import socket as _socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ..config import SocketConfig
from ..protocol import ProtocolError, decode_command, dumps, hello, reply
from ..socket_dir import ensure_socket_directory
from .hub import Hub, Subscriber

log = structlog.get_logger("scannerd.socket")

MAX_LINE = 64 * 1024

# The command table's `handle(transport, command, subscriber, peer_uid)`: the transport says who
# sent a line; what it means is decided there.
Dispatch = Callable[[str, dict[str, Any], Subscriber, int | None], Awaitable[dict[str, Any]]]


class SocketInUse(RuntimeError):
    """Another live daemon answers on the configured path."""


def peer_credentials(sock: Any) -> tuple[int | None, int | None]:
    """(pid, uid) of the process at the other end of a Unix socket, or (None, None)."""
    try:
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return pid, uid
    except (OSError, AttributeError):
        return None, None


def prepare_socket_path(path: str) -> None:
    """Make the directory and clear a stale socket file, refusing to steal a live one.

    The liveness probe is a non-blocking connect: it answers at once (refused: stale; accepted
    or backlog full: live) and never stalls the event loop during a reload.
    """
    # Made, or checked when it sits in a shared directory such as /tmp: never someone else's.
    ensure_socket_directory(os.path.dirname(path) or ".")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)  # stale: left by a daemon that died
            return
        if e.errno != errno.EAGAIN:
            raise
    finally:
        probe.close()
    raise SocketInUse(f"another scannerd is already serving {path}")


class _StreamPeer:
    """An asyncio stream connection as the hub sees it."""

    def __init__(self, writer: asyncio.StreamWriter, description: str) -> None:
        self.writer = writer
        self.description = description
        self._drain_task: asyncio.Task[None] | None = None
        # Paused whenever anything is buffered: drain() then waits until the kernel took it all,
        # so the hub's outbox is paced by the client without polling.
        writer.transport.set_write_buffer_limits(high=0)

    def write(self, data: bytes) -> bool:
        if self.writer.is_closing():
            return False
        self.writer.write(data)
        # A peer that has just gone: the kernel refused the bytes (EPIPE) and the transport
        # closed itself inside write(). Nothing reached the HIS, so nothing is counted.
        return not self.writer.is_closing()

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    def on_writable(self, callback: Callable[[], None]) -> None:
        async def wait() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.drain()
            if not self.writer.is_closing():
                callback()

        self._drain_task = asyncio.get_running_loop().create_task(wait())

    def close(self, why: str | None) -> None:
        if why:
            self.writer.transport.abort()  # its unread backlog is not worth waiting for
        else:
            self.writer.close()


class UnixSocketServer:
    name = "socket"

    def __init__(self, config: SocketConfig, hub: Hub, dispatch: Dispatch, *, hostname: str,
                 commands: list[str]) -> None:
        self.config = config
        self.hub = hub
        self.dispatch = dispatch
        self.hostname = hostname
        self.commands = commands
        self.connections: set[Subscriber] = set()
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

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
        self._apply_mode_and_group(self.config)
        log.info("socket_listening", path=path, mode=oct(self.config.mode))

    def reconfigure(self, config: SocketConfig) -> None:
        """Same path, new mode/group/limits: applied in place, no client dropped."""
        assert config.path == self.config.path
        self.config = config
        self._apply_mode_and_group(config)

    def _apply_mode_and_group(self, config: SocketConfig) -> None:
        os.chmod(config.path, config.mode)
        if config.group:
            try:
                os.chown(config.path, -1, grp.getgrnam(config.group).gr_gid)
            except (KeyError, PermissionError) as e:
                log.error("socket_group_failed", group=config.group, error=str(e))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Out of the hub together first, so what one HIS held never goes to another that is
        # closing too; then the connections close.
        self.hub.detach_all(list(self.connections))
        for sub in list(self.connections):
            sub.peer.close(None)
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(OSError):
            os.unlink(self.config.path)

    def status(self) -> dict[str, Any]:
        return {"state": "listening" if self._server else "stopped", "connections": len(self.connections)}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        pid, uid = peer_credentials(writer.get_extra_info("socket"))
        peer = _StreamPeer(writer, f"pid={pid} uid={uid}")
        try:
            if len(self.connections) >= self.config.max_clients:
                writer.write(dumps(reply("?", False, error=f"too many connections ({self.config.max_clients}); "
                                         "raise [socket] max_clients or close idle clients")))
                log.warning("client_refused", peer=peer.description, why="max_clients", limit=self.config.max_clients)
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
                return
            sub = self.hub.attach(peer)
            self.connections.add(sub)
            log.info("client_connected", peer=peer.description, clients=len(self.connections))
            try:
                writer.write(dumps(hello(self.hostname, self.commands)))
                await self._read_commands(reader, sub, uid)
            finally:
                self.connections.discard(sub)
                self.hub.detach(sub)
                log.info("client_disconnected", peer=peer.description, clients=len(self.connections))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # the peer went away, or the daemon is stopping: nothing to report per client
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _read_commands(self, reader: asyncio.StreamReader, sub: Subscriber, uid: int | None) -> None:
        while not sub.closed:
            try:
                line = await reader.readline()
            except ValueError:  # a line over MAX_LINE
                sub.peer.write(dumps(reply("?", False, error=f"line longer than {MAX_LINE} bytes")))
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                obj = decode_command(line)
            except ProtocolError as e:
                answer = reply("?", False, error=str(e))
            else:
                answer = await self.dispatch("socket", obj, sub, uid)
            # Paced for an HIS like its scans; a monitor or a tool that stopped reading is dropped.
            self.hub.reply(sub, dumps(answer))
