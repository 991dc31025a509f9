"""`scannerd devices`: every input device, serial port and USB device, and what scannerd does with it.

For a technician at the window: "is my scanner seen, would scannerd take it, and if not, why".
Nothing is opened: this reads udev/sysfs only, so it is safe while the daemon runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..config import Config, ScannerConfig
from ..i18n import _
from ..sources.discovery import (
    KNOWN_SCANNER_VENDORS,
    DeviceDescription,
    list_descriptions,
    match_device,
)
from ..sources.evdev_wedge import effective_grab
from ..sources.hid_inventory import describe_descriptor, usb_scanner_info
from ._common import add_config_option, config_or_exit_code


@dataclass(frozen=True, slots=True)
class UsbDescription:
    vid: str
    pid: str
    name: str
    serial: str = ""
    device_class: str = ""  # bDeviceClass, "09" for hubs
    port_path: str = ""  # sysfs name, e.g. "1-1.4"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("devices", help="list input devices, serial ports and USB ids, and what scannerd would do with each",
                       description="List devices and what scannerd would do with each (matched entry, auto-detected, "
                                   "ignored and why). Reads udev/sysfs only; opens nothing.")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="one JSON object per device")
    p.add_argument("--dump-descriptor", metavar="DEVICE",
                   help="print the HID report descriptor of a hidraw node (/dev/hidraw2) as hex, to send to the project")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dump_descriptor:
        return dump_descriptor(args.dump_descriptor)
    config = config_or_exit_code(args)
    if isinstance(config, int):
        return config
    try:
        import pyudev

        context = pyudev.Context()
        descs = list_descriptions(context)
        usb = list_usb(context)
    except Exception as e:  # no libudev / no /sys (containers)
        print(_("error: cannot enumerate devices through udev: {error}").format(error=f"{type(e).__name__}: {e}"), file=sys.stderr)
        return 1
    rows = report(config, descs, usb, readable=lambda p: os.access(p, os.R_OK))
    rows = configured(config, rows, usb) + rows
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    else:
        print(render(rows))
    return 0


def list_usb(context: Any) -> list[UsbDescription]:
    out = []
    for dev in context.list_devices(subsystem="usb", DEVTYPE="usb_device"):
        attrs = dev.attributes

        def get(name: str, attrs: Any = attrs) -> str:
            v = attrs.get(name)
            return v.decode("utf-8", "replace").strip() if isinstance(v, bytes) else ""

        name = " ".join(p for p in (get("manufacturer"), get("product")) if p)
        out.append(UsbDescription(get("idVendor").lower(), get("idProduct").lower(), name, get("serial"), get("bDeviceClass"),
                                  dev.sys_name))
    return out


def report(config: Config, descs: list[DeviceDescription], usb: list[UsbDescription],
           readable: Any = lambda _p: True, sys_root: str = "/sys") -> list[dict[str, Any]]:
    """One dict per device: kind, node/ids, action (config|auto|ignored|info) and the reason. Pure."""
    rows: list[dict[str, Any]] = []
    for d in descs:
        if d.subsystem == "usb":
            continue  # USB device nodes: the USB DEVICES section below
        r = match_device(config, d)
        row: dict[str, Any] = {
            "kind": {"input": "input", "hidraw": "hidraw"}.get(d.subsystem, "serial"),
            "devnode": d.devnode,
            "name": d.name,
            "usb": d.usb_id,
            "by_id": d.by_id,
            "action": r.action,
            "reason": r.reason,
        }
        if r.scanner is not None:
            row["scanner"] = r.scanner.name
            if d.subsystem == "input":
                row["grab"] = effective_grab(r.scanner)
                row["layout"] = r.scanner.layout
        if r.scanner is not None and not readable(d.devnode):
            row["warning"] = "no permission to open it: install the udev rules (group scannerd) or run as root"
        rows.append(row)
    vendors = set(KNOWN_SCANNER_VENDORS) | set(config.discovery.extra_vendor_ids)
    for u in usb:
        if u.device_class == "09":
            continue  # hubs
        usb_id = f"{u.vid}:{u.pid}"
        nodes = [d.devnode for d in descs if d.usb_id == usb_id]
        if u.vid in vendors and not nodes:
            action, reason = "info", ("scanner vendor with no keyboard, serial or hidraw node: if it is in HID-POS mode "
                                      'without hidraw, read it with transport = "hidpos", backend = "pyusb"')
        elif nodes:
            action, reason = "info", "nodes: " + ", ".join(nodes)
        else:
            action, reason = "info", "no input or serial node"
        row = {"kind": "usb", "usb": usb_id, "name": u.name, "serial": u.serial, "action": action, "reason": reason}
        if u.vid in vendors or any(d.subsystem == "hidraw" and d.hid_pos for d in descs if d.usb_id == usb_id):
            row.update(usb_scanner_info(usb_id, u.port_path, descs, sys_root))
        rows.append(row)
    return rows


def configured(config: Config, rows: list[dict[str, Any]], usb: list[UsbDescription],
               exists: Any = os.path.exists) -> list[dict[str, Any]]:
    """One row per [[scanner]] entry, found or missing, and why. Pure but for `exists`."""
    out: list[dict[str, Any]] = []
    for scanner in config.scanners:
        nodes = [str(r.get("devnode") or r.get("usb") or "?") for r in rows
                 if r.get("scanner") == scanner.name and r.get("action") == "config"]
        row: dict[str, Any] = {"kind": "scanner", "scanner": scanner.name, "transport": scanner.transport}
        if nodes:
            row.update(action="found", reason=_("found: {nodes}").format(nodes=", ".join(nodes)))
        elif scanner.path and exists(scanner.path):
            row.update(action="found", reason=_("{path} exists but udev does not list it (a pseudo-terminal, or a container); "
                                                "the daemon opens it directly").format(path=scanner.path))
        else:
            row.update(action="missing", reason=missing_reason(scanner, rows, usb))
        out.append(row)
    return out


def missing_reason(scanner: ScannerConfig, rows: list[dict[str, Any]], usb: list[UsbDescription]) -> str:
    """Why no device matches a [[scanner]] entry: the first criterion that nothing meets."""
    if scanner.path:
        return _("{path} does not exist: unplugged, or it has another name now (ls -l /dev/serial/by-id/ /dev/input/by-id/)").format(path=scanner.path)
    if scanner.usb:
        connected = [u for u in usb if f"{u.vid}:{u.pid}" == scanner.usb]
        if not connected:
            return _("no connected USB device has id {usb} (lsusb lists what is plugged in)").format(usb=scanner.usb)
        if not any(r.get("usb") == scanner.usb and r.get("kind") in ("input", "serial") for r in rows):
            return _("USB device {usb} is connected but has no keyboard or serial node: probably HID-POS or another USB mode").format(usb=scanner.usb)
        if scanner.match_name or scanner.by_id:
            return _("USB device {usb} is connected but not every criterion of the entry matches (match_name, by_id): see its line below").format(usb=scanner.usb)
        return _("USB device {usb} is connected but its node is of another transport than {transport!r}").format(usb=scanner.usb, transport=scanner.transport)
    if scanner.by_id:
        return _("no device has the by-id link {by_id}").format(by_id=scanner.by_id)
    if scanner.match_name:
        return _("no input device name matches {regex!r}").format(regex=scanner.match_name)
    return _("the entry gives no path, usb, by_id or match_name to find it by")


def render(rows: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    titles = {
        "scanner": _("CONFIGURED SCANNERS ([[scanner]] entries)"),
        "input": _("INPUT DEVICES (keyboard wedge: evdev)"),
        "serial": _("SERIAL PORTS"),
        "hidraw": _("HID NODES (HID-POS: hidraw)"),
        "usb": _("USB DEVICES"),
    }
    marks = {"config": _("→ USE"), "auto": _("→ AUTO"), "ignored": _("  skip"), "info": "  ",
             "found": _("→ FOUND"), "missing": _("  MISSING")}
    for kind, title in titles.items():
        group = [r for r in rows if r["kind"] == kind]
        lines.append(title)
        if not group:
            lines.append(_("  (none: scanners are auto-detected)") if kind == "scanner" else _("  (none)"))
        for r in group:
            if kind == "scanner":
                lines.append(f"  {r['scanner']}  ({r['transport']})")
            elif kind == "usb":
                lines.append(f"  {r['usb']}  {r['name'] or '?'}")
            else:
                lines.append(f"  {r['devnode']}  {r['usb'] or '-'}  {r['name'] or '?'}")
                if r["by_id"]:
                    lines.append(f"      by-id: {r['by_id']}")
            # Reasons from discovery are English text; the fixed ones have a translation.
            mark = marks.get(r["action"], "  ")
            lines.append(f"      {mark}: {_(r['reason'])}".rstrip())
            if "scanner" in r and kind != "scanner":
                extra = ""
                if "grab" in r:
                    extra = _(", grab={grab}, layout={layout}").format(grab=_("yes") if r.get("grab") else _("no"), layout=r["layout"])
                lines.append(_("      as scanner {name!r}{extra}").format(name=r["scanner"], extra=extra))
            if "warning" in r:
                lines.append(f"      ! {_(r['warning'])}")
            lines.extend(render_hid(r))
        lines.append("")
    return "\n".join(lines).rstrip()


def render_hid(r: dict[str, Any]) -> list[str]:
    """The HID-POS lines of a USB device's row: mode, interfaces, and the switch hint."""
    if "mode" not in r:
        return []
    lines = [f"      mode: {r['mode']}"]
    for i in r["interfaces"]:
        pages = f" pages {', '.join(i['usage_pages'])}" if i.get("usage_pages") else ""
        name = f" \"{i['name']}\"" if i["name"] else ""
        lines.append(f"      interface {i['number']}: {i['class']}{name}{pages} driver {i['driver'] or '-'}")
    lines.extend(f"      {key}: {r[key]}" for key in ("note", "hint") if key in r)
    return lines


def dump_descriptor(device: str, sys_root: str = "/sys") -> int:
    """`--dump-descriptor /dev/hidrawN`: the report descriptor as hex on stdout, a summary on stderr."""
    from ..sources.hidpos import hidraw_descriptor, sysfs_descriptor

    raw = sysfs_descriptor(os.path.realpath(device), sys_root)
    if raw is None:
        try:
            fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            print(f"error: cannot read the report descriptor of {device}: {e.strerror or e} "
                  "(give a /dev/hidrawN node; see `scannerd devices`)", file=sys.stderr)
            return 1
        try:
            raw = hidraw_descriptor(fd)
        except OSError as e:
            print(f"error: {device} is not a hidraw node ({e.strerror or e})", file=sys.stderr)
            return 1
        finally:
            os.close(fd)
    print(raw.hex())
    print(describe_descriptor(raw), file=sys.stderr)
    return 0
