"""Discovery of HID-POS scanners: hidraw nodes by report descriptor, USB device nodes for pyusb entries."""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hidpos_fixtures import (
    HONEYWELL_DESCRIPTOR,
    KEYBOARD_DESCRIPTOR,
    VENDOR_ONLY_DESCRIPTOR,
    until,
)

from scannerd.config import parse_config
from scannerd.sources import discovery
from scannerd.sources.discovery import (
    Discovery,
    FoundDevice,
    describe,
    match_device,
    resolve_device,
)

_SYSFS = tempfile.TemporaryDirectory(prefix="hid-sysfs-")


@dataclass
class Dev:
    subsystem: str
    device_node: str | None
    attributes: dict[str, bytes] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    device_links: list[str] = field(default_factory=list)
    parent: Dev | None = None
    usb: Dev | None = None
    sys_name: str = ""
    sys_path: str = ""
    action: str | None = None

    def find_parent(self, subsystem: str, device_type: str | None = None) -> Dev | None:
        return self.usb if subsystem == "usb" else None


def usb_device(serial: str = "19123B4A21", port: str = "1-1.4", node: str = "/dev/bus/usb/001/005") -> Dev:
    return Dev("usb", node, {"idVendor": b"0c2e", "idProduct": b"0967", "serial": serial.encode(),
                             "manufacturer": b"Honeywell", "product": b"N5600"},
               {"DEVTYPE": "usb_device"}, sys_name=port)


def hidraw(n: int, descriptor: bytes = HONEYWELL_DESCRIPTOR, usb: Dev | None = None) -> Dev:
    # The HID device's sysfs directory with its binary report_descriptor, as the kernel has it.
    path = Path(_SYSFS.name) / f"0003:0C2E:0967.{n:04X}"
    path.mkdir(exist_ok=True)
    (path / "report_descriptor").write_bytes(descriptor)
    hid = Dev("hid", None, sys_path=str(path))
    return Dev("hidraw", f"/dev/hidraw{n}", parent=hid, usb=usb or usb_device())


def config(*scanners: dict[str, Any], auto: bool = True) -> Any:
    return parse_config({"scanner": list(scanners), "discovery": {"auto": auto}})


def desc(dev: Dev) -> discovery.DeviceDescription:
    d = describe(dev)
    assert d is not None
    return d


def test_describe_hidraw_and_usb_device() -> None:
    d = desc(hidraw(0))
    assert (d.subsystem, d.devnode, d.vid, d.pid, d.serial, d.port_path, d.hid_pos, d.name) == (
        "hidraw", "/dev/hidraw0", "0c2e", "0967", "19123B4A21", "1-1.4", True, "Honeywell N5600")
    assert not desc(hidraw(1, VENDOR_ONLY_DESCRIPTOR)).hid_pos
    assert not desc(hidraw(2, KEYBOARD_DESCRIPTOR)).hid_pos
    u = desc(usb_device())
    assert (u.subsystem, u.devnode, u.usb_id, u.hid_pos) == ("usb", "/dev/bus/usb/001/005", "0c2e:0967", False)
    assert describe(Dev("usb", "/dev/bus/usb/001", properties={"DEVTYPE": "usb_interface"})) is None
    assert describe(Dev("hidraw", "/dev/hidraw9")) is None  # no USB parent (Bluetooth, uhid)


def test_auto_detects_hid_pos_nodes_only() -> None:
    cfg = config()
    r = match_device(cfg, desc(hidraw(0)))
    assert r.action == "auto" and r.scanner is not None
    assert (r.scanner.transport, r.scanner.path, r.scanner.usb) == ("hidpos", "/dev/hidraw0", "0c2e:0967")
    assert r.scanner.name == "hidpos-0c2e-0967-19123B4A21"
    assert match_device(cfg, desc(hidraw(1, VENDOR_ONLY_DESCRIPTOR))).action == "ignored"
    assert match_device(cfg, desc(hidraw(2, KEYBOARD_DESCRIPTOR))).action == "ignored"
    assert match_device(cfg, desc(usb_device())).action == "ignored"  # only pyusb entries take USB nodes
    assert match_device(config(auto=False), desc(hidraw(0))).action == "ignored"


