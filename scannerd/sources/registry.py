"""The transport registry: every way scannerd reads a scanner, in one table.

A transport is a name (the `transport = "…"` of a [[scanner]] entry), a description for
humans, the udev subsystems its device nodes live in (discovery listens to exactly these), the
[[scanner]] keys only it understands (declared here, parsed by config like every other key), and
where its Source class lives. Adding a transport is one entry here plus its module; config, the
daemon and discovery ask this table instead of spelling transport names themselves.

This module is data: it imports neither config nor any source, so every room can consult it.
A source module is imported only when a scanner of its kind is opened (pyserial, python-evdev
and pyusb load only when needed).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    """A [[scanner]] key only one transport understands."""

    name: str
    default: str | bool | int
    choices: tuple[str, ...] = ()  # for a string: the values it may take (empty: any string)
    doc: str = ""
    # For a string: a regular expression a non-empty value must match in full; `doc` then says
    # what was expected in the config error.
    pattern: str = ""


@dataclass(frozen=True, slots=True)
class Transport:
    name: str
    description: str
    udev_subsystems: tuple[str, ...]
    # "package.module:Class": a Source subclass taking a sources.base.SourceRequest.
    source: str
    settings: tuple[Setting, ...] = ()
    # A source of this kind reopens a configured path itself (serial ports); the others end on
    # unplug and discovery starts them again.
    polls_own_path: bool = False

    def source_class(self) -> Any:
        module, _, name = self.source.partition(":")
        return getattr(importlib.import_module(module), name)


_TRANSPORTS: dict[str, Transport] = {}


def register(transport: Transport) -> None:
    if transport.name in _TRANSPORTS:
        raise ValueError(f"transport {transport.name!r} is already registered")
    _TRANSPORTS[transport.name] = transport


def get(name: str) -> Transport:
    try:
        return _TRANSPORTS[name]
    except KeyError:
        raise KeyError(f"unknown transport {name!r}; known: {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    return tuple(_TRANSPORTS)


def udev_subsystems() -> tuple[str, ...]:
    """Every udev subsystem some transport reads, in registration order, each once."""
    seen: dict[str, None] = {}
    for t in _TRANSPORTS.values():
        for s in t.udev_subsystems:
            seen.setdefault(s, None)
    return tuple(seen)


def for_subsystem(subsystem: str) -> Transport | None:
    """The transport that reads device nodes of a udev subsystem (first registered wins)."""
    return next((t for t in _TRANSPORTS.values() if subsystem in t.udev_subsystems), None)


# --- the built-in transports ------------------------------------------------------------------

register(Transport(
    name="serial",
    description="RS-232, USB-CDC (ttyACM) and USB-serial (ttyUSB) ports through pyserial",
    udev_subsystems=("tty",),
    source="scannerd.sources.serial:SerialSource",
    polls_own_path=True,
))
register(Transport(
    name="evdev",
    description="USB keyboard-wedge scanners through the kernel input layer (python-evdev), grabbed",
    udev_subsystems=("input",),
    source="scannerd.sources.evdev_wedge:EvdevWedgeSource",
))
register(Transport(
    name="hidpos",
    description="USB HID-POS scanners (usage page 0x008C) through hidraw, or libusb (pyusb) with backend = \"pyusb\"",
    udev_subsystems=("hidraw", "usb"),
    source="scannerd.sources.hidpos:HidPosSource",
    settings=(
        Setting("backend", "hidraw", ("hidraw", "pyusb"), "read through the kernel's hidraw node, or libusb"),
        Setting("serial", "", doc="USB serial number, to tell identical scanners at one PC apart"),
        Setting("port_path", "", doc='a USB port path as in /sys/bus/usb/devices, e.g. "1-1.4"',
                pattern=r"\d+-\d+(\.\d+)*"),
        Setting("beep_on_reject", False, doc="the host decides the beep: good for a code, error for a reject"),
    ),
))
