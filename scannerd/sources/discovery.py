"""Which devices are scanners: config matching, auto-detection, and udev hotplug.

match_device() is pure and decides, for one device description, between:
- "config": a [[scanner]] entry matches. Every criterion the entry gives must hold (path,
  usb = "vid:pid", match_name regex, by_id), so `usb` + `match_name` can pick one interface of
  a composite scanner. `path` and `by_id` compare with the node and its udev links.
- "auto": no [[scanner]] entries at all and [discovery] auto = true, and the device is a known
  scanner: nearest-USB vendor in the list (Honeywell 0c2e, Zebra 05e0, Datalogic 05f9, Newland
  1eab: vendors that make nothing but scanners), tagged SCANNERD=1 by our udev rules (a site's
  local rule can add a vendor:product there), an input device whose name says scanner/barcode,
  or a USB serial port of a vendor in extra_vendor_ids (those are chip makers: their keyboards
  are not taken).
- "ignored", with the reason (shown by `scannerd devices`). A keyboard that is none of the above
  is never grabbed: taking a cashier's keyboard away is worse than missing a scanner.

Discovery enumerates present devices at start, then follows udev through the monitor's file
descriptor on the event loop (loop.add_reader, monitor.poll(timeout=0) until empty): no polling
loop, and a plugged scanner starts within the time udev takes to announce it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from ..config import Config, ScannerConfig
from . import registry

log = structlog.get_logger("scannerd.discovery")

KNOWN_SCANNER_VENDORS: Mapping[str, str] = {
    "0c2e": "Honeywell (Metrologic)",
    "05e0": "Zebra (Symbol)",
    "05f9": "Datalogic",
    "1eab": "Newland",
}

# An input device whose name says it is a scanner (uinput test scanners included).
SCANNER_NAME = re.compile(r"(?i)bar[\s_-]?code|scanner|scan[\s_-]?gun|qr[\s_-]?reader|扫码|扫描|条码")

# Linux input bus types (linux/input.h) worth naming in reasons.
_BUSES = {"0003": "usb", "0005": "bluetooth", "0006": "virtual", "0011": "i8042", "0019": "host"}


@dataclass(frozen=True, slots=True)
class DeviceDescription:
    """What matching needs to know about a device node; built from udev/sysfs, or by hand in tests."""

    subsystem: str  # "input" | "tty" | "hidraw" | "usb" (a usb_device node, for pyusb)
    devnode: str
    name: str = ""
    vid: str = ""  # of the nearest USB device, 4 lowercase hex digits, or ""
    pid: str = ""
    bus: str = ""  # usb | bluetooth | virtual | i8042 | …
    links: tuple[str, ...] = ()  # udev symlinks: /dev/input/by-id/…, /dev/scanner/…
    keyboard: bool = False  # input: can type digits and Enter
    serial: str = ""  # USB serial number, for naming
    udev_scanner: bool = False  # SCANNERD=1 from 70-scannerd.rules
    hid_pos: bool = False  # hidraw: the report descriptor has a 0x008C application collection
    port_path: str = ""  # the USB device's sysfs name ("1-1.4"): stable while in the same socket

    @property
    def by_id(self) -> str:
        return next((ln for ln in self.links if "/by-id/" in ln), "")

    @property
    def usb_id(self) -> str:
        return f"{self.vid}:{self.pid}" if self.vid and self.pid else ""


@dataclass(frozen=True, slots=True)
class MatchResult:
    action: str  # "config" | "auto" | "ignored"
    reason: str
    scanner: ScannerConfig | None = None


@dataclass(frozen=True, slots=True)
class FoundDevice:
    subsystem: str
    devnode: str
    name: str
    vid: str
    pid: str
    by_id: str
    scanner: ScannerConfig


# --- pure matching ------------------------------------------------------------------------------

def _transport_for(subsystem: str) -> str:
    transport = registry.for_subsystem(subsystem)
    return transport.name if transport is not None else subsystem


def _entry_matches(entry: ScannerConfig, desc: DeviceDescription) -> tuple[bool, str]:
    """(all given criteria hold, the criteria that matched)."""
    matched: list[str] = []
    nodes = (desc.devnode, *desc.links)
    if entry.path:
        if entry.path not in nodes:
            return False, ""
        matched.append("path")
    if entry.usb:
        if entry.usb != desc.usb_id:
            return False, ""
        matched.append("usb")
    if entry.match_name:
        if not re.search(entry.match_name, desc.name):
            return False, ""
        matched.append("match_name")
    if entry.by_id:
        if entry.by_id not in desc.links and entry.by_id not in {os.path.basename(ln) for ln in desc.links}:
            return False, ""
        matched.append("by_id")
    if entry.transport == "hidpos":
        for key, have in (("serial", desc.serial), ("port_path", desc.port_path)):
            want = entry.settings.get(key, "")
            if want:
                if want != have:
                    return False, ""
                matched.append(key)
    return bool(matched), ", ".join(matched)


def auto_name(desc: DeviceDescription) -> str:
    """A stable scanner name for an auto-detected device: its by-id link, else vid/pid/serial."""
    base = os.path.basename(desc.by_id)
    if not base:
        scanner_link = next((ln for ln in desc.links if "/scanner/" in ln), "")
        base = os.path.basename(scanner_link)
    if not base and desc.vid:
        # No udev links (no udevd): vid/pid/serial stay the same across a replug, the node number
        # does not. Two identical serial-less scanners get "-2" from Discovery.
        base = "-".join(p for p in (_transport_for(desc.subsystem), desc.vid, desc.pid, desc.serial) if p)
    if not base:
        base = f"{_transport_for(desc.subsystem)}-{os.path.basename(desc.devnode)}"
    return _scanner_name(base)


def _scanner_name(base: str) -> str:
    """A valid scanner name (config's rule: it becomes an MQTT topic level) from any text."""
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_") or "scanner")[:64]


def _auto_reason(config: Config, desc: DeviceDescription) -> str | None:
    if desc.udev_scanner:
        return "tagged SCANNERD=1 by the scannerd udev rules"
    if desc.bus == "usb" and desc.vid in KNOWN_SCANNER_VENDORS:
        return f"known scanner vendor {KNOWN_SCANNER_VENDORS[desc.vid]} ({desc.vid})"
    # extra_vendor_ids are chip makers too (CH340 1a86 also ends up in keyboards): they admit
    # serial ports only; a keyboard of theirs needs a [[scanner]] entry or a udev local rule.
    if desc.subsystem == "tty" and desc.bus == "usb" and desc.vid in config.discovery.extra_vendor_ids:
        return f"vendor {desc.vid} ([discovery] extra_vendor_ids)"
    if desc.subsystem == "input" and SCANNER_NAME.search(desc.name):
        return f"input device named {desc.name!r} (says scanner/barcode)"
    return None


def match_device(config: Config, desc: DeviceDescription) -> MatchResult:
    """What scannerd does with this device, and why. Pure: table-tested, used by `scannerd devices`."""
    if desc.subsystem == "input" and not os.path.basename(desc.devnode).startswith("event"):
        return MatchResult("ignored", "not an event device (mouse/joystick node)")
    if desc.subsystem not in ("input", "tty", "hidraw", "usb"):
        return MatchResult("ignored", f"subsystem {desc.subsystem} is not read by any transport")
    transport = _transport_for(desc.subsystem)
    for entry in config.scanners:
        ok, how = _entry_matches(entry, desc)
        if not ok:
            continue
        if entry.transport != transport:
            if desc.subsystem == "usb":
                continue  # the USB device of a keyboard or serial scanner: its own node matches
            return MatchResult("ignored", f"matches [[scanner]] {entry.name!r} by {how}, but that entry is "
                                          f"transport {entry.transport!r}, not {transport!r}")
        if desc.subsystem == "input" and not desc.keyboard and not entry.path:
            return MatchResult("ignored", f"matches [[scanner]] {entry.name!r} by {how}, but this input node "
                                          "cannot type digits (another interface of the same device)")
        if transport == "hidpos":
            refused = _hidpos_backend_mismatch(entry, desc)
            if refused is not None:
                return MatchResult("ignored", f"matches [[scanner]] {entry.name!r} by {how}, but {refused}")
        return MatchResult("config", f"[[scanner]] {entry.name!r} (by {how})", entry)
    if desc.subsystem in ("hidraw", "usb"):
        return _match_hid_auto(config, desc)
    if config.scanners:
        return MatchResult("ignored", "no [[scanner]] entry matches (auto-detect runs only without [[scanner]] entries)")
    if desc.subsystem == "tty" and not re.match(r"tty(ACM|USB)\d+$", os.path.basename(desc.devnode)):
        return MatchResult("ignored", "not a USB serial port")
    why = _auto_reason(config, desc)
    if desc.subsystem == "input" and not desc.keyboard:
        return MatchResult("ignored", "input device that cannot type digits (mouse, consumer keys, power button)")
    if why is None:
        if desc.subsystem == "input":
            bus = desc.bus or "unknown bus"
            vendor = f"vendor {desc.vid}" if desc.vid else bus
            if desc.vid in config.discovery.extra_vendor_ids:
                vendor += " from extra_vendor_ids, which admits serial ports only"
            else:
                vendor += ", not a known scanner vendor"
            return MatchResult("ignored", f"keyboard ({vendor}, name has no scanner/barcode): never auto-grabbed; "
                                          "add a [[scanner]] entry to use it")
        return MatchResult("ignored", f"serial port of vendor {desc.vid or '?'} (not a known scanner vendor): "
                                      "add a [[scanner]] entry with path or by_id to use it")
    if not config.discovery.auto:
        return MatchResult("ignored", f"would be auto-detected ({why}) but [discovery] auto = false")
    path = desc.by_id or desc.devnode
    scanner = ScannerConfig(name=auto_name(desc), transport=transport, path=path)
    return MatchResult("auto", f"auto-detected: {why}", scanner)


def hidraw_available(sys_root: str = "/sys") -> bool:
    """The kernel has hidraw: a HID-POS scanner bound to usbhid has a /dev/hidrawN node."""
    return os.path.isdir(os.path.join(sys_root, "class/hidraw"))


def _hidpos_backend_mismatch(entry: ScannerConfig, desc: DeviceDescription) -> str | None:
    """hidraw entries are read through the hidraw node, pyusb entries through the USB device
    node (detaching usbhid removes the hidraw node: keying on it would stop the source)."""
    backend = entry.settings.get("backend", "hidraw")
    if desc.subsystem == "hidraw":
        if backend == "pyusb":
            return 'the entry reads through libusb (backend = "pyusb"): its USB device node is used'
        if not desc.hid_pos:
            return "this hidraw node has no bar code scanner collection (usage page 0x008C)"
        return None
    if backend == "hidraw" and hidraw_available():
        return 'the entry reads through hidraw (backend = "hidraw"): its hidraw node is used'
    return None


def _match_hid_auto(config: Config, desc: DeviceDescription) -> MatchResult:
    if config.scanners:
        return MatchResult("ignored", "no [[scanner]] entry matches (auto-detect runs only without [[scanner]] entries)")
    if desc.subsystem == "usb":
        return MatchResult("ignored", 'USB device node: read only for a [[scanner]] entry with backend = "pyusb"')
    if not desc.hid_pos:
        return MatchResult("ignored", "hidraw node without a bar code scanner collection (usage page 0x008C)")
    why = "HID-POS report descriptor (usage page 0x008C)"
    if not config.discovery.auto:
        return MatchResult("ignored", f"would be auto-detected ({why}) but [discovery] auto = false")
    scanner = ScannerConfig(name=auto_name(desc), transport="hidpos", path=desc.devnode, usb=desc.usb_id)
    return MatchResult("auto", f"auto-detected: {why}", scanner)


def resolve_device(config: Config, arg: str | None, descriptions: Iterable[DeviceDescription],
                   transport: str = "evdev") -> tuple[str, ScannerConfig] | str:
    """The device `scannerd test`/`record` should open: (path, scanner settings) or an error text.

    `arg` is a device path (a node or any udev link), a [[scanner]] name, or None for "the only
    scanner present". An explicitly named node is used even if it is a human keyboard: the
    technician asked for it.
    """
    wanted = {"evdev": "input", "hidpos": "hidraw"}.get(transport, "tty")
    descs = [d for d in descriptions if d.subsystem == wanted]
    if arg is None:
        found = [(d, r.scanner) for d in descs for r in [match_device(config, d)] if r.scanner is not None]
        if len(found) == 1:
            return found[0][0].devnode, found[0][1]
        if not found:
            return "no scanner found: give a device path (see `scannerd devices`)"
        return "several scanners present, name one: " + ", ".join(f"{s.name} ({d.devnode})" for d, s in found)
    entry = next((s for s in config.scanners if s.name == arg), None)
    if entry is not None:
        if entry.transport != transport:
            return f"[[scanner]] {arg!r} is transport {entry.transport!r}; this command reads {transport} devices"
        for d in descs:
            r = match_device(config, d)
            if r.scanner is not None and r.scanner.name == arg:
                return d.devnode, entry
        if entry.path:
            return entry.path, entry
        return f"[[scanner]] {arg!r} is not plugged in (no device matches it; see `scannerd devices`)"
    if arg.startswith("/"):
        real = os.path.realpath(arg)
        if transport == "evdev" and os.path.basename(real).startswith("tty"):
            return f"{arg} is a serial port: this command reads keyboard-wedge (evdev) input devices"
        for d in descs:
            if arg == d.devnode or real == d.devnode or arg in d.links:
                r = match_device(config, d)
                scanner = r.scanner or ScannerConfig(name=auto_name(d), transport=transport, path=d.devnode)
                return d.devnode, scanner
        return arg, ScannerConfig(name=_scanner_name(os.path.basename(arg)), transport=transport, path=arg)
    return f"{arg!r} is neither a device path nor a [[scanner]] name in {config.source}"


# --- udev → DeviceDescription ------------------------------------------------------------------

def _key_bits(text: str) -> int:
    """Parse a sysfs capabilities bitmap ("120013 ... ffffffff fffffffe", most significant first)."""
    value = 0
    for word in text.split():
        value = (value << 64) | int(word, 16)  # each word is one unsigned long (64-bit kernels)
    return value


def can_type_digits(key_caps: str) -> bool:
    """True when a key-capabilities bitmap has KEY_1…KEY_0 (2…11) and KEY_ENTER (28)."""
    try:
        bits = _key_bits(key_caps)
    except ValueError:
        return False
    return all(bits >> code & 1 for code in (*range(2, 12), 28))


def _attr(device: Any, name: str) -> str:
    try:
        value = device.attributes.get(name)
    except Exception:  # a device that vanished while we looked
        return ""
    if value is None:
        return ""
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value).strip()


