"""The daemon drives a HID-POS scanner's own output reports: arm / disarm switch its trigger
(off again when the arm's TTL runs out), and with beep_on_reject a read gets its beep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hid_hidraw import Collected, Node, make, until

from scannerd.config import Config, ScannerConfig, SocketConfig
from scannerd.model import Rejected
from scannerd.service import Daemon, _Running
from scannerd.sources.hidpos import control_report

TRIGGER_ON = bytes([0xFD, 0x03, 0x16, 0x54, 0x0D]).ljust(64, b"\0")
TRIGGER_OFF = bytes([0xFD, 0x03, 0x16, 0x55, 0x0D]).ljust(64, b"\0")


async def recv(node: Node) -> bytes:
    """The next report the scanner receives (the daemon writes output reports off the loop)."""
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(node.theirs, 64), 5)


@pytest.fixture
def node() -> Iterator[Node]:
    n = Node()
    yield n
    n.close()


async def test_arm_switches_a_hidpos_trigger_on_and_the_ttl_switches_it_off(tmp_path: Path, node: Node) -> None:
    scanner = ScannerConfig(name="w3", transport="hidpos", usb="0c2e:0967", path="/dev/hidraw0", role="kiosk")
    daemon = Daemon(Config(socket=SocketConfig(path=str(tmp_path / "s.sock")), scanners=(scanner,)))
    source = make(node, Collected(), beep_on_reject=True)
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: source.present, what="present")
    daemon.running["w3"] = _Running(scanner, source, task)
    daemon.pipeline.register_device(source.device)
    node.theirs.setblocking(False)

    reply = await daemon.arm("w3", 0.3, None, None)
    assert reply["scanner"] == "sent"
    assert await recv(node) == TRIGGER_ON
    t0 = time.monotonic()
    assert await recv(node) == TRIGGER_OFF  # the arm's TTL ran out: the window closes
    assert time.monotonic() - t0 >= 0.2

    assert (await daemon.arm("w3", None, None, None))["scanner"] == "sent"
    assert await recv(node) == TRIGGER_ON
    assert (await daemon.disarm("w3"))["scanner"] == "sent"
    assert await recv(node) == TRIGGER_OFF
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_read_gets_its_beep_through_the_daemon(tmp_path: Path, node: Node) -> None:
    scanner = ScannerConfig(name="w3", transport="hidpos", usb="0c2e:0967", path="/dev/hidraw0")
    daemon = Daemon(Config(socket=SocketConfig(path=str(tmp_path / "s.sock")), scanners=(scanner,)))
    source = make(node, Collected(), beep_on_reject=True)
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: source.present, what="present")
    daemon.running["w3"] = _Running(scanner, source, task)
    daemon.pipeline.set_sinks([])
    node.theirs.setblocking(False)
    daemon._start_source(scanner, "/dev/hidraw0")  # the name is taken: nothing new starts
    emit = daemon._emitter(source.device)
    emit(Rejected("w3", "too_long", "x" * 10, time.monotonic_ns()))
    assert await recv(node) == control_report("bad", source.descriptor, source.vid)  # the error beep
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
