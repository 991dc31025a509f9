"""`scannerd devices` for USB scanners: interfaces, HID-POS or not, mode, the switch hint; --dump-descriptor."""

from __future__ import annotations

from pathlib import Path

import pytest
from hidpos_fixtures import (
    DUAL_PAGE_DESCRIPTOR,
    HONEYWELL_DESCRIPTOR,
    KEYBOARD_DESCRIPTOR,
)

from scannerd.commands.devices import UsbDescription, dump_descriptor, render, report
from scannerd.config import parse_config
from scannerd.sources.discovery import DeviceDescription
from scannerd.sources.hid_inventory import SWITCH_HINT, describe_descriptor


def interface(root: Path, port: str, number: int, cls: str, sub: str, proto: str, name: str = "",
              descriptor: bytes | None = None, driver: str = "usbhid") -> None:
    d = root / "bus/usb/devices" / f"{port}:1.{number}"
    d.mkdir(parents=True)
    for key, value in (("bInterfaceNumber", f"{number:02x}"), ("bInterfaceClass", cls), ("bInterfaceSubClass", sub),
                       ("bInterfaceProtocol", proto), ("interface", name)):
        (d / key).write_text(value + "\n")
    drivers = root / "bus/usb/drivers" / driver
    drivers.mkdir(parents=True, exist_ok=True)
    (d / "driver").symlink_to(drivers)
    if descriptor is not None:
        hid = d / f"0003:0C2E:0967.000{number + 1}"
        hid.mkdir()
        (hid / "report_descriptor").write_bytes(descriptor)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    interface(tmp_path, "1-1", 0, "03", "00", "00", "HID POS", HONEYWELL_DESCRIPTOR)  # N5600 in HID-POS mode
    interface(tmp_path, "1-2", 0, "03", "01", "01", "", KEYBOARD_DESCRIPTOR)  # a 1900 in keyboard mode
    interface(tmp_path, "1-3", 0, "03", "00", "00", "", DUAL_PAGE_DESCRIPTOR)  # 0b87: 0xFF8C beside 0x008C
    return tmp_path


def test_rows_say_mode_interfaces_and_hint(sysfs: Path) -> None:
    descs = [
        DeviceDescription("hidraw", "/dev/hidraw0", "Honeywell N5600", "0c2e", "0967", "usb", hid_pos=True, port_path="1-1"),
        DeviceDescription("input", "/dev/input/event5", "Honeywell 1900", "0c2e", "0b61", "usb", keyboard=True),
        DeviceDescription("hidraw", "/dev/hidraw1", "Honeywell 1900", "0c2e", "0b61", "usb", hid_pos=False),
        DeviceDescription("hidraw", "/dev/hidraw2", "Honeywell 0b87", "0c2e", "0b87", "usb", hid_pos=True),
        DeviceDescription("usb", "/dev/bus/usb/001/002", "Honeywell N5600", "0c2e", "0967", "usb"),
    ]
    usb = [UsbDescription("0c2e", "0967", "Honeywell N5600", "S1", "00", "1-1"),
           UsbDescription("0c2e", "0b61", "Honeywell 1900", "S2", "00", "1-2"),
           UsbDescription("0c2e", "0b87", "Honeywell 0b87", "S3", "00", "1-3"),
           UsbDescription("046d", "c31c", "Logitech keyboard", "", "00", "1-4")]
    rows = report(parse_config({}), descs, usb, sys_root=str(sysfs))
    hid = {r["devnode"]: r for r in rows if r["kind"] == "hidraw"}
    assert hid["/dev/hidraw0"]["action"] == "auto" and hid["/dev/hidraw1"]["action"] == "ignored"
    assert not any(r.get("devnode") == "/dev/bus/usb/001/002" for r in rows)
    by = {r["usb"]: r for r in rows if r["kind"] == "usb"}
    n5600 = by["0c2e:0967"]
    assert (n5600["mode"], n5600["hid_pos"]) == ("hid-pos", True)
    assert n5600["interfaces"] == [{"number": 0, "class": "HID 03/00/00", "name": "HID POS", "driver": "usbhid",
                                    "usage_pages": ["0x008C"]}]
    assert "hint" not in n5600
    kbd = by["0c2e:0b61"]
    assert (kbd["mode"], kbd["hint"]) == ("keyboard", SWITCH_HINT)
    assert "0xFF8C" in by["0c2e:0b87"]["note"]
    assert "mode" not in by["046d:c31c"]  # not a scanner: nothing added
    text = render(rows)
    assert "HID NODES (HID-POS: hidraw)\n  /dev/hidraw0  0c2e:0967  Honeywell N5600" in text
    assert '      interface 0: HID 03/00/00 "HID POS" pages 0x008C driver usbhid' in text
    assert "      mode: keyboard\n      interface 0: HID 03/01/01 pages 0x0001 driver usbhid\n      hint: keyboard mode" in text


def test_dump_descriptor(sysfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = sysfs / "class/hidraw/hidraw0/device"
    node.mkdir(parents=True)
    (node / "report_descriptor").write_bytes(HONEYWELL_DESCRIPTOR)
    assert dump_descriptor("/dev/hidraw0", sys_root=str(sysfs)) == 0
    out, err = capsys.readouterr()
    assert bytes.fromhex(out.strip()) == HONEYWELL_DESCRIPTOR
    assert "application collections 0x008C:0x02; scanned data: report 2, byte count @1, AIM @2,3,4, data @5+56, continued @63.0" in err
    assert dump_descriptor(str(sysfs / "nothing"), sys_root=str(sysfs)) == 1
    assert "cannot read the report descriptor" in capsys.readouterr().err


def test_describe_descriptor_lines() -> None:
    assert describe_descriptor(KEYBOARD_DESCRIPTOR).endswith("application collections 0x0001:0x06; no HID-POS scanned-data report")
    assert "report descriptor byte 0" in describe_descriptor(b"\x05")