def describe(device: Any) -> DeviceDescription | None:
    """A pyudev Device (input event node or tty) → DeviceDescription; None for other nodes."""
    devnode = device.device_node
    subsystem = device.subsystem
    if devnode and subsystem in ("hidraw", "usb"):
        return describe_hid(device)
    if not devnode or subsystem not in ("input", "tty"):
        return None
    props: Mapping[str, str] = device.properties
    links = tuple(sorted(device.device_links))
    usb = device.find_parent("usb", "usb_device")
    vid = props.get("ID_VENDOR_ID", "") or (_attr(usb, "idVendor") if usb is not None else "")
    pid = props.get("ID_MODEL_ID", "") or (_attr(usb, "idProduct") if usb is not None else "")
    serial = props.get("ID_SERIAL_SHORT", "") or (_attr(usb, "serial") if usb is not None else "")
    udev_scanner = props.get("SCANNERD", "") == "1"
    if subsystem == "input":
        parent = device.parent  # the inputN device: name, id/*, capabilities/*
        if parent is None:
            return None
        bus = _BUSES.get(_attr(parent, "id/bustype"), _attr(parent, "id/bustype"))
        if bus == "usb" and not vid:
            vid, pid = _attr(parent, "id/vendor"), _attr(parent, "id/product")
        keyboard = props.get("ID_INPUT_KEYBOARD", "") == "1" or can_type_digits(_attr(parent, "capabilities/key"))
        return DeviceDescription("input", devnode, _attr(parent, "name"), vid.lower(), pid.lower(), bus, links,
                                 keyboard, serial, udev_scanner)
    name = " ".join(p for p in (_attr(usb, "manufacturer"), _attr(usb, "product")) if p) if usb is not None else ""
    return DeviceDescription("tty", devnode, name or props.get("ID_MODEL", ""), vid.lower(), pid.lower(),
                             "usb" if usb is not None else "", links, False, serial, udev_scanner)


