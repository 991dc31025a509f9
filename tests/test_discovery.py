"""Discovery: match_device table tests, udev → description, and the hotplug loop on a real fd."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from scannerd.config import Config, DiscoveryConfig, parse_config
from scannerd.sources.discovery import (
    DeviceDescription,
    Discovery,
    FoundDevice,
    auto_name,
    can_type_digits,
    describe,
    list_descriptions,
    match_device,
)

HONEYWELL_BY_ID = "/dev/input/by-id/usb-Honeywell_Imaging___Mobility_1900_19045B3A42-event-kbd"
HONEYWELL = DeviceDescription("input", "/dev/input/event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61",
                              "usb", (HONEYWELL_BY_ID, "/dev/input/by-path/pci-0000:00:14.0-usb-0:2:1.0-event-kbd"),
                              True, "19045B3A42")
LOGITECH = DeviceDescription("input", "/dev/input/event3", "Logitech USB Keyboard", "046d", "c31c", "usb",
                             ("/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd",), True)
BUILTIN = DeviceDescription("input", "/dev/input/event0", "AT Translated Set 2 keyboard", "0001", "0001", "i8042",
                            ("/dev/input/by-path/platform-i8042-serio-0-event-kbd",), True)
GENERIC_SCANNER = DeviceDescription("input", "/dev/input/event9", "WCM Barcode Scanner USB Keyboard", "1a86", "e026",
                                    "usb", (), True)
UINPUT_SCANNER = DeviceDescription("input", "/dev/input/event12", "scannerd-test barcode scanner", "1234", "5678",
                                   "virtual", (), True)
HONEYWELL_CONSUMER = DeviceDescription("input", "/dev/input/event6", "Honeywell Imaging & Mobility 1900 Consumer Control",
                                       "0c2e", "0b61", "usb", (), False)
POWER_BUTTON = DeviceDescription("input", "/dev/input/event1", "Power Button", "0000", "0001", "host", (), False)
MOUSE_NODE = DeviceDescription("input", "/dev/input/mouse0", "Logitech mouse", "046d", "c077", "usb", (), False)
ZEBRA_ACM = DeviceDescription("tty", "/dev/ttyACM0", "Zebra Technologies Symbol Bar Code Scanner", "05e0", "1701",
                              "usb", ("/dev/serial/by-id/usb-Zebra_Technologies_Symbol_Bar_Code_Scanner_S123-if00",),
                              False, "S123")
FTDI = DeviceDescription("tty", "/dev/ttyUSB0", "FTDI FT232R USB UART", "0403", "6001", "usb", (), False)
TTYS0 = DeviceDescription("tty", "/dev/ttyS0", "", "", "", "", (), False)
KEYBOARD_BEHIND_SCANNER_VENDOR = DeviceDescription("input", "/dev/input/event4", "Dell KB216", "413c", "2113", "usb",
                                                   (), True, udev_scanner=False)
LOCAL_RULE = DeviceDescription("input", "/dev/input/event8", "USB Keyboard", "1a86", "7523", "usb",
                               ("/dev/scanner/ch340-port-1-1.4-event-if00",), True, udev_scanner=True)
CH340_KEYBOARD = DeviceDescription("input", "/dev/input/event11", "USB Keyboard", "1a86", "e026", "usb", (), True)
CH340_TTY = DeviceDescription("tty", "/dev/ttyUSB1", "QinHeng CH340", "1a86", "7523", "usb", (), False)

AUTO = Config()
EXTRA = Config(discovery=DiscoveryConfig(extra_vendor_ids=("1a86",)))
OFF = Config(discovery=DiscoveryConfig(auto=False))


def cfg(*scanners: dict[str, Any]) -> Config:
    return parse_config({"scanner": list(scanners)})


WINDOW3 = cfg({"name": "window-3", "transport": "evdev", "usb": "0c2e:0b61"})


@pytest.mark.parametrize(
    ("config", "desc", "action", "reason_part"),
    [
        # Auto-detect (no [[scanner]] entries).
        (AUTO, HONEYWELL, "auto", "Honeywell"),
        (AUTO, ZEBRA_ACM, "auto", "Zebra"),
        (AUTO, GENERIC_SCANNER, "auto", "says scanner/barcode"),
        (AUTO, UINPUT_SCANNER, "auto", "says scanner/barcode"),
        (AUTO, LOCAL_RULE, "auto", "SCANNERD=1"),
        # A human keyboard is never auto-grabbed, whatever bus it is on.
        (AUTO, LOGITECH, "ignored", "never auto-grabbed"),
        (AUTO, BUILTIN, "ignored", "never auto-grabbed"),
        (AUTO, KEYBOARD_BEHIND_SCANNER_VENDOR, "ignored", "never auto-grabbed"),
        (AUTO, HONEYWELL_CONSUMER, "ignored", "cannot type digits"),
        (AUTO, POWER_BUTTON, "ignored", "cannot type digits"),
        (AUTO, MOUSE_NODE, "ignored", "not an event device"),
        (AUTO, FTDI, "ignored", "not a known scanner vendor"),
        (AUTO, TTYS0, "ignored", "not a USB serial port"),
        # extra_vendor_ids admit serial ports; a keyboard of that vendor stays untouched unless
        # its name says scanner or a udev local rule tags it.
        (EXTRA, GENERIC_SCANNER, "auto", "says scanner/barcode"),
        (EXTRA, CH340_KEYBOARD, "ignored", "extra_vendor_ids, which admits serial ports only"),
        (EXTRA, CH340_TTY, "auto", "extra_vendor_ids"),
        (AUTO, CH340_TTY, "ignored", "not a known scanner vendor"),
        (EXTRA, LOCAL_RULE, "auto", "SCANNERD=1"),
        (OFF, HONEYWELL, "ignored", "auto = false"),
        # Config entries.
        (WINDOW3, HONEYWELL, "config", "'window-3' (by usb)"),
        (WINDOW3, HONEYWELL_CONSUMER, "ignored", "cannot type digits"),
        (WINDOW3, ZEBRA_ACM, "ignored", "no [[scanner]] entry matches"),
        (WINDOW3, GENERIC_SCANNER, "ignored", "auto-detect runs only without"),
        (cfg({"name": "w", "transport": "evdev", "match_name": r"Honeywell.*1900$"}), HONEYWELL, "config", "match_name"),
        (cfg({"name": "w", "transport": "evdev", "match_name": "Zebra"}), HONEYWELL, "ignored", "no [[scanner]]"),
        (cfg({"name": "w", "transport": "evdev", "by_id": HONEYWELL_BY_ID}), HONEYWELL, "config", "by_id"),
        (cfg({"name": "w", "transport": "evdev", "by_id": os.path.basename(HONEYWELL_BY_ID)}), HONEYWELL, "config", "by_id"),
        (cfg({"name": "w", "transport": "evdev", "path": "/dev/input/event5"}), HONEYWELL, "config", "path"),
        (cfg({"name": "w", "transport": "evdev", "path": HONEYWELL_BY_ID}), HONEYWELL, "config", "path"),
        # An explicit path takes even a node that reports no digit keys.
        (cfg({"name": "w", "transport": "evdev", "path": "/dev/input/event6"}), HONEYWELL_CONSUMER, "config", "path"),
        # All criteria an entry gives must hold.
        (cfg({"name": "w", "transport": "evdev", "usb": "0c2e:0b61", "match_name": "Consumer"}), HONEYWELL, "ignored", "no [[scanner]]"),
        (cfg({"name": "w", "transport": "evdev", "usb": "0c2e:0b61", "match_name": "1900$"}), HONEYWELL, "config", "usb, match_name"),
        # Configured as a human keyboard's reader: config wins over the never-auto-grab rule.
        (cfg({"name": "kbd", "transport": "evdev", "usb": "046d:c31c", "shared_keyboard": True}), LOGITECH, "config", "'kbd'"),
        (cfg({"name": "s", "transport": "serial", "by_id": ZEBRA_ACM.links[0]}), ZEBRA_ACM, "config", "by_id"),
        (cfg({"name": "s", "transport": "serial", "path": "/dev/ttyACM0"}), ZEBRA_ACM, "config", "path"),
        (cfg({"name": "s", "transport": "serial", "path": "/dev/ttyACM0"}, {"name": "w", "transport": "evdev", "usb": "0c2e:0b61"}),
         HONEYWELL, "config", "'w'"),
    ],
)
def test_match_device(config: Config, desc: DeviceDescription, action: str, reason_part: str) -> None:
    result = match_device(config, desc)
    assert result.action == action, result.reason
    assert reason_part in result.reason
    assert (result.scanner is not None) == (action != "ignored")


def test_auto_detected_scanners_are_named_from_by_id_and_use_the_right_transport() -> None:
    result = match_device(AUTO, HONEYWELL)
    assert result.scanner is not None
    assert result.scanner.name == "usb-Honeywell_Imaging___Mobility_1900_19045B3A42-event-kbd"
    assert (result.scanner.transport, result.scanner.path, result.scanner.grab) == ("evdev", HONEYWELL_BY_ID, True)
    serial = match_device(AUTO, ZEBRA_ACM).scanner
    assert serial is not None and serial.transport == "serial" and serial.path == ZEBRA_ACM.links[0]


@pytest.mark.parametrize(
    ("desc", "name"),
    [
        (GENERIC_SCANNER, "evdev-1a86-e026"),  # no event number: it changes on replug
        (DeviceDescription("input", "/dev/input/event3", "x"), "evdev-event3"),
        (LOCAL_RULE, "ch340-port-1-1.4-event-if00"),
        (DeviceDescription("tty", "/dev/ttyACM1", vid="05f9", pid="4204", serial="D1 23/x"), "serial-05f9-4204-D1_23_x"),
        (DeviceDescription("input", "/dev/input/event1", links=("/dev/input/by-id/" + "x" * 100,)), "x" * 64),
    ],
)
def test_auto_name_is_a_valid_scanner_name(desc: DeviceDescription, name: str) -> None:
    assert auto_name(desc) == name


def test_key_capability_bitmap() -> None:
    # A full keyboard as sysfs prints it (most significant 64-bit word first).
    assert can_type_digits("120013 0 0 0 0 1000000000 0 0 fffffffffffffffe")
    assert can_type_digits("10000000 0 0 0 0 0 fffffffffffffffe")
    assert not can_type_digits("1000000000000 0 0 0")  # power button: KEY_POWER only
    assert not can_type_digits("")
    assert not can_type_digits("zz")


# --- udev devices -------------------------------------------------------------------------------

@dataclass
class FakeUdevDevice:
    """The pyudev Device surface describe() and the loop use."""

    subsystem: str
    device_node: str | None
    attributes: dict[str, bytes] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    device_links: list[str] = field(default_factory=list)
    parent: FakeUdevDevice | None = None
    usb: FakeUdevDevice | None = None
    action: str | None = None

    def find_parent(self, subsystem: str, device_type: str | None = None) -> FakeUdevDevice | None:
        return self.usb if subsystem == "usb" else None


USB_HONEYWELL = FakeUdevDevice("usb", "/dev/bus/usb/001/004", {"idVendor": b"0c2e", "idProduct": b"0b61",
                                                               "serial": b"19045B3A42", "manufacturer": b"Honeywell",
                                                               "product": b"1900"})
KEYS_CAPS = b"120013 0 0 0 0 1000000000 0 0 fffffffffffffffe"


def input_node(event: str, name: str, vendor: str, product: str, bus: str = "0003", caps: bytes = KEYS_CAPS,
               usb: FakeUdevDevice | None = USB_HONEYWELL, **kw: Any) -> FakeUdevDevice:
    parent = FakeUdevDevice("input", None, {"name": name.encode(), "id/bustype": bus.encode(),
                                            "id/vendor": vendor.encode(), "id/product": product.encode(),
                                            "capabilities/key": caps})
    return FakeUdevDevice("input", f"/dev/input/{event}", parent=parent, usb=usb, **kw)


def test_describe_without_udev_properties_reads_sysfs() -> None:
    desc = describe(input_node("event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61"))
    assert desc == DeviceDescription("input", "/dev/input/event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61",
                                     "usb", (), True, "19045B3A42", False)


def test_describe_with_udev_properties() -> None:
    dev = input_node("event5", "Honeywell Imaging & Mobility 1900", "0000", "0000", caps=b"0",
                     properties={"ID_VENDOR_ID": "0c2e", "ID_MODEL_ID": "0b61", "ID_INPUT_KEYBOARD": "1",
                                 "SCANNERD": "1", "ID_SERIAL_SHORT": "S1"},
                     device_links=[HONEYWELL_BY_ID])
    desc = describe(dev)
    assert desc is not None
    assert (desc.vid, desc.keyboard, desc.udev_scanner, desc.by_id, desc.serial) == ("0c2e", True, True, HONEYWELL_BY_ID, "S1")


def test_describe_tty_and_others() -> None:
    tty = FakeUdevDevice("tty", "/dev/ttyACM0", usb=FakeUdevDevice("usb", None, {"idVendor": b"05e0", "idProduct": b"1701",
                                                                                 "manufacturer": b"Zebra", "product": b"DS2208"}))
    desc = describe(tty)
    assert desc is not None and (desc.subsystem, desc.name, desc.vid, desc.bus) == ("tty", "Zebra DS2208", "05e0", "usb")
    assert describe(FakeUdevDevice("input", None)) is None  # the inputN parent has no node
    assert describe(FakeUdevDevice("hidraw", "/dev/hidraw0")) is None


# --- the hotplug loop -----------------------------------------------------------------------------

class FakeMonitor:
    """A udev monitor whose fileno() is a real socket, so loop.add_reader sees it become readable."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.pending: list[FakeUdevDevice] = []
        self.started = False

    def start(self) -> None:
        self.started = True

    def fileno(self) -> int:
        return self.r.fileno()

    def poll(self, timeout: float | None = None) -> FakeUdevDevice | None:
        assert timeout == 0  # never block the event loop
        if not self.pending:
            return None
        self.r.recv(1)
        return self.pending.pop(0)

    def emit(self, action: str, dev: FakeUdevDevice) -> None:
        dev.action = action
        self.pending.append(dev)
        self.w.send(b"x")


