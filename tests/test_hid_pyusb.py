"""The pyusb adapter through pyusb's public API: usb.core.find(backend=…) with a test backend
implementing usb.backend.IBackend for a Honeywell N5600 in HID-POS mode (0c2e:0967, one
interface 3/0/0 "HID POS", interrupt IN 0x82 and OUT 0x07, 64 bytes; the report descriptor by
control transfer; interrupt reads that block; unplug errors)."""

from __future__ import annotations

import array
import asyncio
import errno
import queue
import threading
from types import SimpleNamespace
from typing import Any

import pytest
import usb.backend
import usb.core
from hidpos_fixtures import (
    HONEYWELL_DESCRIPTOR,
    KEYBOARD_DESCRIPTOR,
    N5600_STRINGS,
    n5600_config_descriptor,
    n5600_device_descriptor,
    pos_reports,
    until,
)

from scannerd.config import ScannerConfig
from scannerd.framing import FramingSpec
from scannerd.model import DeviceInfo, DeviceStateEvent, Frame, Rejected
from scannerd.sources.hidpos import (
    ControlError,
    HidPosSettings,
    PyusbSource,
    hid_interfaces,
    usb_report_descriptor,
)

_DEVICE_FIELDS = ("bLength", "bDescriptorType", "bcdUSB", "bDeviceClass", "bDeviceSubClass", "bDeviceProtocol",
                  "bMaxPacketSize0", "idVendor", "idProduct", "bcdDevice", "iManufacturer", "iProduct",
                  "iSerialNumber", "bNumConfigurations")
_LAYOUTS = {  # descriptor type → (field, size in bytes)
    2: (("bLength", 1), ("bDescriptorType", 1), ("wTotalLength", 2), ("bNumInterfaces", 1),
        ("bConfigurationValue", 1), ("iConfiguration", 1), ("bmAttributes", 1), ("bMaxPower", 1)),
    4: (("bLength", 1), ("bDescriptorType", 1), ("bInterfaceNumber", 1), ("bAlternateSetting", 1),
        ("bNumEndpoints", 1), ("bInterfaceClass", 1), ("bInterfaceSubClass", 1), ("bInterfaceProtocol", 1),
        ("iInterface", 1)),
    5: (("bLength", 1), ("bDescriptorType", 1), ("bEndpointAddress", 1), ("bmAttributes", 1),
        ("wMaxPacketSize", 2), ("bInterval", 1)),
}


def _fields(raw: bytes, layout: tuple[tuple[str, int], ...]) -> dict[str, int]:
    out, i = {}, 0
    for name, size in layout:
        out[name] = int.from_bytes(raw[i: i + size], "little")
        i += size
    return out


class FakeUsbDevice:
    """One device as libusb would show it: descriptors parsed from their bytes, reports queued."""

    def __init__(self, serial: str = "19123B4A21", port: tuple[int, ...] = (1,), address: int = 2,
                 interfaces: tuple[tuple[int, bytes], ...] = ((0, HONEYWELL_DESCRIPTOR),), configured: bool = True,
                 config: bytes | None = None) -> None:
        raw = n5600_device_descriptor()
        self.device = SimpleNamespace(**dict(zip(_DEVICE_FIELDS, (raw[0], raw[1], 0x200, 0, 0, 0, 64, 0x0C2E, 0x0967,
                                                                  0x100, 1, 2, 3, 1), strict=True)),
                                      bus=1, address=address, port_number=port[-1], port_numbers=port, speed=3)
        self.strings = {**N5600_STRINGS, 3: serial}
        self.report_descriptors = dict(interfaces)
        self.config_raw = config or n5600_config_descriptor()
        self.configured = configured
        self.reports: queue.Queue[bytes | None] = queue.Queue()
        self.written: list[tuple[int, bytes]] = []
        self.controls: list[tuple[int, int, int, int]] = []
        self.driver_active = {n: True for n, _ in interfaces}
        self.detached: list[int] = []
        self.attached: list[int] = []
        self.claimed: set[int] = set()
        self.set_configuration_calls = 0
        self.unplugged = threading.Event()
        self.reading = threading.Event()  # a reader is blocked in intr_read
        self._parse()

    def _parse(self) -> None:
        raw = self.config_raw
        self.config = SimpleNamespace(**_fields(raw, _LAYOUTS[2]), extra_descriptors=[])
        self.intfs: list[SimpleNamespace] = []
        i = raw[0]
        while i < len(raw):
            length, kind = raw[i], raw[i + 1]
            part = raw[i: i + length]
            if kind == 4:
                self.intfs.append(SimpleNamespace(**_fields(part, _LAYOUTS[4]), extra_descriptors=[], endpoints=[]))
            elif kind == 5:
                self.intfs[-1].endpoints.append(SimpleNamespace(**_fields(part, _LAYOUTS[5]), extra_descriptors=[],
                                                                bRefresh=0, bSynchAddress=0))
            elif self.intfs:
                self.intfs[-1].extra_descriptors.extend(part)
            i += length

    def unplug(self) -> None:
        self.unplugged.set()
        self.reports.put(None)


