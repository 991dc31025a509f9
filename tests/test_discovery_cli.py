"""`scannerd devices` report and the device resolution `scannerd test`/`record` use."""

from __future__ import annotations

import pytest
from test_discovery import (
    BUILTIN,
    FTDI,
    HONEYWELL,
    HONEYWELL_BY_ID,
    HONEYWELL_CONSUMER,
    LOGITECH,
    ZEBRA_ACM,
    cfg,
)

from scannerd.commands.devices import UsbDescription, render, report
from scannerd.config import Config, ScannerConfig
from scannerd.sources.discovery import resolve_device

DESCS = [BUILTIN, LOGITECH, HONEYWELL, HONEYWELL_CONSUMER, ZEBRA_ACM, FTDI]
USB = [
    UsbDescription("0c2e", "0b61", "Honeywell 1900", "19045B3A42"),
    UsbDescription("05f9", "4204", "Datalogic QD2430"),  # HID-POS mode: no keyboard, no tty
    UsbDescription("1d6b", "0002", "Linux Foundation 2.0 root hub", device_class="09"),
    UsbDescription("046d", "c31c", "Logitech USB Keyboard"),
]


def test_report_says_what_happens_to_each_device() -> None:
    rows = report(Config(), DESCS, USB)
    by = {r.get("devnode") or r["usb"]: r for r in rows}
    assert by["/dev/input/event5"]["action"] == "auto" and by["/dev/input/event5"]["grab"] is True
    assert by["/dev/input/event3"]["action"] == "ignored" and "never auto-grabbed" in by["/dev/input/event3"]["reason"]
    assert by["/dev/input/event0"]["action"] == "ignored"
    assert by["/dev/ttyACM0"]["action"] == "auto" and by["/dev/ttyACM0"]["kind"] == "serial"
    assert by["/dev/ttyUSB0"]["action"] == "ignored"
    assert "HID-POS" in by["05f9:4204"]["reason"]
    assert by["0c2e:0b61"]["reason"] == "nodes: /dev/input/event5, /dev/input/event6"
    assert "1d6b:0002" not in by  # hubs are noise


def test_report_with_config_entries_and_permissions() -> None:
    config = cfg({"name": "kbd", "transport": "evdev", "usb": "046d:c31c", "shared_keyboard": True})
    rows = report(config, DESCS, USB, readable=lambda p: p != "/dev/input/event3")
    by = {r.get("devnode") or r["usb"]: r for r in rows}
    assert by["/dev/input/event3"]["action"] == "config"
    assert by["/dev/input/event3"]["grab"] is False  # a shared keyboard is never grabbed
    assert "no permission" in by["/dev/input/event3"]["warning"]
    assert "HID-POS" in by["05f9:4204"]["reason"]  # with what to do
    assert by["/dev/input/event5"]["action"] == "ignored"


def test_render_groups_and_explains() -> None:
    text = render(report(Config(), DESCS, USB))
    assert text.index("INPUT DEVICES") < text.index("SERIAL PORTS") < text.index("USB DEVICES")
    assert "→ AUTO: auto-detected: known scanner vendor Honeywell" in text
    assert f"by-id: {HONEYWELL_BY_ID}" in text
    assert "skip: keyboard (vendor 046d" in text
    assert "as scanner 'usb-Honeywell_Imaging___Mobility_1900_19045B3A42-event-kbd', grab=yes, layout=us" in text
    assert render([]).count("(none)") == 4


WINDOW = cfg({"name": "window-3", "transport": "evdev", "usb": "0c2e:0b61", "layout": "de"},
             {"name": "serial-1", "transport": "serial", "path": "/dev/ttyS0"},
             {"name": "fixed", "transport": "evdev", "path": "/dev/input/event42"})


@pytest.mark.parametrize(
    ("config", "arg", "expected"),
    [
        (Config(), None, ("/dev/input/event5", "usb-Honeywell_Imaging___Mobility_1900_19045B3A42-event-kbd")),
        (Config(), HONEYWELL_BY_ID, ("/dev/input/event5", "usb-Honeywell_Imaging___Mobility_1900_19045B3A42-event-kbd")),
        # A technician may test a human keyboard explicitly.
        (Config(), "/dev/input/event3", ("/dev/input/event3", "usb-Logitech_USB_Keyboard-event-kbd")),
        (Config(), "/dev/input/event77", ("/dev/input/event77", "event77")),
        (WINDOW, "window-3", ("/dev/input/event5", "window-3")),
        (WINDOW, None, ("/dev/input/event5", "window-3")),
        (WINDOW, "fixed", ("/dev/input/event42", "fixed")),
    ],
)
def test_resolve_device(config: Config, arg: str | None, expected: tuple[str, str]) -> None:
    result = resolve_device(config, arg, DESCS)
    assert not isinstance(result, str), result
    path, scanner = result
    assert (path, scanner.name) == expected
    assert isinstance(scanner, ScannerConfig)


def test_resolve_uses_the_entry_settings() -> None:
    result = resolve_device(WINDOW, "window-3", DESCS)
    assert not isinstance(result, str) and result[1].layout == "de"


@pytest.mark.parametrize(
    ("config", "arg", "descs", "message"),
    [
        (Config(), None, [BUILTIN], "no scanner found"),
        (Config(), None, DESCS + [HONEYWELL.__class__("input", "/dev/input/event9", "Barcode Scanner", "", "", "usb", (), True)],
         "several scanners present"),
        (WINDOW, "serial-1", DESCS, "transport 'serial'"),
        (WINDOW, "window-3", [BUILTIN], "not plugged in"),
        (WINDOW, "nothing", DESCS, "neither a device path nor a [[scanner]] name"),
        (Config(), "/dev/ttyACM0", DESCS, "is a serial port"),
    ],
)
def test_resolve_errors(config: Config, arg: str | None, descs: list, message: str) -> None:  # type: ignore[type-arg]
    result = resolve_device(config, arg, descs)
    assert isinstance(result, str) and message in result
