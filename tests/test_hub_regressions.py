"""Interleavings a review of the hub found wrong, each pinned as a test (all failed before the fix)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from test_hub_contract import FakePeer

from scannerd.delivery.hub import Hub, HubError
from scannerd.delivery.outcomes import DeliveryOutcome, Outcome, Outcomes
from scannerd.model import Classification, DeviceInfo, DeviceStateEvent, ScanEvent

from delivery_parts import AClient, Rig, scan

DEV0 = DeviceInfo("dev-0", "serial", "outpatient", "window")
DEV1 = DeviceInfo("dev-1", "serial", "outpatient", "window")
PAY = Classification("wechat", "payment", "wechat.v1", "high")


class Clock:
    t = 10**12

    def __call__(self) -> int:
        return self.t


def make(clock: Clock, n: int, device: DeviceInfo = DEV0) -> ScanEvent:
    return ScanEvent(f"ID{n:04d}", "ts", device, f"1345678901{n:08d}", "qr", PAY, 1.0, clock.t + n, clock.t + 60 * 10**9)


def hub_with(clock: Clock) -> tuple[Hub, list[DeliveryOutcome]]:
    seen: list[DeliveryOutcome] = []
    bus = Outcomes()
    bus.subscribe(seen.append)
    return Hub(bus, clock=clock), seen


def scans(peer: FakePeer) -> list[str]:
    return [m["id"] for _, m in peer.received if m.get("type") == "scan"]


async def test_the_his_that_took_waiting_scans_keeps_their_device_until_it_settles_them() -> None:
    clock = Clock()
    hub, _ = hub_with(clock)
    s1 = make(clock, 1)
    hub.deliver(s1)  # no HIS yet: it waits
    d_peer = FakePeer("D", clock)
    d = hub.attach(d_peer)
    hub.subscribe(d, "his", None, True, False)  # D (all devices, acks) takes s1 in the hand-over
    await asyncio.sleep(0)
    c_peer = FakePeer("C", clock)
    c = hub.attach(c_peer)
    hub.subscribe(c, "his", ["dev-0"], True, False)  # a more specific HIS arrives
    await asyncio.sleep(0)
    s2 = make(clock, 2)
    hub.deliver(s2)
    assert scans(d_peer) == [s1.id, s2.id]  # D still holds s1: dev-0 stays with D
    d_peer.closed = True
    hub.detach(d)
    assert scans(c_peer) == [s1.id, s2.id]  # redelivered in order


async def test_narrowing_the_device_filter_while_holding_its_scans_is_refused() -> None:
    clock = Clock()
    hub, _ = hub_with(clock)
    a_peer = FakePeer("A", clock)
    a = hub.attach(a_peer)
    hub.subscribe(a, "his", None, True, False)
    await asyncio.sleep(0)
    hub.deliver(make(clock, 1))
    try:
        hub.subscribe(a, "his", ["dev-1"], True, False)
    except HubError as e:
        assert "still holds scans of dev-0" in str(e)
    else:
        raise AssertionError("the filter change was accepted")


async def test_a_transport_stopping_never_counts_a_scan_written_to_a_closing_connection(tmp_path: Path) -> None:
    r = Rig(tmp_path / "s.sock")
    await r.server.start()
    a = await AClient.connect(r.path, role="his", ack=True)
    b = await AClient.connect(r.path, role="his")
    e = scan("134567890123450001")
    r.hub.deliver(e)
    assert (await a.next_scan())["id"] == e.id
    await r.server.stop()  # shutdown, or a reload to a new path: A and B close together
    await r.hub.stop()
    outcomes = [o.outcome for o in r.seen if o.event_id == e.id]
    assert Outcome.DELIVERED not in outcomes
    assert outcomes[-1] is Outcome.UNDELIVERED
    assert r.metrics.value("scannerd_undelivered_total", {"sink": "socket", "reason": "stopped"}) == 1
    assert r.metrics.value("scannerd_redelivered_total", {"sink": "socket"}) == 0  # never written again
    b.close()


async def test_a_slow_his_is_paced_never_dropped_and_loses_nothing_with_replies_and_events(tmp_path: Path) -> None:
    async with Rig(tmp_path / "s.sock", client_buffer_bytes=8192, queue_limit=5000) as r:
        waiting = [scan(f"13456789012{i:07d}") for i in range(1500)]
        for e in waiting:
            r.hub.deliver(e)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(r.path)
        s.setblocking(False)
        s.send(b'{"cmd":"subscribe","role":"his","ack":true}\n')
        buf = b""
        got: list[str] = []
        acks = 0
        for _ in range(4000):
            await asyncio.sleep(0.002)
            try:
                chunk = s.recv(2048)  # a busy HIS reads a little at a time
            except BlockingIOError:
                chunk = b""
            if chunk == b"" and len(got) >= 1500:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out = b""
            for line in lines:
                msg = json.loads(line)
                if msg.get("type") == "scan":
                    got.append(msg["id"])
                    out += json.dumps({"cmd": "ack", "id": msg["id"]}).encode() + b"\n"
                    acks += 1
            if out:
                s.send(out)  # its replies come back on the same, full, connection
            if len(got) % 300 == 1:
                r.hub.deliver(DeviceStateEvent("window-1", "present"))
        assert got == [e.id for e in waiting]
        assert any(sub.role is not None for sub in r.hub.subscribers), "the slow HIS was disconnected"
        s.close()


async def test_a_lone_surrogate_gets_a_refusal_not_a_dead_connection(tmp_path: Path) -> None:
    async with Rig(tmp_path / "s.sock") as r:
        c = await AClient.connect(r.path)
        for line in (b'{"cmd":"\\ud800"}', b'{"cmd":"status","req":"\\ud800"}',
                     b'{"cmd":"subscribe","role":"his","devices":["\\ud800"]}'):
            c.writer.write(line + b"\n")
            answer = await c.next()
            assert answer["ok"] is False and "lone surrogate" in answer["error"]
        assert (await c.command({"cmd": "status"}))["ok"]
