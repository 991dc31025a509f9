"""The delivery contract on a real Unix socket: the hub, the socket transport and the command
table together (the daemon's own end-to-end version is tests/test_delivery_contract.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scannerd.delivery.outcomes import Outcome
from scannerd.delivery.unix_socket import SocketInUse, UnixSocketServer
from scannerd.model import RejectEvent, mask

from delivery_parts import DEVICE, KIOSK, AClient, Rig, scan


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with Rig(tmp_path / "s.sock") as r:
        yield r


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


# --- the socket itself ---------------------------------------------------------------------------


async def test_socket_mode_and_hello_says_subscribe_is_required(rig: Rig) -> None:
    assert stat.S_IMODE(os.stat(rig.path).st_mode) == 0o660
    c = await AClient.connect(rig.path)  # asserts protocol 2 and subscribe required
    assert (await c.command({"cmd": "status"}))["ok"]


async def test_stale_socket_replaced_live_one_refused_regular_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    async with Rig(path):
        with pytest.raises(SocketInUse, match="already serving"):
            await Rig(path).server.start()
    assert not path.exists()
    path.write_text("important")
    with pytest.raises(SocketInUse, match="not a socket"):
        await Rig(path).server.start()
    assert path.read_text() == "important"


async def test_connections_over_the_cap_are_refused_with_a_reason(tmp_path: Path) -> None:
    r = Rig(tmp_path / "s.sock")
    r.server.config = dataclasses.replace(r.server.config, max_clients=2)
    async with r:
        a, b = await AClient.connect(r.path), await AClient.connect(r.path)
        reader, writer = await asyncio.open_unix_connection(r.path)
        refused = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert refused["ok"] is False and "too many connections (2)" in refused["error"]
        assert await asyncio.wait_for(reader.readline(), 5) == b""  # and closed
        writer.close()
        a.close()
        await until(lambda: len(r.server.connections) == 1)
        c = await AClient.connect(r.path)  # room again
        assert (await c.command({"cmd": "status"}))["ok"]
        b.close()


# --- no scan without a subscription ---------------------------------------------------------------


async def test_a_connection_that_never_subscribes_gets_replies_only_and_takes_nothing(rig: Rig) -> None:
    status = await AClient.connect(rig.path)  # `scannerd status` polled by a monitoring script
    assert (await status.command({"cmd": "status"}))["ok"]
    live = scan("134567890123450001")
    rig.hub.deliver(live)  # a live scan while only that connection is there
    assert await status.quiet()
    assert rig.hub.counts()["queued"] == 1 and rig.delivered() == 0
    his = await AClient.connect(rig.path, role="his")
    got = await his.next_scan()
    assert got["code"] == live.code and got["queued"] is True and got["age_ms"] >= 0
    assert rig.delivered() == 1 and rig.hub.counts()["queued"] == 0
    assert await status.quiet() and await his.quiet()


async def test_a_monitor_sees_masked_live_scans_never_takes_waiting_ones_never_counts(rig: Rig) -> None:
    waiting = scan("134567890123450002")
    rig.hub.deliver(waiting)
    monitor = await AClient.connect(rig.path, role="monitor")
    assert await monitor.quiet()  # waiting scans are the HIS's
    live = scan("250000000000000003")
    rig.hub.deliver(live)
    seen = await monitor.next_scan()
    assert seen["masked"] == mask(live.code) and "code" not in seen and live.code not in json.dumps(seen)
    assert rig.delivered() == 0 and rig.hub.counts()["queued"] == 2
    his = await AClient.connect(rig.path, role="his")
    assert [(await his.next_scan())["code"] for _ in range(2)] == [waiting.code, live.code]
    assert rig.delivered() == 2


async def test_show_codes_is_granted_to_root(rig: Rig) -> None:
    assert os.geteuid() == 0, "this test runs as root (CI does)"
    monitor = await AClient.connect(rig.path, role="monitor", show_codes=True)
    live = scan("134567890123450004")
    rig.hub.deliver(live)
    assert (await monitor.next_scan())["code"] == live.code
    assert rig.delivered() == 0  # still a monitor: it took nothing


def test_show_codes_is_refused_to_another_user() -> None:
    """A real second user (nobody) connects: show_codes is refused with a reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    # A directory the other user can reach (pytest's tmp_path lives under a 0700 directory).
    directory = Path(tempfile.mkdtemp(prefix="scannerd-peer-", dir="/tmp"))
    os.chmod(directory, 0o755)
    path = directory / "s.sock"
    child = (
        "import json,socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f=s.makefile('rwb',buffering=0)\n"
        "f.readline(); f.write(b'{\"cmd\":\"subscribe\",\"role\":\"monitor\",\"show_codes\":true}\\n')\n"
        "print(f.readline().decode(), end='')\n"
    )

    async def main() -> dict[str, object]:
        async with Rig(path) as r:
            os.chmod(r.path, 0o666)
            proc = await asyncio.create_subprocess_exec(
                # The system interpreter: the venv's may sit under a directory nobody can enter.
                shutil.which("python3", path="/usr/bin:/bin") or sys.executable, "-c", child, r.path,
                stdout=subprocess.PIPE, user=65534)
            out, _ = await asyncio.wait_for(proc.communicate(), 20)
            return json.loads(out)

    try:
        answer = asyncio.run(main())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert answer["ok"] is False and "show_codes" in str(answer["error"]) and "masked" in str(answer["error"])