def describe_hid(device: Any) -> DeviceDescription | None:
    """A hidraw node, or a usb_device node (/dev/bus/usb/BBB/DDD, for pyusb) → DeviceDescription."""
    from .hid_descriptor import is_pos_descriptor

    if device.subsystem == "usb":
        if device.properties.get("DEVTYPE", "") != "usb_device":
            return None
        usb: Any = device
    else:
        usb = device.find_parent("usb", "usb_device")
    if usb is None:
        return None  # a hidraw node on Bluetooth or uhid: not a USB scanner
    vid, pid = _attr(usb, "idVendor").lower(), _attr(usb, "idProduct").lower()
    name = " ".join(p for p in (_attr(usb, "manufacturer"), _attr(usb, "product")) if p)
    pos = False
    if device.subsystem == "hidraw" and device.parent is not None:
        # Read the file itself: libudev's sysattr values are C strings, and a report descriptor
        # is binary (Logical Minimum 0 is a NUL byte): through pyudev it would come back cut short.
        try:
            with open(os.path.join(device.parent.sys_path, "report_descriptor"), "rb") as fp:
                pos = is_pos_descriptor(fp.read())
        except (OSError, TypeError, AttributeError):  # vanished while we looked, or no sysfs path
            pos = False
    props: Mapping[str, str] = device.properties
    return DeviceDescription(device.subsystem, device.device_node, name, vid, pid, "usb",
                             tuple(sorted(device.device_links)), False, _attr(usb, "serial"),
                             props.get("SCANNERD", "") == "1", pos, usb.sys_name)


