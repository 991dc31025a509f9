"""A small HIS-side client of the socket protocol, used by the CLI (listen, inject, status…)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from .config import SYSTEM_SOCKET_PATH, load_config
from .simulator import demo_running, demo_socket_path


class ClientError(RuntimeError):
    """The daemon could not be reached or answered with an error."""


def resolve_socket_path(socket_path: str | None, config_path: str | None = None) -> str:
    if socket_path:
        return socket_path
    if config_path is None and demo_running():
        return demo_socket_path()  # while a `scannerd demo` runs the CLI talks to it; --socket or -c for another
    # Rules uncompiled: a technician needs `status` most when a site rule is broken.
    path = load_config(config_path, compile_rules=False).socket.path
    # A technician (not root) asking the system service: its socket is in /run/scannerd, not in
    # this user's own runtime directory.
    if not os.path.exists(path) and os.path.exists(SYSTEM_SOCKET_PATH):
        return SYSTEM_SOCKET_PATH
    return path


def connect(path: str, timeout: float | None = 5.0) -> tuple[socket.socket, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except FileNotFoundError:
        raise ClientError(f"{path}: no such socket: is scannerd running? (systemctl status scannerd)") from None
    except PermissionError:
        raise ClientError(f"{path}: permission denied: add this user to the socket's group (see [socket] group)") from None
    except ConnectionRefusedError:
        raise ClientError(f"{path}: connection refused: the daemon is not running (stale socket file)") from None
    stream = sock.makefile("rwb", buffering=0)
    hello = json.loads(stream.readline() or b"{}")
    if hello.get("type") != "hello":
        raise ClientError(f"{path}: unexpected greeting {hello!r}")
    return sock, stream


def request(socket_path: str | None, cmd: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command and return its reply (events arriving meanwhile are skipped)."""
    path = resolve_socket_path(socket_path)
    sock, stream = connect(path, timeout)
    try:
        # Never subscribed: a tool asking a question receives replies only, no scan meant for the HIS.
        stream.write((json.dumps(cmd, ensure_ascii=False) + "\n").encode())
        while True:
            line = stream.readline()
            if not line:
                raise ClientError(f"{path}: the daemon closed the connection")
            msg: dict[str, Any] = json.loads(line)
            if msg.get("type") == "reply" and msg.get("cmd") == cmd.get("cmd"):
                return msg
    except TimeoutError:
        raise ClientError(f"{path}: no reply within {timeout} s") from None
    finally:
        sock.close()


def events(socket_path: str, devices: list[str] | None = None, *, show_codes: bool = False) -> Iterator[dict[str, Any]]:
    """Yield every event the daemon sends, as a monitor: live events only, codes masked unless
    `show_codes` (root or the daemon's user). A monitor never takes a scan waiting for the HIS."""
    sock, stream = connect(socket_path, timeout=None)
    try:
        cmd: dict[str, Any] = {"cmd": "subscribe", "role": "monitor"}
        if devices:
            cmd["devices"] = devices
        if show_codes:
            cmd["show_codes"] = True
        stream.write((json.dumps(cmd) + "\n").encode())
        for line in stream:
            msg = json.loads(line)
            if msg.get("type") == "reply":
                if msg.get("cmd") == "subscribe" and not msg.get("ok"):
                    raise ClientError(f"{socket_path}: {msg.get('error')}")
                continue
            yield msg
    finally:
        sock.close()
