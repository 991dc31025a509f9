"""What `scannerd devices` says about USB scanners: interfaces, HID-POS or not, which mode.

Reads sysfs only (interface classes, report descriptors): nothing is opened, so it is safe while
the daemon runs. A scanner is in one of three modes, chosen by a configuration barcode from its
manual: keyboard (it types: evdev), serial (USB-COM / CDC-ACM: a tty) or HID-POS (usage page
0x008C: hidraw). Keyboard mode works, but HID-POS is immune to keyboard layouts, CapsLock and IMEs
and carries the AIM symbology: the hint says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .discovery import DeviceDescription
from .hid_descriptor import DescriptorError, find_pos_layout, parse_descriptor

SWITCH_HINT = ("keyboard mode: scanning the \"USB HID-POS\" configuration barcode in the scanner's manual "
               "switches it to HID-POS (raw bytes with the AIM symbology, immune to layouts, CapsLock and IMEs); "
               "then use transport = \"hidpos\"")

_CLASSES = {"03": "HID", "02": "CDC", "0a": "CDC data", "ff": "vendor", "08": "mass storage"}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            return fp.read().strip()
    except OSError:
        return ""


def usb_interfaces(port_path: str, sys_root: str = "/sys") -> list[dict[str, Any]]:
    """The interfaces of USB device `port_path` ("1-1.4") from sysfs, HID ones with their usage pages."""
    base = os.path.join(sys_root, "bus/usb/devices")
    out: list[dict[str, Any]] = []
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith(f"{port_path}:"))
    except OSError:
        return out
    for name in names:
        path = os.path.join(base, name)
        cls = _read(os.path.join(path, "bInterfaceClass")).lower()
        sub, proto = _read(os.path.join(path, "bInterfaceSubClass")), _read(os.path.join(path, "bInterfaceProtocol"))
        intf: dict[str, Any] = {"number": int(_read(os.path.join(path, "bInterfaceNumber")) or "0", 16),
                                "class": f"{_CLASSES.get(cls, cls or '?')} {cls}/{sub}/{proto}",
                                "name": _read(os.path.join(path, "interface"))}
        driver = os.path.join(path, "driver")
        intf["driver"] = os.path.basename(os.path.realpath(driver)) if os.path.exists(driver) else ""
        if cls == "03":
            intf["usage_pages"] = _hid_pages(path)
        out.append(intf)
    return out


def _hid_pages(interface_path: str) -> list[str]:
    pages: list[str] = []
    try:
        entries = sorted(os.listdir(interface_path))
    except OSError:
        return pages
    for entry in entries:
        descriptor = os.path.join(interface_path, entry, "report_descriptor")
        if not os.path.exists(descriptor):
            continue
        try:
            with open(descriptor, "rb") as fp:
                desc = parse_descriptor(fp.read())
        except (OSError, DescriptorError):
            continue
        pages.extend(f"0x{a >> 16:04X}" for a in desc.applications)
    return pages


def scanner_mode(usb_id: str, descs: Iterable[DeviceDescription], interfaces: list[dict[str, Any]]) -> str:
    """hid-pos | serial | keyboard | unknown, from the nodes the device has and its interfaces."""
    nodes = [d for d in descs if d.usb_id == usb_id]
    pages = {p for i in interfaces for p in i.get("usage_pages", ())}
    if any(d.subsystem == "hidraw" and d.hid_pos for d in nodes) or "0x008C" in pages:
        return "hid-pos"
    if any(d.subsystem == "tty" for d in nodes) or any(i["class"].startswith("CDC") for i in interfaces):
        return "serial"
    if any(d.subsystem == "input" and d.keyboard for d in nodes):
        return "keyboard"
    return "unknown"


def usb_scanner_info(usb_id: str, port_path: str, descs: Iterable[DeviceDescription],
                     sys_root: str = "/sys") -> dict[str, Any]:
    """The fields `scannerd devices` adds to a USB device's row."""
    descs = list(descs)
    interfaces = usb_interfaces(port_path, sys_root) if port_path else []
    mode = scanner_mode(usb_id, descs, interfaces)
    info: dict[str, Any] = {"mode": mode, "interfaces": interfaces,
                            "hid_pos": mode == "hid-pos"}
    vendor_pages = {p for i in interfaces for p in i.get("usage_pages", ())}
    if "0xFF8C" in vendor_pages:
        info["note"] = "also has a vendor 0xFF8C collection: scannerd reads the 0x008C one"
    if mode == "keyboard":
        info["hint"] = SWITCH_HINT
    return info


def describe_descriptor(raw: bytes) -> str:
    """One line about a report descriptor, for --dump-descriptor."""
    try:
        desc = parse_descriptor(raw)
    except DescriptorError as e:
        return f"{len(raw)} bytes; {e}"
    apps = ", ".join(f"0x{a >> 16:04X}:0x{a & 0xFFFF:02X}" for a in desc.applications) or "none"
    layout = find_pos_layout(desc)
    if layout is None:
        return f"{len(raw)} bytes; application collections {apps}; no HID-POS scanned-data report"
    parts = [f"report {layout.report_id}" if layout.report_id is not None else "no report ids",
             f"byte count @{layout.count_offset}" if layout.count_offset is not None else "no byte count",
             f"AIM @{','.join(map(str, layout.aim_offsets))}" if layout.aim_offsets else "no AIM field",
             f"data @{layout.data_offset}+{layout.data_length}",
             f"continued @{layout.continued[0]}.{layout.continued[1]}" if layout.continued else "no continued bit"]
    return f"{len(raw)} bytes; application collections {apps}; scanned data: {', '.join(parts)}"
