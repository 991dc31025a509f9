"""The [[scanner]] settings of transport "hidpos", as config parsed them from the registry's
declaration (sources/registry.py), in one typed place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