def list_descriptions(context: Any) -> list[DeviceDescription]:
    out: list[DeviceDescription] = []
    for device in [*context.list_devices(subsystem="hidraw"), *context.list_devices(subsystem="usb")]:
        hid = describe_hid(device)
        if hid is not None:
            out.append(hid)
    for subsystem in ("input", "tty"):
        for device in context.list_devices(subsystem=subsystem):
            desc = describe(device)
            if desc is None:
                continue
            # Only nodes a scanner is read through: eventN, and ttys that can be a scanner port.
            if (subsystem == "input" and os.path.basename(desc.devnode).startswith("event")) or (
                subsystem == "tty" and _interesting_tty(desc)
            ):
                out.append(desc)
    return sorted(out, key=lambda d: (d.subsystem, _natural(d.devnode)))


def _interesting_tty(desc: DeviceDescription) -> bool:
    # Virtual consoles and ptys are ttys too; only ports a scanner can be on matter.
    return desc.bus == "usb" or bool(re.match(r"/dev/tty(S|ACM|USB|AMA|mxc|XRUSB)\d+$", desc.devnode))


def _natural(s: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


def _exists(devnode: str) -> bool:
    """A /dev node is there (devtmpfs answers from memory: no disk, no wait)."""
    return os.path.exists(devnode)


def udev_running() -> bool:
    return os.path.exists("/run/udev/control")


# --- the hotplug loop ---------------------------------------------------------------------------

class Discovery:
    """Calls on_add(FoundDevice) for matching devices present now and plugged later, and
    on_remove(devnode) when one goes away. One instance per configuration (recreate on reload)."""

    def __init__(self, config: Config, on_add: Callable[[FoundDevice], None], on_remove: Callable[[str], None],
                 *, context: Any = None, monitor: Any = None) -> None:
        self.config = config
        self._on_add = on_add
        self._on_remove = on_remove
        self._context = context
        self._monitor = monitor
        self._fd: int | None = None
        self.active: dict[str, FoundDevice] = {}  # devnode → found
        self._resync_task: asyncio.Task[None] | None = None
        self._resync_again = False
        self._removed_meanwhile: set[str] | None = None  # udev removes seen during a resync

    async def start(self) -> None:
        import pyudev

        given = self._context
        context = given or pyudev.Context()
        self._context = context
        if self._monitor is None:
            # Without udevd (minimal images, the VM rig) only the kernel source carries events.
            source = "udev" if udev_running() else "kernel"
            monitor = pyudev.Monitor.from_netlink(context, source=source)
            for subsystem in registry.udev_subsystems():
                monitor.filter_by(subsystem)
            self._monitor = monitor
        # Start listening before enumerating so a device plugged in between is not missed;
        # a device seen twice is ignored by the active table.
        self._monitor.start()
        # Enumerating sysfs takes tens of milliseconds with many devices: off the loop, so a
        # reload never stalls a scanner that is sending.
        # A libudev context is not for two threads at once: the enumeration gets its own.
        for desc in await asyncio.to_thread(lambda: list_descriptions(given or pyudev.Context())):
            self._consider(desc)
        self._fd = self._monitor.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self._drain)
        log.info("discovery_started", devices=sorted(self.active), auto=self.config.discovery.auto and not self.config.scanners)

    def stop(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()  # the thread finishes alone; its results are dropped
            self._resync_task = None
        if self._fd is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._fd)
            except RuntimeError:  # loop already closed: nothing is registered any more
                pass
            self._fd = None

    def resync(self) -> None:
        """Reconcile the active table with the devices present now (after lost udev events).

        Enumerating /sys (and reading every device's attributes) takes tens of milliseconds,
        more during the event storm that made us resync: it runs in a worker thread, and only
        the results are applied here, on the loop. A resync asked for while one runs is done
        again after it, so nothing that changed meanwhile is missed."""
        if self._context is None:
            return
        if self._resync_task is not None and not self._resync_task.done():
            self._resync_again = True
            return
        self._resync_task = asyncio.get_running_loop().create_task(self._resync(), name="udev-resync")

    async def _resync(self) -> None:
        while True:
            self._resync_again = False
            self._removed_meanwhile = set()
            for devnode in [d for d in self.active if not _exists(d)]:
                self.active.pop(devnode, None)
                self._on_remove(devnode)
            try:
                present = await asyncio.to_thread(list_descriptions, self._thread_context())
            except OSError as e:
                log.warning("udev_enumerate_failed", error=str(e))
                return
            finally:
                removed, self._removed_meanwhile = self._removed_meanwhile, None
            if self._fd is None:
                return  # stopped meanwhile
            for desc in present:
                if desc.devnode not in removed:  # unplugged while we enumerated: stale
                    self._consider(desc)
            if not self._resync_again:
                return

    def _thread_context(self) -> Any:
        # libudev objects are not thread-safe: the worker thread gets a context of its own
        # (an injected test context is used as it is).
        import pyudev

        return pyudev.Context() if isinstance(self._context, pyudev.Context) else self._context

    def forget(self, devnode: str, retry_after_s: float | None = None) -> None:
        """A source for `devnode` ended without a udev remove (grab refused, read error):
        drop it from the active table and, optionally, look at the node again later."""
        self.active.pop(devnode, None)
        if retry_after_s is not None and self._fd is not None:
            asyncio.get_running_loop().call_later(retry_after_s, self._reconsider, devnode)

    def _reconsider(self, devnode: str) -> None:
        if self._fd is None or devnode in self.active or not os.path.exists(devnode):
            return
        import pyudev

        try:
            device = pyudev.Devices.from_device_file(self._context, devnode)
        except (pyudev.DeviceNotFoundError, OSError, ValueError):
            return
        desc = describe(device)
        if desc is not None:
            self._consider(desc)

    def _drain(self) -> None:
        assert self._monitor is not None
        while True:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as e:
                # ENOBUFS: an event storm overflowed the netlink buffer and events were lost.
                # Look at what is there now rather than wait for a replug that may never come.
                log.warning("udev_receive_failed", error=str(e), resync=True)
                self.resync()
                return
            if device is None:
                return
            self.handle(device.action, device)

    def handle(self, action: str | None, device: Any) -> None:
        """One udev event (pyudev Device with .action)."""
        if action == "remove":
            devnode = device.device_node
            if self._removed_meanwhile is not None and devnode:
                self._removed_meanwhile.add(devnode)
            found = self.active.pop(devnode, None) if devnode else None
            if found is not None:
                log.info("device_removed", devnode=devnode, scanner=found.scanner.name)
                self._on_remove(devnode)
            return
        if action not in ("add", "change", "bind"):
            return
        desc = describe(device)
        if desc is None or (desc.subsystem == "tty" and not _interesting_tty(desc)):
            return
        if desc.subsystem == "usb" and not any(s.transport == "hidpos" for s in self.config.scanners):
            return  # every USB device comes by here: only a pyusb entry can want one
        self._consider(desc)

    def _consider(self, desc: DeviceDescription) -> None:
        if desc.devnode in self.active:
            return
        result = match_device(self.config, desc)
        if result.scanner is None:
            log.debug("device_ignored", devnode=desc.devnode, name=desc.name, reason=result.reason)
            return
        scanner = result.scanner
        taken = {f.scanner.name: f.devnode for f in self.active.values()}
        if scanner.name in taken:
            if result.action == "config":
                # Two identical scanners matching one entry: one device per name, or events mix.
                log.warning("device_duplicate", devnode=desc.devnode, scanner=scanner.name, already=taken[scanner.name])
                return
            scanner = replace(scanner, name=_unique(scanner.name, taken))
        found = FoundDevice(desc.subsystem, desc.devnode, desc.name, desc.vid, desc.pid, desc.by_id, scanner)
        self.active[desc.devnode] = found
        log.info("device_found", devnode=desc.devnode, scanner=scanner.name, how=result.reason)
        self._on_add(found)


def _unique(name: str, taken: Iterable[str]) -> str:
    used = set(taken)
    for i in range(2, 1000):
        candidate = f"{name[:60]}-{i}"
        if candidate not in used:
            return candidate
    return name
