"""`scannerd test [DEVICE]`: open a scanner and show each scan live, with advice.

Runs the daemon's own source (EvdevWedgeSource for keyboard-wedge scanners, SerialSource for
serial ports and ptys: same grab or exclusive lock, keymap or decoder, framer), so what a
technician sees is what the daemon will do. For each scan: the text (masked unless --show), its
classification, scan duration, characters per second, the largest inter-key gap, and warnings a
technician can act on (CapsLock, keystroke delay, missing terminator, a keyboard country that does
not match `layout`, NumLock, Alt codes). At the end: what the scanner actually sends (terminator,
AIM prefix, keystroke delay, layout or encoding) and the [[scanner]] lines to paste. Stop with
Ctrl-C, --count or --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..config import BAUDRATES, LAYOUTS, Config, ScannerConfig
from ..framing import FramingSpec
from ..i18n import _
from ..model import DeviceInfo, DeviceStateEvent, Frame, Rejected, mask
from ..sources.base import FramedInput, FrameSink
from ..sources.evdev_wedge import (
    EvdevLike,
    EvdevWedgeSource,
    effective_grab,
    open_input_device,
)
from ..sources.human import diagnose, max_gap_ms, suggest_layout
from ..sources.keymap import EV_KEY, decode_keys, get_layout
from ..sources.observed import Observation
from ..sources.serial import SerialSource
from ._common import add_config_option, config_or_exit_code, udev_descriptions


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("test", help="open a scanner (keyboard-wedge or serial) and show each scan live, with advice",
                       description="Open a scanner (grabbed or exclusively locked) and show each scan: text (masked "
                                   "unless --show), classification, timing and warnings; then what the scanner sends "
                                   "and the [[scanner]] lines to paste. Stop with Ctrl-C.")
    p.add_argument("device", nargs="?", help="device path (/dev/input/event5, /dev/ttyACM0, a by-id link, a pty) or "
                                             "[[scanner]] name; default: the only scanner present")
    add_config_option(p)
    p.add_argument("--serial", action="store_true", help="the device is a serial port (found by itself for tty paths)")
    p.add_argument("--baudrate", type=int, choices=BAUDRATES, help="serial speed (default: the entry's, else 9600)")
    p.add_argument("--no-grab", action="store_true", help="do not grab: the scan is also typed into the focused window")
    p.add_argument("--layout", choices=LAYOUTS, help="keyboard layout (default: the scanner entry's, else us)")
    p.add_argument("--show", action="store_true", help="print codes in full (payment codes are bearer tokens: careful)")
    p.add_argument("--count", type=int, default=0, help="stop after this many scans")
    p.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_or_exit_code(args)
    if isinstance(config, int):
        return config
    from ..sources.discovery import resolve_device

    transport = transport_of(config, args.device, serial=args.serial)
    resolved = resolve_device(config, args.device, udev_descriptions(), transport=transport)
    if isinstance(resolved, str):
        print(_("error: {message}").format(message=resolved), file=sys.stderr)
        return 2
    path, scanner = resolved
    if transport == "serial":
        scanner = replace(scanner, transport="serial", path=path, baudrate=args.baudrate or scanner.baudrate)
        return asyncio.run(_test_serial(config, scanner, args))
    scanner = replace(scanner, transport="evdev", path=path, grab=scanner.grab and not args.no_grab,
                      layout=args.layout or scanner.layout)
    return asyncio.run(_test(config, scanner, args))


def transport_of(config: Config, device: str | None, *, serial: bool = False) -> str:
    """serial or evdev: asked for, the [[scanner]] entry's, or what the path is."""
    if serial:
        return "serial"
    entry = next((s for s in config.scanners if s.name == device), None)
    if entry is not None:
        return entry.transport
    if device is None or not device.startswith("/"):
        return "evdev"
    return "serial" if is_serial_port(device) else "evdev"


def is_serial_port(path: str) -> bool:
    """A tty (serial port, USB-CDC, pty), not an input event device: EVIOCGRAB on a tty fails
    with "Inappropriate ioctl for device", so tell them apart before opening for real."""
    real = os.path.realpath(path)
    if real.startswith("/dev/input/"):
        return False
    name = os.path.basename(real)
    if name.startswith("tty") or real.startswith("/dev/pts/"):
        return True
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