class FakeContext:
    def __init__(self, devices: list[FakeUdevDevice]) -> None:
        self.devices = devices

    def list_devices(self, subsystem: str) -> list[FakeUdevDevice]:
        return [d for d in self.devices if d.subsystem == subsystem]


async def test_discovery_enumerates_then_follows_hotplug() -> None:
    present = [
        input_node("event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61", device_links=[HONEYWELL_BY_ID]),
        input_node("event3", "Logitech USB Keyboard", "046d", "c31c", usb=None),
        FakeUdevDevice("tty", "/dev/tty1"),
        input_node("mouse0", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61"),  # not an event node
    ]
    added: list[FoundDevice] = []
    removed: list[str] = []
    monitor = FakeMonitor()
    disc = Discovery(AUTO, added.append, removed.append, context=FakeContext(present), monitor=monitor)
    await disc.start()
    assert monitor.started
    assert [(f.devnode, f.scanner.name) for f in added] == [
        ("/dev/input/event5", "usb-Honeywell_Imaging___Mobility_1900_19045B3A42-event-kbd")]

    # Hotplug: a Zebra CDC-ACM scanner arrives; the start callback runs within the loop, promptly.
    zebra = FakeUdevDevice("tty", "/dev/ttyACM0", usb=FakeUdevDevice("usb", None, {"idVendor": b"05e0", "idProduct": b"1701"}))
    t0 = time.monotonic()
    monitor.emit("add", zebra)
    while len(added) < 2:
        await asyncio.sleep(0.001)
    assert time.monotonic() - t0 < 1.0
    assert added[1].subsystem == "tty" and added[1].scanner.transport == "serial"
    monitor.emit("add", zebra)  # a duplicate event (udev "add" after our enumeration) is ignored
    monitor.emit("remove", FakeUdevDevice("input", "/dev/input/event3"))  # never ours: not reported
    monitor.emit("remove", FakeUdevDevice("input", "/dev/input/event5"))
    await asyncio.sleep(0.02)
    assert len(added) == 2
    assert removed == ["/dev/input/event5"]
    assert set(disc.active) == {"/dev/ttyACM0"}
    # Replug gets the scanner back under the same name.
    monitor.emit("add", present[0])
    await asyncio.sleep(0.02)
    assert added[-1].scanner.name == added[0].scanner.name
    disc.stop()
    monitor.emit("add", input_node("event7", "Another Barcode Scanner", "1234", "0001"))
    await asyncio.sleep(0.02)
    assert len(added) == 3  # stopped: no more callbacks


def test_list_descriptions_keeps_scanner_capable_nodes_only() -> None:
    ctx = FakeContext([
        input_node("event10", "Logitech USB Keyboard", "046d", "c31c"),
        input_node("mouse0", "Logitech mouse", "046d", "c077"),
        FakeUdevDevice("input", None),  # the inputN parent
        FakeUdevDevice("tty", "/dev/tty1"),
        FakeUdevDevice("tty", "/dev/ttyS0"),
        FakeUdevDevice("tty", "/dev/ttyACM2", usb=USB_HONEYWELL),
        FakeUdevDevice("tty", "/dev/ttyACM10", usb=USB_HONEYWELL),
    ])
    assert [d.devnode for d in list_descriptions(ctx)] == [
        "/dev/input/event10", "/dev/ttyACM2", "/dev/ttyACM10", "/dev/ttyS0"]


async def test_two_identical_scanners_on_one_config_entry_start_once() -> None:
    a = input_node("event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61")
    b = input_node("event6", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61")
    added: list[FoundDevice] = []
    disc = Discovery(WINDOW3, added.append, lambda _: None, context=FakeContext([a, b]), monitor=FakeMonitor())
    await disc.start()
    assert [f.devnode for f in added] == ["/dev/input/event5"]
    disc.stop()


async def test_two_identical_auto_detected_scanners_get_distinct_names() -> None:
    a = input_node("event5", "Generic Barcode Scanner", "1a86", "e026", usb=None)
    b = input_node("event6", "Generic Barcode Scanner", "1a86", "e026", usb=None)
    added: list[FoundDevice] = []
    disc = Discovery(AUTO, added.append, lambda _: None, context=FakeContext([a, b]), monitor=FakeMonitor())
    await disc.start()
    assert [f.scanner.name for f in added] == ["evdev-1a86-e026", "evdev-1a86-e026-2"]
    disc.stop()


async def test_real_pyudev_monitor_starts_on_this_machine() -> None:
    # The real thing where it can run: a kernel-source monitor on the loop, enumeration of /sys.
    pytest.importorskip("pyudev")
    disc = Discovery(AUTO, lambda _: None, lambda _: None)
    try:
        await disc.start()
    except OSError as e:  # no netlink in this sandbox
        pytest.skip(f"no udev netlink here: {e}")
    assert disc._fd is not None
    disc.stop()
    assert disc._fd is None


async def test_lost_udev_events_are_recovered_by_resync() -> None:
    # An event storm overflows the netlink buffer (ENOBUFS): the "add" of a scanner is lost.
    # Discovery looks at what is present instead of waiting for a replug.
    present: list[FakeUdevDevice] = []
    added: list[FoundDevice] = []

    class OverflowingMonitor(FakeMonitor):
        def poll(self, timeout: float | None = None) -> FakeUdevDevice | None:
            if self.pending and self.pending[0] == "overflow":  # type: ignore[comparison-overlap]
                self.pending.pop(0)
                self.r.recv(1)
                raise OSError(105, "No buffer space available")
            return super().poll(timeout)

    monitor = OverflowingMonitor()
    disc = Discovery(AUTO, added.append, lambda _: None, context=FakeContext(present), monitor=monitor)
    await disc.start()
    assert added == []
    present.append(input_node("event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61", device_links=[HONEYWELL_BY_ID]))
    monitor.pending.append("overflow")  # type: ignore[arg-type]
    monitor.w.send(b"x")
    await until_true(lambda: bool(added))  # the enumeration runs in a worker thread
    assert [f.devnode for f in added] == ["/dev/input/event5"]
    disc.stop()


async def until_true(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.005)


class SlowContext(FakeContext):
    """Enumeration that takes as long as the test says (a /sys walk during an event storm)."""

    def __init__(self, devices: list[FakeUdevDevice], ticks: list[int]) -> None:
        super().__init__(devices)
        self.ticks = ticks
        self.ticks_seen_while_enumerating = 0
        self.slow = False
        self.entered = False

    def list_devices(self, subsystem: str) -> list[FakeUdevDevice]:
        if self.slow and subsystem == "input":
            self.entered = True
            start = len(self.ticks)
            deadline = time.monotonic() + 5
            while len(self.ticks) < start + 3 and time.monotonic() < deadline:
                time.sleep(0.005)  # a loop blocked in this call cannot tick
            self.ticks_seen_while_enumerating = len(self.ticks) - start
        return super().list_devices(subsystem)


async def test_resync_enumerates_off_the_loop() -> None:
    ticks: list[int] = []
    present: list[FakeUdevDevice] = []
    added: list[FoundDevice] = []

    class OverflowingMonitor(FakeMonitor):
        def poll(self, timeout: float | None = None) -> FakeUdevDevice | None:
            if self.pending and self.pending[0] == "overflow":  # type: ignore[comparison-overlap]
                self.pending.pop(0)
                self.r.recv(1)
                raise OSError(105, "No buffer space available")
            return super().poll(timeout)

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.005)

    context = SlowContext(present, ticks)
    monitor = OverflowingMonitor()
    disc = Discovery(AUTO, added.append, lambda _: None, context=context, monitor=monitor)
    await disc.start()
    tick = asyncio.create_task(ticker())
    try:
        context.slow = True
        present.append(input_node("event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61", device_links=[HONEYWELL_BY_ID]))
        monitor.pending.append("overflow")  # type: ignore[arg-type]
        monitor.w.send(b"x")
        await until_true(lambda: bool(added))
        assert context.ticks_seen_while_enumerating >= 3, "the loop stood still while /sys was enumerated"
        assert [f.devnode for f in added] == ["/dev/input/event5"]
    finally:
        tick.cancel()
        disc.stop()



async def test_a_device_unplugged_during_the_resync_is_not_started() -> None:
    ticks: list[int] = []
    scanner = input_node("event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61", device_links=[HONEYWELL_BY_ID])
    context = SlowContext([scanner], ticks)
    added: list[FoundDevice] = []
    monitor = FakeMonitor()
    disc = Discovery(AUTO, added.append, lambda _: None, context=context, monitor=monitor)

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.005)

    tick = asyncio.create_task(ticker())
    try:
        await disc.start()
        added.clear()
        disc.active.clear()
        context.slow = True
        disc.resync()
        await until_true(lambda: context.entered)
        gone = input_node("event5", "Honeywell Imaging & Mobility 1900", "0c2e", "0b61")
        monitor.emit("remove", gone)  # handled on the loop while the thread still enumerates
        await until_true(lambda: disc._resync_task is not None and disc._resync_task.done())
        assert added == []  # the stale enumeration result is not started
    finally:
        tick.cancel()
        disc.stop()
