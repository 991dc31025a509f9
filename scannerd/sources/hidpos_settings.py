"""The [[scanner]] keys only transport "hidpos" has, parsed and validated (no pyusb import here:
config loads this for every file, pyusb only loads when a HID-POS scanner is opened)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

BACKENDS = ("hidraw", "pyusb")


@dataclass(frozen=True, slots=True)
class HidPosSettings:
    backend: str = "hidraw"  # hidraw | pyusb
    serial: str = ""  # USB serial number, for identical scanners at one PC
    port_path: str = ""  # USB port as sysfs names it ("1-1.4"), for identical scanners without serial
    beep_on_reject: bool = False  # the host decides the beep: good on a code, error on a reject

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> HidPosSettings:
        return cls(**{k: v for k, v in settings.items() if k in ("backend", "serial", "port_path", "beep_on_reject")})


def parse_settings(t: Any) -> Mapping[str, Any]:
    """config._Table of one [[scanner]] → ScannerConfig.settings for hidpos."""
    backend = t.choice("backend", BACKENDS, "hidraw")
    settings = HidPosSettings(
        backend=backend,
        serial=t.get("serial", str, ""),
        port_path=t.check("port_path", t.get("port_path", str, ""), r"\d+-\d+(\.\d+)*",
                          'a USB port path as in /sys/bus/usb/devices, e.g. "1-1.4"'),
        beep_on_reject=t.get("beep_on_reject", bool, False),
    )
    if backend == "pyusb" and not t.data.get("usb"):
        raise t.err("usb", 'expected the USB id "vid:pid" (backend = "pyusb" finds the device by it)')
    return asdict(settings)
