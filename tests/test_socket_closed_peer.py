"""A scan written into a connection its HIS has just closed is not counted delivered: the write
fails (EPIPE), so the scan moves on to the next HIS (found by the chaos suite, issue 11)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

from delivery_parts import AClient, Rig, scan


def _blocking_his(path: str) -> socket.socket:
    """An HIS on a plain socket, so the test can close it at once, behind nobody's back."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    buf = b""
    s.sendall(b'{"cmd": "subscribe", "role": "his"}\n')
    while True:
        while b"\n" not in buf:
            buf += s.recv(65536)
        line, buf = buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg.get("type") == "reply" and msg.get("cmd") == "subscribe":
            assert msg["ok"], msg
            return s


async def test_a_scan_written_to_a_just_closed_his_goes_to_the_next(tmp_path: Path) -> None:
    async with Rig(tmp_path / "s.sock") as rig:
        his = await asyncio.to_thread(_blocking_his, str(rig.path))
        deadline = time.monotonic() + 10
        while rig.hub.counts()["his"] != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        his.close()  # gone at once; the daemon has not read the EOF yet (no await since)
        e = scan("134567890123450077")
        rig.hub.deliver(e)  # the write meets a closed peer: EPIPE
        assert rig.delivered() == 0, "a scan the kernel refused was counted delivered"
        second = await AClient.connect(rig.path, role="his")
        got = await second.next_scan(timeout=10)
        assert got["id"] == e.id and got["code"] == e.code
        assert rig.delivered() == 1
        second.close()