def test_entries_pick_identical_scanners_by_serial_or_port() -> None:
    cfg = config({"name": "w1", "transport": "hidpos", "usb": "0c2e:0967", "serial": "AAA"},
                 {"name": "w2", "transport": "hidpos", "usb": "0c2e:0967", "port_path": "1-2"})
    a = desc(hidraw(0, usb=usb_device(serial="AAA", port="1-1")))
    b = desc(hidraw(1, usb=usb_device(serial="BBB", port="1-2")))
    c = desc(hidraw(2, usb=usb_device(serial="CCC", port="1-3")))
    ra, rb, rc = (match_device(cfg, d) for d in (a, b, c))
    assert (ra.action, ra.scanner.name if ra.scanner else None) == ("config", "w1")
    assert (rb.action, rb.scanner.name if rb.scanner else None) == ("config", "w2")
    assert "by usb, port_path" in rb.reason
    assert rc.action == "ignored"


def test_backend_decides_which_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "hidraw_available", lambda sys_root="/sys": True)
    raw_entry = {"name": "w1", "transport": "hidpos", "usb": "0c2e:0967"}
    usb_entry = {"name": "w1", "transport": "hidpos", "usb": "0c2e:0967", "backend": "pyusb"}
    assert match_device(config(raw_entry), desc(hidraw(0))).action == "config"
    assert match_device(config(raw_entry), desc(usb_device())).action == "ignored"
    r = match_device(config(usb_entry), desc(hidraw(0)))
    assert r.action == "ignored" and 'backend = "pyusb"' in r.reason
    assert match_device(config(usb_entry), desc(usb_device())).action == "config"
    vendor = match_device(config(raw_entry), desc(hidraw(1, VENDOR_ONLY_DESCRIPTOR)))
    assert vendor.action == "ignored" and "0x008C" in vendor.reason
    # No hidraw in this kernel: the USB device node is the only way in, whatever the backend.
    monkeypatch.setattr(discovery, "hidraw_available", lambda sys_root="/sys": False)
    assert match_device(config(raw_entry), desc(usb_device())).action == "config"


def test_keyboard_entries_do_not_claim_the_usb_device() -> None:
    cfg = config({"name": "k1", "transport": "evdev", "usb": "0c2e:0967"})
    r = match_device(cfg, desc(usb_device()))
    assert r.action == "ignored" and "k1" not in r.reason


def test_resolve_hidraw_for_record() -> None:
    cfg = config()
    descs = [desc(hidraw(0)), desc(hidraw(1, KEYBOARD_DESCRIPTOR))]
    assert resolve_device(cfg, None, descs, transport="hidpos") == ("/dev/hidraw0", match_device(cfg, descs[0]).scanner)
    path, scanner = resolve_device(cfg, "/dev/hidraw1", descs, transport="hidpos")  # type: ignore[misc]
    assert path == "/dev/hidraw1" and scanner.transport == "hidpos"


class Monitor:
    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.pending: list[Dev] = []

    def start(self) -> None:
        pass

    def fileno(self) -> int:
        return self.r.fileno()

    def poll(self, timeout: float | None = None) -> Dev | None:
        if not self.pending:
            return None
        self.r.recv(1)
        return self.pending.pop(0)

    def emit(self, action: str, dev: Dev) -> None:
        dev.action = action
        self.pending.append(dev)
        self.w.send(b"x")


class Context:
    def __init__(self, devices: list[Dev]) -> None:
        self.devices = devices

    def list_devices(self, subsystem: str) -> list[Dev]:
        return [d for d in self.devices if d.subsystem == subsystem]


async def test_hotplug_of_a_hidraw_scanner() -> None:
    monitor = Monitor()
    added: list[FoundDevice] = []
    removed: list[str] = []
    d = Discovery(config(), added.append, removed.append, context=Context([]), monitor=monitor)
    await d.start()
    try:
        node = hidraw(3)
        monitor.emit("add", node.usb)  # type: ignore[arg-type]  # the USB device first, as the kernel does
        monitor.emit("add", hidraw(4, KEYBOARD_DESCRIPTOR))
        monitor.emit("add", node)
        await until(lambda: added, what="the scanner")
        assert [(f.devnode, f.scanner.transport) for f in added] == [("/dev/hidraw3", "hidpos")]
        monitor.emit("remove", node)
        await until(lambda: removed, what="its removal")
        assert removed == ["/dev/hidraw3"]
    finally:
        d.stop()
        monitor.r.close()
        monitor.w.close()
