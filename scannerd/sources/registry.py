"""The transport registry: every way scannerd reads a scanner, in one table.

A transport is a name (the `transport = "…"` of a [[scanner]] entry), a description for
humans, the udev subsystems its device nodes live in (discovery listens to exactly these), a
parser for the [[scanner]] keys only it understands, and a factory for its Source. Adding a
transport is one entry here plus its module; config, the daemon and discovery ask this table
instead of spelling transport names themselves.

Factories import their module lazily: pyserial, python-evdev and pyusb load only when a
scanner of that kind is opened, and this module imports nothing that imports config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ScannerConfig
    from ..control.channel import ControlChannel
    from ..framing import FramingSpec
    from ..model import DeviceInfo
    from .base import FrameSink, Source, StateSink


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """Everything a transport needs to build a source for one device."""

    device: DeviceInfo
    scanner: ScannerConfig
    spec: FramingSpec
    emit: FrameSink
    state: StateSink
    # The site configured this path: the source waits for it to come back by itself. A node
    # name discovery handed over may next belong to another device, so those are not polled.
    reopen: bool
    # A scanner with a control profile: commands out and replies in on the source's device.
    control: ControlChannel | None = None


SettingsParser = Callable[[Any], Mapping[str, Any]]  # config._Table → ScannerConfig.settings


def _no_settings(table: Any) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class Transport:
    name: str
    description: str
    udev_subsystems: tuple[str, ...]
    make_source: Callable[[SourceRequest], Source]
    parse_settings: SettingsParser = _no_settings
    # A source of this kind reopens a configured path itself (serial ports); the others end on
    # unplug and discovery starts them again.
    polls_own_path: bool = False


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


def _serial_source(req: SourceRequest) -> Source:
    from .serial import SerialSource

    return SerialSource(req.device, req.spec, req.emit, req.state, req.scanner, reopen=req.reopen, control=req.control)


def _evdev_source(req: SourceRequest) -> Source:
    from .evdev_wedge import EvdevWedgeSource

    return EvdevWedgeSource(req.device, req.spec, req.emit, req.state, req.scanner)


register(Transport(
    name="serial",
    description="RS-232, USB-CDC (ttyACM) and USB-serial (ttyUSB) ports through pyserial",
    udev_subsystems=("tty",),
    make_source=_serial_source,
    polls_own_path=True,
))
register(Transport(
    name="evdev",
    description="USB keyboard-wedge scanners through the kernel input layer (python-evdev), grabbed",
    udev_subsystems=("input",),
    make_source=_evdev_source,
))