# --- role his: ordered hand-over --------------------------------------------------------------------


async def test_waiting_scans_come_before_live_ones_oldest_first_after_the_reply(rig: Rig) -> None:
    waiting = [scan(f"1345678901234500{i:02d}") for i in range(5)]
    for e in waiting:
        rig.hub.deliver(e)
    his = await AClient.connect(rig.path)
    his.writer.write(b'{"cmd":"subscribe","role":"his"}\n')
    # A live scan arriving right after the subscribe still goes behind the waiting ones.
    await until(lambda: any(s.role is not None for s in rig.hub.subscribers))
    live = scan("134567890123459999")
    rig.hub.deliver(live)
    first = await his.next()
    assert first["type"] == "reply" and first["ok"] and first["queued"] == 5
    got = [await his.next_scan() for _ in range(6)]
    assert [g["code"] for g in got] == [e.code for e in waiting] + [live.code]
    assert all(g["queued"] is True for g in got[:5]) and "queued" not in got[5]
    ages = [g["age_ms"] for g in got[:5]]
    # Oldest waited longest (each age is taken when its line is written: allow the clock's 1 ms tick).
    assert all(a + 1 >= b for a, b in zip(ages, ages[1:], strict=False))


async def test_device_filter_takes_only_its_devices_waiting_scans(rig: Rig) -> None:
    rig.hub.deliver(scan("134567890123450005"))
    kiosk_scan = scan("250000000000000006", device=KIOSK)
    rig.hub.deliver(kiosk_scan)
    kiosk_his = await AClient.connect(rig.path, role="his", devices=["kiosk-2"])
    assert (await kiosk_his.next_scan())["code"] == kiosk_scan.code
    assert rig.hub.counts()["queued"] == 1  # window-1's scan still waits for its own HIS
    assert await kiosk_his.quiet()


async def test_each_scan_goes_to_one_his_the_most_specific_then_the_earliest(rig: Rig) -> None:
    everything = await AClient.connect(rig.path, role="his")
    later = await AClient.connect(rig.path, role="his")
    specific = await AClient.connect(rig.path, role="his", devices=["kiosk-2"])
    rig.hub.deliver(scan("134567890123450007"))
    rig.hub.deliver(scan("250000000000000008", device=KIOSK))
    assert (await everything.next_scan())["device"] == DEVICE.name
    assert (await specific.next_scan())["device"] == KIOSK.name
    assert await later.quiet() and await everything.quiet() and await specific.quiet()


async def test_two_thousand_waiting_scans_through_a_tiny_buffer_arrive_exactly_once_in_order(tmp_path: Path) -> None:
    async with Rig(tmp_path / "s.sock", client_buffer_bytes=4096, queue_limit=5000) as r:
        waiting = [scan(f"13456789012{i:07d}") for i in range(2000)]
        for e in waiting:
            r.hub.deliver(e)
        his = await AClient.connect(r.path, role="his")
        got = [await his.next_scan() for _ in range(2000)]
        assert [g["code"] for g in got] == [e.code for e in waiting]
        assert len({g["id"] for g in got}) == 2000
        assert await his.quiet()
        assert r.delivered() == 2000 and r.hub.counts()["queued"] == 0


async def test_a_scan_past_its_ttl_is_never_written(rig: Rig) -> None:
    his = await AClient.connect(rig.path, role="his")
    stale = scan("134567890123450009", ttl_s=30)
    stale = dataclasses.replace(stale, expires_ns=time.monotonic_ns() - 1)
    rig.hub.deliver(stale)
    assert await his.quiet()
    assert rig.metrics.value("scannerd_expired_total", {"sink": "socket", "reason": "ttl_before_delivery"}) == 1


async def test_a_waiting_scan_expires_at_its_ttl_with_a_count(rig: Rig) -> None:
    rig.hub.deliver(scan("134567890123450010", ttl_s=0.2))
    await until(lambda: rig.hub.counts()["queued"] == 0)
    assert rig.metrics.value("scannerd_expired_total", {"sink": "socket", "reason": "ttl_passed_with_no_his"}) == 1
    his = await AClient.connect(rig.path, role="his")
    assert await his.quiet()


async def test_rejects_and_device_events_reach_subscribers_only(rig: Rig) -> None:
    quiet = await AClient.connect(rig.path)
    his = await AClient.connect(rig.path, role="his")
    rig.hub.deliver(RejectEvent("2026-11-25T10:00:00+08:00", "window-1", "too_long", "1345**78"))
    assert (await his.next())["type"] == "reject"
    assert await quiet.quiet()


# --- acks ----------------------------------------------------------------------------------------