class _Tester:
    """Collects what one scan needs for its report: the frame, the raw key events behind it (evdev),
    and what the scanner sends over the whole session."""

    def __init__(self, config: Config, scanner: ScannerConfig, show: bool) -> None:
        self.config = config
        self.scanner = scanner
        self.show = show
        self.keys: list[tuple[int, int]] = []
        self.count = 0
        self.classifier = config.classifier()  # validated when the config was read
        self.decoder_notes: Callable[[], set[str]] = set
        self.present = False  # the device is open now
        self.opened = False  # it was open at some point: there is something to report
        self.done = asyncio.Event()
        self.limit = 0
        self.observed = Observation(scanner.idle_gap_ms * 1_000_000, scanner.encoding)
        self.layout_hint: str | None = None  # a layout under which the keys read as a code

    def channel_of(self, text: str, symbology: str | None) -> tuple[str | None, str]:
        c = self.classifier.classify(text, symbology)
        label = _("{channel}/{kind} (rule {rule})").format(channel=c.channel, kind=c.kind, rule=c.rule)
        if c.reject_reason:
            label += _(" REJECTED: {reason}").format(reason=c.reject_reason)
        return c.channel, label

    def on_item(self, item: Frame | Rejected) -> None:
        notes = self.decoder_notes()
        keys, self.keys = self.keys, []
        self.count += 1
        if self.limit and self.count >= self.limit:
            self.done.set()  # the report below still prints: done is only awaited afterwards
        shown = item.text if self.show else mask(item.text)
        if isinstance(item, Rejected):
            print(_("#{n} reject: {reason}  {shown}").format(n=self.count, reason=item.reason, shown=repr(shown)))
            for note in sorted(notes):
                print(_("   note: {note}").format(note=note))
            if item.reason == "no_terminator":
                print(_("   ! no terminator: the read ended on the {gap} ms idle gap without {terminator}; program that "
                        "suffix on the scanner, or set terminator = \"auto\"").format(gap=self.scanner.idle_gap_ms,
                                                                                  terminator=self.scanner.terminator))
            return
        channel, label = self.channel_of(item.text, item.symbology)
        upper = self.channel_of(item.text.upper(), item.symbology)[0]
        others: dict[str, tuple[str, str | None]] = {}
        for name in LAYOUTS:
            if name != self.scanner.layout and keys:
                text = _strip_terminator(decode_keys(get_layout(name), keys))
                others[name] = (text, self.channel_of(text, item.symbology)[0])
        if channel in (None, "unknown") and others:
            hint = suggest_layout(item.text, self.scanner.layout, others)
            self.layout_hint = hint[0] if hint else self.layout_hint
        print(f"#{self.count} {label or _('scan')}  {shown!r}{'  [' + item.symbology + ']' if item.symbology else ''}")
        print("   " + timing_line(item))
        warnings = diagnose(item, channel=channel, upper_channel=upper, notes=notes, idle_gap_ms=self.scanner.idle_gap_ms,
                            layout=self.scanner.layout, other_layouts=others, shared_keyboard=self.scanner.shared_keyboard,
                            max_median_gap_ms=self.scanner.human_max_median_gap_ms, min_chars=self.scanner.human_min_chars)
        for w in warnings:
            # Layout hints quote the re-decoded text: mask it like the code itself.
            print(f"   ! {w if self.show else _mask_quoted(w, others)}")

    def on_state(self, ev: DeviceStateEvent) -> None:
        self.present = ev.state == "present"
        self.opened = self.opened or self.present
        if self.present:
            if self.scanner.transport == "serial":
                s = self.scanner
                how = _("{line}, {encoding}, locked").format(line=f"{s.baudrate} {s.bytesize}{s.parity}{s.stopbits:g}", encoding=s.encoding)
            else:
                grab = _("grabbed") if effective_grab(self.scanner) else _("NOT grabbed (scans also reach the focused window)")
                how = _("{grab}, layout {layout}").format(grab=grab, layout=self.scanner.layout)
            print(_("{path}: open, {how}; scan a code (Ctrl-C to stop)").format(path=self.scanner.path, how=how), flush=True)
        else:
            print(f"{self.scanner.path}: {ev.state} {ev.reason}".rstrip())
            if "busy" in ev.reason.lower() or "lock" in ev.reason.lower():
                if self.scanner.transport == "evdev":
                    print(_("   ! another program holds the device: is the scannerd service running? Stop it for the "
                            "test, or use --no-grab to watch alongside it"))
                else:
                    print(_("   ! another program holds the device: is the scannerd service running? Stop it for the test"))

    def report(self) -> None:
        """What the scanner sent over the session, and the entry to paste."""
        self.observed.finish()
        layout = self.layout_hint or self.scanner.layout if self.scanner.transport == "evdev" else None
        print(_("what this scanner sends:"))
        for line in self.observed.summary(self.scanner.transport, layout):
            print(f"  {line}")
        if self.observed.reads:
            print(_("paste into the config (/etc/scannerd/config.toml):"))
            for line in self.observed.scanner_lines(self.scanner, layout):
                print(f"  {line}")


