"""The hidraw adapter on the event loop. A SOCK_SEQPACKET socketpair stands in for /dev/hidrawN
(one report per read(), EOF when the far end goes, writes are output reports); the real node,
HIDIOCGRDESC included, is exercised by the VM rig's gadget scenarios."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator

import pytest
from hidpos_fixtures import (
    DUAL_PAGE_DESCRIPTOR,
    HONEYWELL_DESCRIPTOR,
    KEYBOARD_DESCRIPTOR,
    VENDOR_ONLY_DESCRIPTOR,
    pos_reports,
    until,
)

from scannerd.config import ScannerConfig, parse_config
from scannerd.framing import FramingSpec
from scannerd.model import DeviceInfo, DeviceStateEvent, Frame, Rejected
from scannerd.sources import registry
from scannerd.sources.base import SourceRequest
from scannerd.sources.hidpos import (
    HidPosSettings,
    HidrawSource,
    PyusbSource,
    pos_problem,
)


class Node:
    """The far end of a fake hidraw node: the test is the scanner."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)

    def opener(self, path: str) -> int:
        return os.dup(self.ours.fileno())

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def node() -> Iterator[Node]:
    n = Node()
    yield n
    n.close()


class Collected:
    def __init__(self) -> None:
        self.items: list[Frame | Rejected] = []
        self.states: list[DeviceStateEvent] = []


def make(node: Node, out: Collected, descriptor: bytes = HONEYWELL_DESCRIPTOR, **settings: object) -> HidrawSource:
    scanner = ScannerConfig(name="w3", transport="hidpos", usb="0c2e:0967", path="/dev/hidraw0")
    device = DeviceInfo("w3", "hidpos", "outpatient", "window", "/dev/hidraw0")
    return HidrawSource(device, FramingSpec(terminator="\r", idle_gap_ms=2000), out.items.append, out.states.append,
                        scanner, HidPosSettings.from_mapping(settings), opener=node.opener,
                        descriptor_of=lambda fd: descriptor)


async def test_three_report_code_then_unplug_mid_code(node: Node) -> None:
    out = Collected()
    source = make(node, out)
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: source.present, what="present")
    assert source.layout_reason == "report descriptor"
    code = "".join(str(i % 10) for i in range(150))
    for r in pos_reports(code.encode(), aim=b"]Q1"):
        node.theirs.send(r)
    await until(lambda: out.items, what="a frame")
    frame = out.items[0]
    assert isinstance(frame, Frame) and (frame.text, frame.symbology, frame.ended_by) == (code, "qr", "report")
    assert source.reports == 3
    node.theirs.send(pos_reports(b"1" * 80)[0])  # first half of a code, then the cable goes
    await until(lambda: source.reports == 4, what="the first half")
    node.theirs.close()
    await asyncio.wait_for(task, timeout=10)
    assert [(i.reason, len(i.text)) for i in out.items[1:] if isinstance(i, Rejected)] == [("device_removed", 56)]
    assert [s.state for s in out.states] == ["present", "absent"]


async def test_beep_and_trigger_are_output_reports(node: Node) -> None:
    out = Collected()
    source = make(node, out, beep_on_reject=True)
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: source.present, what="present")
    source.feedback(True)
    source.control("disable")
    assert node.theirs.recv(64) == bytes([0x04, 0x40])
    assert node.theirs.recv(64) == bytes([0xFD, 0x03, 0x16, 0x55, 0x0D]).ljust(64, b"\0")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_feedback_is_silent_without_beep_on_reject(node: Node) -> None:
    out = Collected()
    source = make(node, out)
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: source.present, what="present")
    source.feedback(False)
    node.theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        node.theirs.recv(64)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(("descriptor", "reason"), [
    (VENDOR_ONLY_DESCRIPTOR, "vendor usage page 0xFF8C"),
    (KEYBOARD_DESCRIPTOR, "no bar code scanner collection (usage page 0x008C); application collections: 0x0001:0x06"),
    (b"\x05", "unreadable report descriptor"),
])
async def test_nodes_that_are_not_hid_pos_are_refused(node: Node, descriptor: bytes, reason: str) -> None:
    out = Collected()
    await asyncio.wait_for(make(node, out, descriptor).run(), timeout=10)
    assert out.states[-1].state == "error" and reason in out.states[-1].reason
    assert pos_problem(DUAL_PAGE_DESCRIPTOR) is None


async def test_a_flood_of_reports_does_not_hold_the_loop(node: Node) -> None:
    out = Collected()
    source = make(node, out)
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: source.present, what="present")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.get_running_loop().create_task(ticker())
    reports = pos_reports(b"12345678") * 2000

    def writer() -> None:
        for r in reports:
            node.theirs.send(r)

    th = threading.Thread(target=writer)
    th.start()
    await until(lambda: len(out.items) == 2000, timeout=60, what="2000 frames")
    th.join()
    t.cancel()
    assert ticks > 2000 // 64  # the loop ran between batches of reads
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_registry_builds_the_backend_the_entry_asks_for(tmp_path: object) -> None:
    config = parse_config({"scanner": [
        {"name": "a", "transport": "hidpos", "usb": "0c2e:0967", "path": "/dev/hidraw3"},
        {"name": "b", "transport": "hidpos", "usb": "0c2e:0967", "backend": "pyusb", "serial": "X1",
         "beep_on_reject": True},
        {"name": "c", "transport": "hidpos", "usb": "0c2e:0967", "port_path": "1-1.4"},
    ]})
    a, b, c = config.scanners
    assert HidPosSettings.from_mapping(a.settings) == HidPosSettings()
    assert HidPosSettings.from_mapping(b.settings) == HidPosSettings(backend="pyusb", serial="X1", beep_on_reject=True)
    assert HidPosSettings.from_mapping(c.settings).port_path == "1-1.4"
    hidpos = registry.get("hidpos")
    assert set(hidpos.udev_subsystems) == {"hidraw", "usb"}
    spec = FramingSpec()

    def build(s: ScannerConfig, path: str) -> object:
        dev = DeviceInfo(s.name, "hidpos", "outpatient", "window", path)
        return hidpos.source_class().from_request(SourceRequest(dev, s, spec, lambda _i: None, lambda _s: None, reopen=False))

    assert isinstance(build(a, "/dev/hidraw3"), HidrawSource)
    assert isinstance(build(b, "/dev/hidraw3"), PyusbSource)
    assert isinstance(build(a, "/dev/bus/usb/001/004"), PyusbSource)  # no hidraw node: libusb


@pytest.mark.parametrize(("unplug", "reason"), [(True, "device_removed"), (False, "stopped")])
async def test_reports_still_queued_when_stopped_are_not_lost(node: Node, unplug: bool, reason: str) -> None:
    """The daemon cancels a source on the udev remove (or on stop) before the loop has read what
    the kernel still holds: a complete code there is delivered, a half one is a reject."""
    out = Collected()
    source = make(node, out)
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: source.present, what="present")
    for r in pos_reports(b"134567890123456789") + pos_reports(b"2" * 100)[:1]:
        node.theirs.send(r)
    if unplug:
        node.theirs.close()
    task.cancel()  # before the loop ran the reader
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(type(i).__name__, getattr(i, "reason", None)) for i in out.items] == [("Frame", None), ("Rejected", reason)]
    assert out.items[0].text == "134567890123456789"
