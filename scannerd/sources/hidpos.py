"""USB HID-POS scanners (usage page 0x008C): a hidraw adapter on the event loop, a pyusb adapter
with one thread per device, and the whitelisted feedback/control verbs.

hidraw (default): usbhid already owns the interface and gives /dev/hidrawN; the report descriptor
comes from HIDIOCGRDESC, reports from read() (report id first), one loop.add_reader per fd, no
thread. Only a node whose descriptor has an application collection on 0x008C is read: Honeywell's
vendor twin 0xFF8C reads nothing, and a keyboard-mode interface is evdev's.

pyusb (`backend = "pyusb"`, or where no hidraw node exists): claim only the POS interface (on a
composite scanner the keyboard interface stays with the kernel), detach its kernel driver and
reattach it on the way out, and set a configuration only on an unconfigured device (a blind
set_configuration() resets a configured one). libusb reads block, so one thread per device reads
with a short timeout and hands each report to the loop with call_soon_threadsafe; run() does not
return before that thread has ended, so no thread outlives its device, on unplug or on stop.

Both feed the pure Reassembler (hid_reports.py) through FramedInput, so abort ("device_removed",
"stopped") and the give-up timer for a missing last report work as for every source.

Control: only `control("enable" | "disable" | "good" | "bad")`. enable/disable send Honeywell's
trigger menu commands (`SYN T CR` / `SYN U CR` in output report 0xFD); good/bad set the Good Read
/ Error Beep bits of the output report the descriptor declares. No client bytes ever reach a
scanner: Honeywell's undocumented `SYN N` commands read and write scanner memory.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import fcntl
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
import usb.core
import usb.util

from ..config import ScannerConfig
from ..framing import FramingSpec
from ..model import DeviceInfo
from .base import FramedInput, FrameSink, Source, SourceRequest, StateSink
from .hid_descriptor import (
    PAGE_BARCODE_SCANNER,
    PAGE_VENDOR_BARCODE,
    DescriptorError,
    ReportDescriptor,
    fallback_layout,
    find_output_report,
    layout_for,
    parse_descriptor,
)
from .hid_reports import Reassembler
from .hidpos_settings import BACKENDS, HidPosSettings

log = structlog.get_logger("scannerd.hidpos")

VERBS = ("enable", "disable", "good", "bad")

# linux/hidraw.h: _IOR('H', 1, int), _IOR('H', 2, struct hidraw_report_descriptor), _IOR('H', 3, …).
HIDIOCGRDESCSIZE = 0x80044801
HIDIOCGRDESC = 0x90044802
HIDIOCGRAWINFO = 0x80084803
HID_MAX_DESCRIPTOR_SIZE = 4096

# Honeywell menu commands in output report 0xFD: FD <length> SYN <cmd> CR.
HONEYWELL_MENU_REPORT = 0xFD
_MENU_COMMANDS = {"enable": b"\x16T\r", "disable": b"\x16U\r"}
_HONEYWELL_VID = "0c2e"

# pyusb reader: how long one blocking read waits before it looks at the stop flag and the
# write queue. Bounds how long stop takes and how late a beep is.
READ_TIMEOUT_MS = 100
REPORT_SIZE = 64
_MAX_READS_PER_WAKEUP = 64  # a flood of reports must not keep the loop in one callback


class ControlError(ValueError):
    """A control verb this device cannot do (or one that is not whitelisted): says why."""


# --- hidraw ioctls and sysfs --------------------------------------------------------------------

def hidraw_descriptor(fd: int) -> bytes:
    """The report descriptor of an open hidraw node (HIDIOCGRDESCSIZE + HIDIOCGRDESC)."""
    size = struct.unpack("i", fcntl.ioctl(fd, HIDIOCGRDESCSIZE, struct.pack("i", 0)))[0]
    size = max(0, min(size, HID_MAX_DESCRIPTOR_SIZE))
    # A mutable buffer: fcntl.ioctl copies immutable arguments through a 1024-byte scratch buffer.
    buf = bytearray(4 + HID_MAX_DESCRIPTOR_SIZE)
    struct.pack_into("I", buf, 0, size)
    fcntl.ioctl(fd, HIDIOCGRDESC, buf, True)
    return bytes(buf[4: 4 + size])


def hidraw_ids(fd: int) -> tuple[int, str, str]:
    """(bus type, vid, pid) of an open hidraw node, ids as 4 lowercase hex digits."""
    bustype, vid, pid = struct.unpack("Ihh", fcntl.ioctl(fd, HIDIOCGRAWINFO, bytes(8)))
    return bustype, f"{vid & 0xFFFF:04x}", f"{pid & 0xFFFF:04x}"


def sysfs_descriptor(hidraw_node: str, sys_root: str = "/sys") -> bytes | None:
    """The report descriptor of /dev/hidrawN from sysfs (no open, no permission needed)."""
    path = os.path.join(sys_root, "class/hidraw", os.path.basename(hidraw_node), "device/report_descriptor")
    try:
        with open(path, "rb") as fp:
            return fp.read()
    except OSError:
        return None


def pos_problem(descriptor: bytes) -> str | None:
    """Why a node with this descriptor is not read as a HID-POS scanner, or None when it is."""
    try:
        desc = parse_descriptor(descriptor)
    except DescriptorError as e:
        return f"unreadable report descriptor ({e})"
    if desc.has_application(PAGE_BARCODE_SCANNER):
        return None
    if desc.has_application(PAGE_VENDOR_BARCODE):
        return "vendor usage page 0xFF8C interface (reads nothing): use the 0x008C interface beside it"
    pages = ", ".join(f"0x{a >> 16:04x}:0x{a & 0xFFFF:02x}" for a in desc.applications) or "none"
    return f"no bar code scanner collection (usage page 0x008C); application collections: {pages}"


# --- feedback and control: verbs → output reports ----------------------------------------------

def control_report(verb: str, desc: ReportDescriptor | None, vid: str) -> bytes:
    """The output report for a whitelisted verb on this device, or ControlError saying why not."""
    if verb not in VERBS:
        raise ControlError(f"unknown verb {verb!r} (expected one of {', '.join(VERBS)})")
    if verb in _MENU_COMMANDS:
        declared = desc is not None and HONEYWELL_MENU_REPORT in desc.report_ids("output")
        if not declared and vid != _HONEYWELL_VID:
            raise ControlError(f"{verb}: the device declares no menu-command output report 0xFD (Honeywell only)")
        length = desc.report_bytes("output", HONEYWELL_MENU_REPORT) if declared and desc is not None else REPORT_SIZE
        cmd = _MENU_COMMANDS[verb]
        menu = bytes([HONEYWELL_MENU_REPORT, len(cmd)]) + cmd
        return menu.ljust(max(length, len(menu)), b"\x00")
    out = find_output_report(desc) if desc is not None else None
    where = None if out is None else out.good_beep if verb == "good" else out.error_beep
    if out is None or where is None:
        raise ControlError(f"{verb}: the device declares no {'good read' if verb == 'good' else 'error'} beep output usage")
    report = bytearray(max(out.length, where[0] + 1))
    if out.report_id:
        report[0] = out.report_id
    report[where[0]] |= 1 << where[1]
    return bytes(report)


class HidPosSource(Source):
    """What both backends share: the reassembler behind FramedInput, state, control. The
    registry names this class; from_request builds the backend the entry and the path ask for."""

    @classmethod
    def from_request(cls, req: SourceRequest) -> Source:
        return make_hidpos_source(req.device, req.spec, req.emit, req.state, req.scanner,
                                  HidPosSettings.from_mapping(req.scanner.settings))

    def __init__(self, device: DeviceInfo, spec: FramingSpec, emit: FrameSink, state: StateSink,
                 scanner: ScannerConfig, settings: HidPosSettings) -> None:
        super().__init__(device, spec, emit, state)
        self.scanner = scanner
        self.settings = settings
        vid, _, pid = scanner.usb.partition(":")
        self.vid, self.pid = vid, pid
        self.reassembler = Reassembler(device.name, fallback_layout(vid, pid), spec, scanner.encoding)
        self.input = FramedInput(device.name, spec, emit, framing=self.reassembler)
        self.descriptor: ReportDescriptor | None = None
        self.layout_reason = ""
        self.reports = 0
        self._told_reason = ""

    def _use_descriptor(self, raw: bytes | None) -> None:
        layout, self.layout_reason = layout_for(raw, self.vid, self.pid)
        self.reassembler.use_layout(layout)
        try:
            self.descriptor = parse_descriptor(raw) if raw else None
        except DescriptorError:
            self.descriptor = None

    def abort(self, reason: str) -> None:
        """The daemon ends this source (device_removed on a udev remove, stopped): remembered,
        since reports still on their way when it cancels us end the same way."""
        self._told_reason = reason
        super().abort(reason)

    def _end_reason(self, seen: str) -> str:
        """Why a cancelled source's unfinished scan ends: gone as we saw it, else as we were told."""
        if seen == "device_removed":
            return seen
        return self._told_reason or "stopped"

    def on_report(self, report: bytes, t_ns: int) -> None:
        """One input report as read (report id first): into the reassembler, out as frames."""
        self.reports += 1
        self.input.deliver(self.reassembler.feed(report, t_ns))

    def control(self, verb: str) -> None:
        """Send a whitelisted verb (enable | disable | good | bad); ControlError if it cannot be done."""
        if not self.present:
            raise ControlError(f"{verb}: {self.device.name} is not present")
        self._write(control_report(verb, self.descriptor, self.vid))

    def switch(self, on: bool) -> str:
        """Honeywell's trigger on / off output report (the only HID-POS trigger that is public).
        An output report has no reply: a write that went out is "sent"."""
        verb = "enable" if on else "disable"
        try:
            self.control(verb)
        except ControlError as e:
            log.info("hidpos_switch_not_supported", device=self.device.name, verb=verb, why=str(e))
            return "not_controllable"
        except OSError as e:
            log.warning("hidpos_switch_failed", device=self.device.name, verb=verb, error=str(e))
            return "unanswered"
        return "sent"

    def feedback(self, accepted: bool) -> None:
        """After classification: with beep_on_reject, a good beep for a code, an error beep for a
        reject. Best effort: a device without those usages stays silent."""
        if not self.settings.beep_on_reject:
            return
        try:
            self.control("good" if accepted else "bad")
        except (ControlError, OSError) as e:
            log.debug("hidpos_feedback_failed", device=self.device.name, error=str(e))

    @abc.abstractmethod
    def _write(self, report: bytes) -> None:
        """Send one output report to the device (each backend its own way)."""

    def _lost(self, reason: str) -> None:
        removed = reason == "device_removed"
        self.input.abort("device_removed" if removed else "read_error")
        self.set_state("absent" if removed else "error", reason)