async def test_unacked_scan_is_redelivered_with_the_same_id_to_the_next_his(rig: Rig) -> None:
    first = await AClient.connect(rig.path, role="his", ack=True)
    e = scan("134567890123450011")
    rig.hub.deliver(e)
    got = await first.next_scan()
    assert got["id"] == e.id and rig.delivered() == 0  # written, not yet delivered: no ack
    first.close()  # the HIS process crashes before acking
    await until(lambda: rig.hub.counts()["queued"] == 1)
    second = await AClient.connect(rig.path, role="his", ack=True)
    again = await second.next_scan()
    assert again["id"] == e.id and again["redelivered"] is True and again["code"] == e.code
    assert (await second.command({"cmd": "ack", "id": e.id}))["ok"]
    assert rig.delivered() == 1
    assert [o.outcome for o in rig.seen if o.event_id == e.id] == [Outcome.SENT, Outcome.REDELIVERED, Outcome.SENT, Outcome.DELIVERED]
    assert rig.metrics.value("scannerd_redelivered_total", {"sink": "socket"}) == 1


async def test_ack_errors_say_why(rig: Rig) -> None:
    his = await AClient.connect(rig.path, role="his", ack=True)
    e = scan("134567890123450012")
    rig.hub.deliver(e)
    await his.next_scan()
    assert (await his.command({"cmd": "ack", "id": e.id}))["ok"]
    again = await his.command({"cmd": "ack", "id": e.id})
    assert again["ok"] is False and "already acknowledged" in again["error"]
    unknown = await his.command({"cmd": "ack", "id": "01NOPE"})
    assert unknown["ok"] is False and "unknown scan id" in unknown["error"]
    short = scan("134567890123450013", ttl_s=0.3)
    rig.hub.deliver(short)
    await his.next_scan()
    await until(lambda: rig.hub.counts()["unacked"] == 0)
    late = await his.command({"cmd": "ack", "id": short.id})
    assert late["ok"] is False and "expired" in late["error"]
    assert rig.metrics.value("scannerd_expired_total", {"sink": "socket", "reason": "ttl_passed_unacked"}) == 1


async def test_an_unacked_scan_is_never_redelivered_after_its_ttl(rig: Rig) -> None:
    first = await AClient.connect(rig.path, role="his", ack=True)
    e = scan("134567890123450014", ttl_s=0.4)
    rig.hub.deliver(e)
    await first.next_scan()
    await asyncio.sleep(0.5)  # the TTL passes while it is unacked (time itself is the subject here)
    first.close()
    second = await AClient.connect(rig.path, role="his", ack=True)
    assert await second.quiet(0.3)
    assert rig.delivered() == 0


async def test_subscribe_errors_are_clear(rig: Rig) -> None:
    c = await AClient.connect(rig.path)
    for cmd, words in [
        ({"cmd": "subscribe"}, 'missing "role"'),
        ({"cmd": "subscribe", "role": "boss"}, '"role" must be one of "his" | "monitor"'),
        ({"cmd": "subscribe", "role": "monitor", "ack": True}, '"ack" is for role "his"'),
        ({"cmd": "subscribe", "role": "his", "show_codes": True}, "always receives full codes"),
        ({"cmd": "subscribe", "role": "his", "devices": "window-1"}, '"devices" must be a list'),
    ]:
        answer = await c.command(cmd)
        assert answer["ok"] is False and words in answer["error"], (cmd, answer)
    assert (await c.command({"cmd": "subscribe", "role": "his"}))["ok"]
    switch = await c.command({"cmd": "subscribe", "role": "monitor"})
    assert switch["ok"] is False and "already subscribed as his" in switch["error"]


async def test_stop_counts_what_still_waits(tmp_path: Path) -> None:
    r = Rig(tmp_path / "s.sock")
    await r.server.start()
    r.hub.deliver(scan("134567890123450015"))
    await r.server.stop()
    await r.hub.stop()
    assert r.metrics.value("scannerd_undelivered_total", {"sink": "socket", "reason": "stopped"}) == 1


async def test_a_server_on_a_new_path_serves_the_same_hub(tmp_path: Path) -> None:
    async with Rig(tmp_path / "a.sock") as r:
        r.hub.deliver(scan("134567890123450016"))
        moved = UnixSocketServer(dataclasses.replace(r.config, path=str(tmp_path / "b.sock")), r.hub, r.table.handle,
                                 hostname="h", commands=[])
        await moved.start()
        try:
            his = await AClient.connect(moved.config.path, role="his")
            assert (await his.next_scan())["code"] == "134567890123450016"
        finally:
            await moved.stop()


async def test_a_socket_directory_others_can_write_to_in_tmp_is_refused() -> None:
    directory = Path(tempfile.mkdtemp(prefix="scannerd-shared-", dir="/tmp"))
    try:
        os.chmod(directory, 0o777)  # as if another user had made it first for us
        with pytest.raises(OSError, match="has mode 0777: others may replace the socket"):
            await Rig(directory / "s.sock").server.start()
        assert not (directory / "s.sock").exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