def _gone() -> usb.core.USBError:
    return usb.core.USBError("No such device (it may have been disconnected)", -4, errno.ENODEV)


class FakeBackend(usb.backend.IBackend):  # type: ignore[misc]
    """usb.backend.IBackend over FakeUsbDevice objects (what libusb1.py does over libusb)."""

    def __init__(self, *devices: FakeUsbDevice) -> None:
        self.devices = list(devices)

    def enumerate_devices(self) -> Any:
        return iter([d for d in self.devices if not d.unplugged.is_set()])

    def get_device_descriptor(self, dev: FakeUsbDevice) -> Any:
        return dev.device

    def get_configuration_descriptor(self, dev: FakeUsbDevice, config: int) -> Any:
        if config != 0:
            raise IndexError("no such configuration")
        return dev.config

    def get_interface_descriptor(self, dev: FakeUsbDevice, intf: int, alt: int, config: int) -> Any:
        if alt != 0 or intf >= len(dev.intfs):
            raise IndexError("no such alternate setting")
        return dev.intfs[intf]

    def get_endpoint_descriptor(self, dev: FakeUsbDevice, ep: int, intf: int, alt: int, config: int) -> Any:
        return dev.intfs[intf].endpoints[ep]

    def open_device(self, dev: FakeUsbDevice) -> Any:
        if dev.unplugged.is_set():
            raise _gone()
        return dev

    def close_device(self, dev_handle: FakeUsbDevice) -> None:
        pass

    def get_configuration(self, dev_handle: FakeUsbDevice) -> int:
        return 1 if dev_handle.configured else 0

    def set_configuration(self, dev_handle: FakeUsbDevice, config_value: int) -> None:
        if dev_handle.claimed:
            raise usb.core.USBError("Resource busy", -6, errno.EBUSY)
        dev_handle.set_configuration_calls += 1
        dev_handle.configured = True

    def claim_interface(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        if dev_handle.driver_active.get(intf):
            raise usb.core.USBError("Resource busy", -6, errno.EBUSY)  # usbhid still owns it
        dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        dev_handle.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: FakeUsbDevice, intf: int) -> bool:
        return dev_handle.driver_active.get(intf, False)

    def detach_kernel_driver(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        dev_handle.driver_active[intf] = False
        dev_handle.detached.append(intf)

    def attach_kernel_driver(self, dev_handle: FakeUsbDevice, intf: int) -> None:
        if dev_handle.unplugged.is_set():
            raise _gone()
        dev_handle.driver_active[intf] = True
        dev_handle.attached.append(intf)

    def ctrl_transfer(self, dev_handle: FakeUsbDevice, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        if dev_handle.unplugged.is_set():
            raise _gone()
        dev_handle.controls.append((bmRequestType, bRequest, wValue, wIndex))
        if (bmRequestType, bRequest) == (0x81, 0x06) and wValue >> 8 == 0x22:  # GET_DESCRIPTOR(Report)
            reply = dev_handle.report_descriptors.get(wIndex, b"")
        elif (bmRequestType, bRequest) == (0x80, 0x06) and wValue >> 8 == 0x03:  # strings
            index = wValue & 0xFF
            text = dev_handle.strings.get(index, "")
            reply = b"\x04\x03\x09\x04" if index == 0 else bytes([2 + 2 * len(text), 3]) + text.encode("utf-16-le")
        elif (bmRequestType, bRequest) == (0x21, 0x09):  # SET_REPORT
            dev_handle.written.append((0, bytes(data)))
            return len(data)
        else:
            raise usb.core.USBError("Pipe error", -9, errno.EPIPE)
        n = min(len(reply), len(data))
        data[:n] = array.array("B", reply[:n])
        return n

    def intr_read(self, dev_handle: FakeUsbDevice, ep: int, intf: int, buff: Any, timeout: int) -> int:
        if intf not in dev_handle.claimed:
            raise usb.core.USBError("Resource busy", -6, errno.EBUSY)
        dev_handle.reading.set()
        try:
            report = dev_handle.reports.get(timeout=timeout / 1000)
        except queue.Empty:
            raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT) from None
        if report is None:
            dev_handle.reports.put(None)  # stays unplugged for every later read
            raise _gone()
        buff[: len(report)] = array.array("B", report)
        return len(report)

    def intr_write(self, dev_handle: FakeUsbDevice, ep: int, intf: int, data: Any, timeout: int) -> int:
        if dev_handle.unplugged.is_set():
            raise _gone()
        dev_handle.written.append((ep, bytes(data)))
        return len(data)


class Collected:
    def __init__(self) -> None:
        self.items: list[Frame | Rejected] = []
        self.states: list[DeviceStateEvent] = []

    def emit(self, item: Frame | Rejected) -> None:
        self.items.append(item)

    def state(self, ev: DeviceStateEvent) -> None:
        self.states.append(ev)


def make_source(backend: FakeBackend, out: Collected, path: str = "", **settings: Any) -> PyusbSource:
    scanner = ScannerConfig(name="kiosk-1", transport="hidpos", usb="0c2e:0967", settings=settings)
    device = DeviceInfo("kiosk-1", "hidpos", "outpatient", "kiosk", path)
    spec = FramingSpec(terminator="\r", idle_gap_ms=2000)
    return PyusbSource(device, spec, out.emit, out.state, scanner, HidPosSettings.from_mapping(settings), backend=backend)


async def started(dev: FakeUsbDevice, out: Collected, source: PyusbSource) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(source.run())
    await until(lambda: dev.reading.is_set() or task.done(), timeout=10)
    assert not task.done(), out.states
    return task


def test_public_api_sees_the_n5600() -> None:
    dev = FakeUsbDevice()
    found = usb.core.find(backend=FakeBackend(dev), idVendor=0x0C2E, idProduct=0x0967)
    assert found is not None
    assert found.serial_number == "19123B4A21"
    intfs = list(hid_interfaces(found))
    assert [(i.bInterfaceNumber, i.bInterfaceClass, i.bInterfaceSubClass, i.bInterfaceProtocol) for i in intfs] == [(0, 3, 0, 0)]
    assert usb.util.get_string(found, intfs[0].iInterface) == "HID POS"
    assert [(e.bEndpointAddress, e.wMaxPacketSize) for e in intfs[0]] == [(0x82, 64), (0x07, 64)]
    # Like libusb, a control transfer to an interface usbhid holds is refused: pyusb claims it first.
    with pytest.raises(usb.core.USBError, match="Resource busy"):
        usb_report_descriptor(found, intfs[0])
    found.detach_kernel_driver(0)
    assert usb_report_descriptor(found, intfs[0]) == HONEYWELL_DESCRIPTOR


async def test_code_over_three_reports_and_release_on_stop() -> None:
    dev = FakeUsbDevice()
    out = Collected()
    source = make_source(FakeBackend(dev), out)
    task = await started(dev, out, source)
    assert dev.detached == [0] and dev.claimed == {0}
    assert dev.set_configuration_calls == 0  # configured already: never reset
    assert source.thread is not None and source.thread.is_alive()
    code = b"6" * 150
    for r in pos_reports(code):
        dev.reports.put(r)
    await until(lambda: out.items, timeout=10)
    frame = out.items[0]
    assert isinstance(frame, Frame) and frame.text == code.decode() and frame.symbology == "qr"
    assert [s.state for s in out.states] == ["present"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not source.thread.is_alive()  # no thread outlives its source
    assert dev.attached == [0] and dev.claimed == set()


async def test_unplug_mid_code_is_device_removed_and_the_thread_ends() -> None:
    dev = FakeUsbDevice()
    out = Collected()
    source = make_source(FakeBackend(dev), out)
    task = await started(dev, out, source)
    dev.reports.put(pos_reports(b"7" * 100)[0])  # first of two reports
    await until(lambda: source.reports == 1, timeout=10)
    dev.unplug()
    await asyncio.wait_for(task, timeout=10)
    assert [(type(i), i.reason) for i in out.items if isinstance(i, Rejected)] == [(Rejected, "device_removed")]
    assert [s.state for s in out.states] == ["present", "absent"]
    assert source.thread is not None and not source.thread.is_alive()


async def test_unconfigured_device_is_configured_once() -> None:
    dev = FakeUsbDevice(configured=False)
    out = Collected()
    source = make_source(FakeBackend(dev), out)
    task = await started(dev, out, source)
    assert dev.set_configuration_calls == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_composite_device_detaches_only_the_pos_interface() -> None:
    # Keyboard on interface 0, HID-POS on interface 1 (Honeywell's composite mode).
    intf0 = bytes([9, 4, 0, 0, 1, 3, 1, 1, 0]) + bytes([9, 0x21, 0x11, 1, 0, 1, 0x22, len(KEYBOARD_DESCRIPTOR), 0]) + \
        bytes([7, 5, 0x81, 3, 8, 0, 10])
    intf1 = bytes([9, 4, 1, 0, 2, 3, 0, 0, 4]) + bytes([9, 0x21, 0x11, 1, 0, 1, 0x22, len(HONEYWELL_DESCRIPTOR), 0]) + \
        bytes([7, 5, 0x82, 3, 64, 0, 1, 7, 5, 0x07, 3, 64, 0, 1])
    body = intf0 + intf1
    config = bytes([9, 2, 9 + len(body), 0, 2, 1, 0, 0x80, 250]) + body
    dev = FakeUsbDevice(interfaces=((0, KEYBOARD_DESCRIPTOR), (1, HONEYWELL_DESCRIPTOR)), config=config)
    out = Collected()
    source = make_source(FakeBackend(dev), out)
    task = await started(dev, out, source)
    assert dev.detached == [1] and dev.claimed == {1} and dev.driver_active[0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dev.attached == [1]


async def test_serial_picks_one_of_two_identical_scanners() -> None:
    a, b = FakeUsbDevice(serial="A1", port=(1,), address=2), FakeUsbDevice(serial="B2", port=(2,), address=3)
    out = Collected()
    both = make_source(FakeBackend(a, b), out)
    await both.run()
    assert out.states[-1].state == "error" and "2 devices 0c2e:0967 present" in out.states[-1].reason
    for path, settings, chosen in (("", {"serial": "B2"}, b), ("", {"port_path": "1-1"}, a),
                                   ("/dev/bus/usb/001/003", {}, b)):  # the node discovery handed over
        out = Collected()
        source = make_source(FakeBackend(a, b), out, path, **settings)
        task = await started(chosen, out, source)
        assert chosen.claimed == {0}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        chosen.reading.clear()


async def test_absent_device_and_no_pos_interface() -> None:
    out = Collected()
    await make_source(FakeBackend(), out).run()
    assert out.states[-1].state == "absent"
    dev = FakeUsbDevice(interfaces=((0, KEYBOARD_DESCRIPTOR),))
    out = Collected()
    await make_source(FakeBackend(dev), out).run()
    assert out.states[-1].state == "error" and "0x008C" in out.states[-1].reason
    # A 3/0/0 interface had to be detached to ask for its descriptor: it is given back.
    assert dev.detached == [0] and dev.attached == [0] and dev.claimed == set() and dev.driver_active[0]


async def test_control_verbs_become_output_reports() -> None:
    dev = FakeUsbDevice()
    out = Collected()
    source = make_source(FakeBackend(dev), out, beep_on_reject=True)
    task = await started(dev, out, source)
    source.control("good")
    source.control("enable")
    source.feedback(False)  # a reject: error beep
    source.control("disable")
    await until(lambda: len(dev.written) == 4, timeout=10)
    assert dev.written[0] == (0x07, bytes([0x04, 0x40]))
    assert dev.written[1] == (0x07, bytes([0xFD, 0x03, 0x16, 0x54, 0x0D]).ljust(64, b"\0"))
    assert dev.written[2] == (0x07, bytes([0x04, 0x20]))
    assert dev.written[3] == (0x07, bytes([0xFD, 0x03, 0x16, 0x55, 0x0D]).ljust(64, b"\0"))
    for verb in ("\x16N\r", "beep", "FD0316540D"):
        with pytest.raises(ControlError, match="unknown verb"):
            source.control(verb)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ControlError, match="not present|not open"):
        source.control("good")


async def test_cancelled_on_udev_remove_still_rejects_the_half_code() -> None:
    """The daemon cancels the source when udev says the device went, possibly before the
    reader thread's last report reached the loop: that half code is a device_removed reject."""
    dev = FakeUsbDevice()
    out = Collected()
    source = make_source(FakeBackend(dev), out)
    task = await started(dev, out, source)
    dev.reports.put(pos_reports(b"7" * 100)[0])
    dev.unplug()
    source.abort("device_removed")  # what the daemon does on the udev remove, then it cancels
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(type(i), i.reason) for i in out.items if isinstance(i, Rejected)] == [(Rejected, "device_removed")]
    assert out.items[0].text == "7" * 56
    assert source.thread is not None and not source.thread.is_alive()