# --- hidraw -------------------------------------------------------------------------------------

class HidrawSource(HidPosSource):
    """One HID-POS scanner through /dev/hidrawN on the event loop; ends when the node goes."""

    def __init__(self, device: DeviceInfo, spec: FramingSpec, emit: FrameSink, state: StateSink,
                 scanner: ScannerConfig, settings: HidPosSettings,
                 *, opener: Callable[[str], int] | None = None, descriptor_of: Callable[[int], bytes] = hidraw_descriptor) -> None:
        super().__init__(device, spec, emit, state, scanner, settings)
        self._opener = opener or _open_hidraw
        self._descriptor_of = descriptor_of
        self._fd: int | None = None
        self._writes: set[asyncio.Future[int]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        path = self.device.path
        try:
            fd = self._opener(path)
        except OSError as e:
            self.set_state("absent" if e.errno in (errno.ENOENT, errno.ENODEV) else "error",
                           f"cannot open {path}: {e.strerror or e}")
            return
        self._fd = fd
        try:
            try:
                raw = self._descriptor_of(fd)
            except OSError as e:
                self.set_state("error", f"cannot read the report descriptor of {path}: {e.strerror or e}")
                return
            problem = pos_problem(raw)
            if problem is not None:
                self.set_state("error", f"{path}: {problem}")
                return
            if not self.vid:  # an entry by path only: the node knows its ids (fallback layout, control)
                with contextlib.suppress(OSError):
                    _bus, self.vid, self.pid = hidraw_ids(fd)
            self._use_descriptor(raw)
            log.info("hidpos_opened", device=self.device.name, path=path, backend="hidraw", layout=self.layout_reason)
            self.set_state("present")
            gone: asyncio.Future[str] = loop.create_future()
            loop.add_reader(fd, self._on_readable, fd, gone)
            try:
                reason = await gone
            except asyncio.CancelledError:
                # Stopped, or the daemon saw the udev remove first: reports the kernel still
                # holds for us are scans too. Read them, then end what they leave unfinished.
                drained: asyncio.Future[str] = loop.create_future()  # `gone` was cancelled with us
                self._on_readable(fd, drained)
                self.input.abort(self._end_reason(drained.result() if drained.done() else ""))
                raise
            finally:
                loop.remove_reader(fd)
            self._lost(reason)
        finally:
            self._fd = None
            self.input.close()
            if self._writes:  # never close an fd a write still uses (its number could be reused)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(set(self._writes), timeout=6.0)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _on_readable(self, fd: int, gone: asyncio.Future[str]) -> None:
        for _ in range(_MAX_READS_PER_WAKEUP):
            try:
                report = os.read(fd, HID_MAX_DESCRIPTOR_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                if not gone.done():
                    removed = e.errno in (errno.ENODEV, errno.EIO, errno.ENOENT)
                    gone.set_result("device_removed" if removed else f"read failed: {e.strerror or e}")
                return
            if not report:  # end of file: the node went away under us
                if not gone.done():
                    gone.set_result("device_removed")
                return
            self.on_report(report, time.monotonic_ns())

    def _write(self, report: bytes) -> None:
        if self._fd is None:
            raise ControlError("not open")
        # usbhid sends an output report synchronously (up to its 5 s USB timeout): not on the loop.
        write = asyncio.get_running_loop().run_in_executor(None, os.write, self._fd, report)
        self._writes.add(write)
        write.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[int]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.warning("hidpos_write_failed", device=self.device.name, error=str(write.exception()))


def _open_hidraw(path: str) -> int:
    # Read-write for output reports (beeps, trigger); read-only still reads codes.
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


# --- pyusb --------------------------------------------------------------------------------------

def usb_port_path(dev: Any) -> str:
    """The sysfs name of a pyusb device's port ("1-1.4"), or "" when the backend does not say."""
    ports = getattr(dev, "port_numbers", None)
    if not ports or getattr(dev, "bus", None) is None:
        return ""
    return f"{dev.bus}-{'.'.join(str(p) for p in ports)}"


def usbfs_address(path: str) -> tuple[int, int] | None:
    """(bus, address) of a usbfs node /dev/bus/usb/BBB/DDD, or None for any other path."""
    parts = path.split("/")
    if len(parts) == 6 and parts[:4] == ["", "dev", "bus", "usb"] and parts[4].isdigit() and parts[5].isdigit():
        return int(parts[4]), int(parts[5])
    return None


def _usb_serial(dev: Any) -> str:
    try:
        return str(dev.serial_number or "")
    # pyusb backends raise NotImplementedError for what they cannot do (not a gap in scannerd).
    except (ValueError, OSError, NotImplementedError):  # no string descriptor, no langid, no access
        return ""


def hid_interfaces(dev: Any) -> Iterator[Any]:
    """The HID interfaces (class 3) of a pyusb device's first configuration."""
    for cfg in dev:
        for intf in cfg:
            if intf.bInterfaceClass == 3:
                yield intf
        return


def _report_descriptor_length(intf: Any) -> int:
    """wDescriptorLength of the report descriptor, from the HID class descriptor (0x21)."""
    extra = bytes(getattr(intf, "extra_descriptors", b"") or b"")
    i = 0
    while i + 1 < len(extra) and extra[i] > 0:
        length, kind = extra[i], extra[i + 1]
        if kind == 0x21 and length >= 9:
            for j in range(6, length - 2, 3):
                if extra[i + j] == 0x22:
                    return int.from_bytes(extra[i + j + 1: i + j + 3], "little")
        i += length
    return HID_MAX_DESCRIPTOR_SIZE


def usb_report_descriptor(dev: Any, intf: Any) -> bytes:
    """GET_DESCRIPTOR(Report) for one interface through a control transfer."""
    length = _report_descriptor_length(intf)
    data = dev.ctrl_transfer(0x81, 0x06, 0x22 << 8, intf.bInterfaceNumber, length, 1000)
    return bytes(data)


def _driver_active(dev: Any, number: int) -> bool:
    try:
        return bool(dev.is_kernel_driver_active(number))
    except (usb.core.USBError, NotImplementedError):
        return False


def _detach(dev: Any, number: int) -> bool:
    """Detach the kernel driver of one interface; True when there was one to give back later."""
    if not _driver_active(dev, number):
        return False
    dev.detach_kernel_driver(number)
    return True


def sysfs_interface_descriptor(dev: Any, number: int, sys_root: str = "/sys") -> bytes | None:
    """The report descriptor usbhid read from interface `number`, from sysfs (no claim needed)."""
    port = usb_port_path(dev)
    if not port:
        return None
    cfg = 1
    with contextlib.suppress(usb.core.USBError):
        cfg = dev.get_active_configuration().bConfigurationValue
    base = os.path.join(sys_root, "bus/usb/devices", f"{port}:{cfg}.{number}")
    try:
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry, "report_descriptor")
            if os.path.exists(path):
                with open(path, "rb") as fp:
                    return fp.read()
    except OSError:
        return None
    return None


@dataclass
class _Claimed:
    dev: Any
    interface: int
    ep_in: int
    ep_out: int | None
    reattach: bool


class PyusbSource(HidPosSource):
    """One HID-POS scanner through libusb: one reader thread, joined before run() returns."""

    def __init__(self, device: DeviceInfo, spec: FramingSpec, emit: FrameSink, state: StateSink,
                 scanner: ScannerConfig, settings: HidPosSettings, *, backend: Any = None) -> None:
        super().__init__(device, spec, emit, state, scanner, settings)
        self._backend = backend
        self._claimed: _Claimed | None = None
        self._writes: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    def find(self) -> Any:
        """The one USB device this entry means: vid:pid, then serial or port path."""
        node = usbfs_address(self.device.path)
        if not self.vid and node is None:
            raise ControlError('backend = "pyusb" needs usb = "vid:pid" or a /dev/bus/usb/BBB/DDD path')
        ids = {"idVendor": int(self.vid, 16), "idProduct": int(self.pid, 16)} if self.vid else {}
        found = []
        for dev in usb.core.find(find_all=True, backend=self._backend, **ids):
            if node is not None and (dev.bus, dev.address) != node:
                continue  # discovery handed over this very device node
            if self.settings.port_path and usb_port_path(dev) != self.settings.port_path:
                continue
            if self.settings.serial and _usb_serial(dev) != self.settings.serial:
                continue
            found.append(dev)
        if len(found) > 1:
            raise ControlError(f"{len(found)} devices {self.scanner.usb} present: set serial or port_path to pick one")
        return found[0] if found else None

    def _claim(self, dev: Any) -> tuple[_Claimed, bytes]:
        try:
            dev.get_active_configuration()
        except usb.core.USBError:
            dev.set_configuration()  # unconfigured only: on a configured device this would reset it
        for intf in hid_interfaces(dev):
            if intf.bInterfaceSubClass == 1:
                continue  # a boot keyboard or mouse: never taken from the kernel
            number = intf.bInterfaceNumber
            raw = sysfs_interface_descriptor(dev, number) if _driver_active(dev, number) else None
            reattach = False
            if raw is None:
                # pyusb claims the interface for a control transfer to it, which usbhid's hold
                # refuses (EBUSY): detach this one interface to ask, give it back if not ours.
                reattach = _detach(dev, number)
                try:
                    raw = usb_report_descriptor(dev, intf)
                except usb.core.USBError:
                    raw = b""
            if pos_problem(raw) is not None:
                if reattach:
                    usb.util.release_interface(dev, number)
                    with contextlib.suppress(usb.core.USBError, NotImplementedError):
                        dev.attach_kernel_driver(number)
                continue
            reattach = _detach(dev, number) or reattach
            usb.util.claim_interface(dev, number)
            ep_in = ep_out = None
            for ep in intf:
                if ep.bmAttributes & 3 != 3:
                    continue
                if ep.bEndpointAddress & 0x80:
                    ep_in = ep_in or ep.bEndpointAddress
                else:
                    ep_out = ep_out or ep.bEndpointAddress
            claimed = _Claimed(dev, number, ep_in or 0, ep_out, reattach)
            if ep_in is None:
                self._release(dev, claimed)
                raise ControlError("HID-POS interface has no interrupt IN endpoint")
            return claimed, raw
        raise ControlError("no HID interface with a bar code scanner collection (usage page 0x008C)")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            dev = self.find()
        except (usb.core.USBError, usb.core.NoBackendError, ControlError) as e:
            self.set_state("error", f"pyusb: {e}")
            return
        if dev is None:
            self.set_state("absent", f"no USB device {self.scanner.usb} matches")
            return
        try:
            claimed, raw = self._claim(dev)
        except (usb.core.USBError, ControlError, ValueError) as e:
            self.set_state("error", f"cannot claim the HID-POS interface of {self.scanner.usb}: {e}")
            self._release(dev, None)
            return
        self._claimed = claimed
        self._use_descriptor(raw)
        ended: asyncio.Future[str] = loop.create_future()
        stop = threading.Event()

        def finished(reason: str) -> None:
            if not ended.done():
                ended.set_result(reason)

        self.thread = threading.Thread(target=self._read_loop, args=(claimed, stop, loop, finished),
                                       name=f"hidpos-{self.device.name}", daemon=True)
        log.info("hidpos_opened", device=self.device.name, usb=self.scanner.usb, backend="pyusb",
                 interface=claimed.interface, port=usb_port_path(dev), layout=self.layout_reason)
        self.set_state("present")
        self.thread.start()
        try:
            reason = await asyncio.shield(ended)
            self._lost(reason)
        except asyncio.CancelledError:
            stop.set()
            # Stopped, or the daemon saw the udev remove first. Reports the thread already
            # handed over are queued before its end: take them, then end what they leave.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(ended), timeout=10 * READ_TIMEOUT_MS / 1000)
            self.input.abort(self._end_reason(ended.result() if ended.done() else ""))
            raise
        finally:
            stop.set()
            # The thread leaves within one read timeout; wait for it whatever ended us.
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(ended), timeout=10 * READ_TIMEOUT_MS / 1000)
            self.thread.join(timeout=0.5)
            self._claimed = None
            self.input.close()
            self._release(dev, claimed)

    def _read_loop(self, claimed: _Claimed, stop: threading.Event, loop: asyncio.AbstractEventLoop,
                   finished: Callable[[str], None]) -> None:
        reason = "stopped"
        try:
            while not stop.is_set():
                self._drain_writes(claimed)
                try:
                    data = claimed.dev.read(claimed.ep_in, REPORT_SIZE, timeout=READ_TIMEOUT_MS)
                except usb.core.USBTimeoutError:
                    continue
                except usb.core.USBError as e:
                    removed = e.errno in (errno.ENODEV, errno.EIO, errno.ENOENT, errno.ESHUTDOWN) or e.backend_error_code == -4
                    reason = "device_removed" if removed else f"read failed: {e}"
                    return
                loop.call_soon_threadsafe(self.on_report, bytes(data), time.monotonic_ns())
            # Stopped between two reads: one that already arrived is still handed over.
            with contextlib.suppress(usb.core.USBError):
                data = claimed.dev.read(claimed.ep_in, REPORT_SIZE, timeout=1)
                loop.call_soon_threadsafe(self.on_report, bytes(data), time.monotonic_ns())
        except Exception as e:  # whatever ends the thread must reach the loop
            reason = f"read failed: {type(e).__name__}: {e}"
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(finished, reason)

    def _drain_writes(self, claimed: _Claimed) -> None:
        while True:
            try:
                report = self._writes.get_nowait()
            except queue.Empty:
                return
            try:
                if claimed.ep_out is not None:
                    claimed.dev.write(claimed.ep_out, report, timeout=READ_TIMEOUT_MS)
                else:  # SET_REPORT(Output) on the control pipe
                    claimed.dev.ctrl_transfer(0x21, 0x09, 0x200 | report[0], claimed.interface, report, READ_TIMEOUT_MS)
            except usb.core.USBError as e:
                log.warning("hidpos_write_failed", device=self.device.name, error=str(e))

    def _write(self, report: bytes) -> None:
        if self._claimed is None:
            raise ControlError("not open")
        self._writes.put(report)  # the reader thread sends it between two reads

    def _release(self, dev: Any, claimed: _Claimed | None) -> None:
        if claimed is not None:
            with contextlib.suppress(usb.core.USBError, ValueError):
                usb.util.release_interface(dev, claimed.interface)
            if claimed.reattach:
                with contextlib.suppress(usb.core.USBError, NotImplementedError):
                    dev.attach_kernel_driver(claimed.interface)
        with contextlib.suppress(usb.core.USBError):
            usb.util.dispose_resources(dev)


def make_hidpos_source(device: DeviceInfo, spec: FramingSpec, emit: FrameSink, state: StateSink,
                       scanner: ScannerConfig, settings: HidPosSettings) -> HidPosSource:
    """hidraw unless the entry asks for pyusb or the device has no hidraw node (a usbfs path)."""
    if settings.backend == "pyusb" or not os.path.basename(device.path).startswith("hidraw"):
        return PyusbSource(device, spec, emit, state, scanner, settings)
    return HidrawSource(device, spec, emit, state, scanner, settings)


__all__ = ["BACKENDS", "VERBS", "ControlError", "HidPosSettings", "HidPosSource", "HidrawSource", "PyusbSource",
           "control_report", "hid_interfaces", "hidraw_descriptor", "hidraw_ids", "make_hidpos_source",
           "pos_problem", "sysfs_descriptor", "usb_port_path", "usb_report_descriptor"]