class _TapInput(FramedInput):
    """The source's framed input, showing each read to the tester's Observation first."""

    def __init__(self, device: str, spec: FramingSpec, emit: FrameSink, observed: Observation, *,
                 encoding: str | None = None) -> None:
        super().__init__(device, spec, emit, encoding=encoding)
        self.observed = observed

    def push(self, chars: str, t_ns: int) -> None:
        self.observed.feed(chars, [t_ns] * len(chars))
        super().push(chars, t_ns)

    def push_char(self, ch: str, t_ns: int) -> None:
        self.observed.feed(ch, [t_ns])
        super().push_char(ch, t_ns)

    def push_timed(self, chars: str, times: Sequence[int]) -> None:
        self.observed.feed(chars, times)
        super().push_timed(chars, times)

    def push_bytes(self, data: bytes, t_ns: int, *, continues: bool = False) -> None:
        self.observed.feed_bytes(data, t_ns)
        super().push_bytes(data, t_ns, continues=continues)


def timing_line(frame: Frame) -> str:
    n = len(frame.gaps_ns) + 1
    seconds = (frame.last_ns - frame.first_ns) / 1e9
    rate = _("{rate:.0f} chars/s").format(rate=(n - 1) / seconds) if seconds > 0 else _("- chars/s")
    worst = max_gap_ms(frame.gaps_ns)
    gap = _("max gap {ms:.1f} ms").format(ms=worst) if worst is not None else _("max gap -")
    return _("{n} chars, {ms:.1f} ms, {rate}, {gap}, ended by {ended_by}").format(
        n=len(frame.text), ms=frame.scan_ms, rate=rate, gap=gap, ended_by=frame.ended_by)


def _strip_terminator(text: str) -> str:
    return text.rstrip("\r\n\t")


def _mask_quoted(warning: str, others: dict[str, tuple[str, str | None]]) -> str:
    for text, _channel in others.values():
        if text and repr(text) in warning:
            warning = warning.replace(repr(text), repr(mask(text)))
    return warning


async def _test(config: Config, scanner: ScannerConfig, args: argparse.Namespace,
                opener: Callable[[str], EvdevLike] = open_input_device) -> int:
    from ..service import framing_spec

    t = _Tester(config, scanner, args.show)
    t.limit = args.count
    spec = framing_spec(scanner)
    device = DeviceInfo(scanner.name, "evdev", config.scanner_area(scanner), scanner.role, scanner.path)

    class TapSource(EvdevWedgeSource):
        def feed_events(self, events: Iterable[tuple[int, int, int, int]]) -> None:
            # One event at a time, so each scan's report gets exactly the keys typed for it.
            for etype, code, value, t_ns in events:
                if etype == EV_KEY:
                    t.keys.append((code, value))
                super().feed_events(((etype, code, value, t_ns),))

    # Show human bursts of a shared keyboard too (diagnose says "would NOT be emitted") rather
    # than hiding them: the source gets the filter off, with the grab the real one would have.
    unfiltered = replace(scanner, shared_keyboard=False, grab=effective_grab(scanner))
    source = TapSource(device, spec, t.on_item, t.on_state, unfiltered, opener=opener)
    source.input = _TapInput(device.name, spec, t.on_item, t.observed)
    t.decoder_notes = source.decoder.take_notes
    return await _watch(t, source.run(), args)


async def _test_serial(config: Config, scanner: ScannerConfig, args: argparse.Namespace) -> int:
    """The daemon's SerialSource on the port (or pty), opened once: no waiting for a replug."""
    from ..service import framing_spec

    t = _Tester(config, scanner, args.show)
    t.limit = args.count
    spec = framing_spec(scanner)
    device = DeviceInfo(scanner.name, "serial", config.scanner_area(scanner), scanner.role, scanner.path)
    source = SerialSource(device, spec, t.on_item, t.on_state, scanner, reopen=False)
    source.input = _TapInput(device.name, spec, t.on_item, t.observed, encoding=scanner.encoding)
    return await _watch(t, source.run(), args)


async def _watch(t: _Tester, run: Coroutine[Any, Any, None], args: argparse.Namespace) -> int:
    """Run a source until Ctrl-C/SIGTERM, --count reads, --timeout, or the device goes away."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(run)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, t.done.set)
    waiter = loop.create_task(t.done.wait())
    await asyncio.wait({task, waiter}, timeout=args.timeout or None, return_when=asyncio.FIRST_COMPLETED)
    if t.limit and t.count >= t.limit and not task.done():
        # The last frame ended at its first terminator character: let the rest of the suffix
        # (the LF of a CRLF) arrive, so the report names the terminator the scanner really sends.
        await asyncio.wait({task}, timeout=t.scanner.idle_gap_ms / 1000)
    ended_by_itself = task.done()
    task.cancel()
    waiter.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(_("{n} read(s)").format(n=t.count))
    if t.opened:
        t.report()
    if ended_by_itself and not t.present:
        return 1  # could not open/grab, or unplugged
    return 0
