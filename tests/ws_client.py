"""A WebSocket client of the daemon with the interface of helpers.Client, so one scripted
exchange can run against both transports; and a daemon config with a [websocket] section."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from helpers import Client, wait_for

HIS_ORIGIN = "https://his.example-hospital.cn"
TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def websocket_section(port: int, *, token: str = TOKEN, extra: str = "") -> str:
    return f"""
[websocket]
listen = "127.0.0.1:{port}"
allowed_origins = ["{HIS_ORIGIN}"]
token = "{token}"
{extra}
"""


def wait_listening(sock: Path, name: str = "websocket", timeout: float = 15.0) -> dict[str, Any]:
    def listening() -> dict[str, Any] | None:
        state = Client(sock, role=None).status()["listeners"].get(name, {})
        return state if state.get("state") == "listening" else None

    result: dict[str, Any] = wait_for(listening, timeout)
    return result


class WsClient:
    """Connect, read hello, authenticate, subscribe (role None: replies only)."""

    def __init__(self, port: int, token: str | None = TOKEN, role: str | None = "his", *,
                 origin: str | None = HIS_ORIGIN, timeout: float = 10.0, **subscribe: Any) -> None:
        # Entered as a context manager: what every websockets version since 14 accepts.
        self.ws: ClientConnection = connect(f"ws://127.0.0.1:{port}/ws", origin=origin,  # type: ignore[arg-type]
                                            open_timeout=timeout, close_timeout=2).__enter__()
        self._backlog: list[dict[str, Any]] = []
        self.hello = self.next()
        assert self.hello["type"] == "hello", self.hello
        self.auth: dict[str, Any] | None = None
        if token is not None:
            self.auth = self.command({"cmd": "auth", "token": token})
            assert self.auth["ok"], self.auth
        self.subscribed: dict[str, Any] | None = None
        if role is not None:
            self.subscribed = self.command({"cmd": "subscribe", "role": role, **subscribe})
            assert self.subscribed["ok"], self.subscribed

    def _recv(self, timeout: float) -> dict[str, Any]:
        try:
            text = self.ws.recv(timeout=max(0.001, timeout))
        except TimeoutError:
            raise TimeoutError("no event within timeout") from None
        except ConnectionClosed as e:
            raise ConnectionError(f"daemon closed the connection: {e}") from None
        return dict(json.loads(text))

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        if self._backlog:
            return self._backlog.pop(0)
        return self._recv(timeout)

    def next_of(self, *types: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg["type"] in types:
                return msg

    def nothing_within(self, seconds: float, *types: str) -> bool:
        try:
            self.next_of(*(types or ("scan", "reject")), timeout=seconds)
        except TimeoutError:
            return True
        return False

    def send(self, cmd: dict[str, Any]) -> None:
        self.ws.send(json.dumps(cmd))

    def command(self, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        self.send(cmd)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(max(0.01, deadline - time.monotonic()))
            if msg["type"] == "reply" and msg.get("cmd") in (cmd.get("cmd"), "?"):
                return msg
            self._backlog.append(msg)

    def status(self) -> dict[str, Any]:
        return self.command({"cmd": "status"})

    def close_code(self, timeout: float = 10.0) -> int | None:
        """Wait for the daemon to close the connection; its close code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            except ConnectionClosed as e:
                return e.rcvd.code if e.rcvd is not None else None
            except TimeoutError:
                break
        raise TimeoutError("the connection stayed open")

    def close(self) -> None:
        self.ws.close()
