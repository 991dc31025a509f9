"""Daemon wiring for hotplug: what discovery reports starts, follows and stops sources."""

from __future__ import annotations

import asyncio
import os
import termios
import tty
from collections.abc import Callable
from pathlib import Path

from scannerd.config import Config, ScannerConfig, SocketConfig
from scannerd.model import Event, ScanEvent
from scannerd.service import Daemon
from scannerd.sources.discovery import FoundDevice

from helpers import wechat_code


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    def deliver(self, event: Event) -> None:
        self.events.put_nowait(event)

    async def next(self, kind: type, timeout: float = 5) -> Event:
        while True:
            e = await asyncio.wait_for(self.events.get(), timeout)
            if isinstance(e, kind):
                return e


async def until(condition: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(master, when=termios.TCSANOW)
    return master, slave, os.ttyname(slave)


def found(devnode: str) -> FoundDevice:
    # As discovery auto-detects it (no by-id link here): named from its ids, path = the node.
    scanner = ScannerConfig(name="serial-0c2e-0b61", transport="serial", path=devnode)
    return FoundDevice("tty", devnode, "Honeywell", "0c2e", "0b61", "", scanner)


async def test_auto_detected_serial_scanner_restarts_on_its_new_node_after_replug(tmp_path: Path) -> None:
    daemon = Daemon(Config(socket=SocketConfig(path=str(tmp_path / "s.sock"))))
    sink = Collect()
    daemon.pipeline.set_sinks([sink])
    m1, s1, node1 = open_pty()
    daemon._on_device_added(found(node1))
    await until(lambda: daemon.running["serial-0c2e-0b61"].source.present, "the port opened")
    os.close(s1)

    m2, s2, node2 = open_pty()  # opened before the first closes: a different node, like ttyACM1
    assert node2 != node1
    os.close(m1)  # unplug
    # A discovered port is not polled under its old node name (another device may get it):
    # the source ends and frees its name for the replug.
    await until(lambda: "serial-0c2e-0b61" not in daemon.running, "the unplugged port's source ended")
    daemon._on_device_added(found(node2))  # udev: the scanner is back under another node
    await until(lambda: (r := daemon.running.get("serial-0c2e-0b61")) is not None and r.source.present
                and r.source.device.path == node2, "a source on the new node")
    os.close(s2)
    code = wechat_code()
    os.write(m2, f"{code}\r".encode())
    event = await sink.next(ScanEvent)
    assert isinstance(event, ScanEvent) and event.code == code and event.device.path == node2
    for name in list(daemon.running):
        await daemon._stop_source(name)
    os.close(m2)


async def test_second_add_for_a_present_device_does_not_start_another_source(tmp_path: Path) -> None:
    daemon = Daemon(Config(socket=SocketConfig(path=str(tmp_path / "s.sock"))))
    daemon.pipeline.set_sinks([Collect()])
    master, slave, node = open_pty()
    daemon._on_device_added(found(node))
    await asyncio.sleep(0.1)
    first = daemon.running["serial-0c2e-0b61"].source
    daemon._on_device_added(found(node))
    await asyncio.sleep(0.1)
    assert daemon.running["serial-0c2e-0b61"].source is first
    await daemon._stop_source("serial-0c2e-0b61")
    os.close(master)
    os.close(slave)


async def test_remove_and_add_in_one_udev_batch_restarts_the_scanner(tmp_path: Path) -> None:
    # A USB reset: udev's remove and add for the same scanner arrive back to back.
    daemon = Daemon(Config(socket=SocketConfig(path=str(tmp_path / "s.sock"))))
    sink = Collect()
    daemon.pipeline.set_sinks([sink])
    m1, s1, node = open_pty()
    daemon._on_device_added(found(node))
    await until(lambda: daemon.running["serial-0c2e-0b61"].source.present, "the port opened")
    first = daemon.running["serial-0c2e-0b61"].source
    daemon._on_device_removed(node)
    daemon._on_device_added(found(node))
    await until(lambda: (r := daemon.running.get("serial-0c2e-0b61")) is not None and r.source is not first
                and r.source.present, "the scanner restarted after remove+add")
    os.close(s1)
    code = wechat_code()
    os.write(m1, f"{code}\r".encode())
    event = await sink.next(ScanEvent)
    assert isinstance(event, ScanEvent) and event.code == code
    for name in list(daemon.running):
        await daemon._stop_source(name)
    os.close(m1)


async def test_reload_from_auto_detect_to_a_configured_entry_hands_the_device_over(tmp_path: Path) -> None:
    """The auto-detected source held the port; the new entry for the same device used to fail
    for ever (port locked) while scans kept arriving under the old name."""
    sock = tmp_path / "s.sock"
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[socket]\npath = "{sock}"\n')
    daemon = Daemon(Config(socket=SocketConfig(path=str(sock))), str(config_file))
    daemon.socket_server = daemon._make_socket_server(daemon.config)
    await daemon.socket_server.start()
    sink = Collect()
    daemon.pipeline.set_sinks([sink])
    master, slave, node = open_pty()
    daemon._on_device_added(found(node))
    await until(lambda: daemon.running["serial-0c2e-0b61"].source.present, "the auto-detected port opened")
    os.close(slave)
    config_file.write_text(f'[socket]\npath = "{sock}"\n[discovery]\nauto = false\n'
                           f'[[scanner]]\nname = "window-1"\npath = "{node}"\nterminator = "CR"\n')
    assert await daemon.reload()
    daemon.pipeline.set_sinks([sink])  # the reload set the daemon's own sinks again
    await until(lambda: (r := daemon.running.get("window-1")) is not None and r.source.present, "the entry opened the port")
    assert "serial-0c2e-0b61" not in daemon.running
    code = wechat_code()
    os.write(master, f"{code}\r".encode())
    event = await sink.next(ScanEvent)
    assert isinstance(event, ScanEvent) and event.code == code and event.device.name == "window-1"
    for name in list(daemon.running):
        await daemon._stop_source(name)
    await daemon.socket_server.stop()
    os.close(master)
