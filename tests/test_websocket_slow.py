"""A browser tab that stops reading: as a monitor it is dropped, as an HIS it is paced (every
scan later, once, in order), and neither stalls the other clients of either transport."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.typing import Origin
from websockets.uri import parse_uri

from scannerd.model import mask

from helpers import Client, Daemon, PtyScanner, wechat_code
from ws_client import HIS_ORIGIN, TOKEN, WsClient, free_port, wait_listening, websocket_section

SCANS = 1500


class RawWs:
    """A WebSocket client on a plain socket whose receive buffer is tiny, driven by the
    library's sans-I/O protocol: it reads only when the test says so."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Small segments: the daemon's kernel sizes its send buffer by segments in flight, and
        # loopback's 64 KiB segments would let it absorb megabytes for a client that reads nothing.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), origin=Origin(HIS_ORIGIN))
        self.proto.send_request(self.proto.connect())
        self._flush()
        self.messages: list[dict[str, Any]] = []
        while self.proto.state is State.CONNECTING:
            self._feed(10)
        assert self.proto.state is State.OPEN, self.proto.handshake_exc

    def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.sock.sendall(data)

    def _feed(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            self.proto.receive_eof()
        else:
            self.proto.receive_data(data)
        for event in self.proto.events_received():
            if getattr(event, "opcode", None) is Opcode.TEXT:  # (the handshake Response is an event too)
                self.messages.append(json.loads(event.data))
        self._flush()  # pongs, close replies
        return bool(data)

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.proto.send_text(json.dumps(cmd).encode())
        self._flush()
        while True:
            for i, m in enumerate(self.messages):
                if m["type"] == "reply" and m["cmd"] == cmd["cmd"]:
                    return self.messages.pop(i)
            self._feed(10)

    def read_until_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self._feed(max(0.01, deadline - time.monotonic())):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    def scans(self, n: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while sum(1 for m in self.messages if m["type"] == "scan") < n and time.monotonic() < deadline:
            self._feed(max(0.01, deadline - time.monotonic()))
        return [m for m in self.messages if m["type"] == "scan"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Daemon, PtyScanner, Path, int]]:
    pty = PtyScanner(tmp_path, "scanner")
    port = free_port()
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    config.write_text(f"""
[socket]
path = "{sock}"
client_buffer_bytes = 16384
[policy]
duplicate_window_ms = 0
queue_limit = 5000
{websocket_section(port)}
[[scanner]]
name = "window-1"
path = "{pty.link}"
terminator = "CR"
""")
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        Client(sock, role=None).wait_present()
        pty.release_slave()
        wait_listening(sock)
        yield daemon, pty, sock, port
    finally:
        daemon.stop()
        pty.close()


def test_a_tab_that_stops_reading_is_dropped_as_monitor_and_paced_as_his_without_stalling_others(
        rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, _pty, sock, port = rig
    slow_monitor, slow_his = RawWs(port), RawWs(port)
    for raw, role in ((slow_monitor, "monitor"), (slow_his, "his")):
        assert raw.command({"cmd": "auth", "token": TOKEN})["ok"]
        assert raw.command({"cmd": "subscribe", "role": role})["ok"]
    fast_ws = WsClient(port, role="monitor")
    fast_unix = Client(sock, role="monitor")
    injector = Client(sock, role=None)
    codes = [wechat_code() for _ in range(SCANS)]
    received: dict[int, list[str]] = {id(fast_ws): [], id(fast_unix): []}
    started = time.monotonic()
    for i, code in enumerate(codes):
        assert injector.command({"cmd": "inject", "device": "window-1", "code": code})["ok"]
        if i % 100 == 99 or i == SCANS - 1:
            # The fast clients have every scan so far while the slow ones sit full.
            for fast in (fast_ws, fast_unix):
                got = received[id(fast)]
                while len(got) < i + 1:
                    got.append(fast.next_of("scan", timeout=20)["masked"])
    for got in received.values():
        assert got == [mask(c) for c in codes]
    elapsed = time.monotonic() - started
    # The slow monitor was dropped; the slow HIS was not, and now reads every scan once, in order.
    assert slow_monitor.read_until_closed(20), "the monitor that did not read is still connected"
    assert any(e.get("event") == "client_dropped" for e in daemon.log_events())
    got = slow_his.scans(SCANS, 30)
    assert [g["code"] for g in got] == codes
    assert len({g["id"] for g in got}) == SCANS
    assert fast_unix.nothing_within(0.2) and elapsed < 60
    assert all(code not in daemon.log() for code in codes[:20])
