"""`scannerd test [DEVICE]`: open a keyboard-wedge scanner and show each scan live, with advice.

Runs the daemon's own EvdevWedgeSource (same grab, keymap, framer, shared-keyboard filter), so
what a technician sees is what the daemon will do. For each scan: the text (masked unless
--show), its classification, scan duration, characters per second, the largest inter-key gap,
and warnings a technician can act on (CapsLock, keystroke delay, missing terminator, a keyboard
country that does not match `layout`, NumLock, Alt codes). Stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..config import LAYOUTS, Config, ScannerConfig
from ..model import DeviceInfo, DeviceStateEvent, Frame, Rejected, mask
from ..sources.evdev_wedge import (
    EvdevLike,
    EvdevWedgeSource,
    effective_grab,
    open_input_device,
)
from ..sources.human import diagnose, max_gap_ms
from ..sources.keymap import EV_KEY, decode_keys, get_layout
from ._common import add_config_option, resolve_or_exit_code


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("test", help="open a keyboard-wedge scanner and show each scan live, with advice",
                       description="Open a scanner (grabbed by default) and show each scan: text (masked unless --show), "
                                   "classification, timing and warnings. Stop with Ctrl-C.")
    p.add_argument("device", nargs="?", help="device path (/dev/input/event5, a by-id link) or [[scanner]] name; "
                                             "default: the only scanner present")
    add_config_option(p)
    p.add_argument("--no-grab", action="store_true", help="do not grab: the scan is also typed into the focused window")
    p.add_argument("--layout", choices=LAYOUTS, help="keyboard layout (default: the scanner entry's, else us)")
    p.add_argument("--show", action="store_true", help="print codes in full (payment codes are bearer tokens: careful)")
    p.add_argument("--count", type=int, default=0, help="stop after this many scans")
    p.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    resolved = resolve_or_exit_code(args)
    if isinstance(resolved, int):
        return resolved
    config, _descs, path, scanner = resolved
    scanner = replace(scanner, transport="evdev", path=path, grab=scanner.grab and not args.no_grab,
                      layout=args.layout or scanner.layout)
    return asyncio.run(_test(config, scanner, args))


class _Tester:
    """Collects what one scan needs for its report: the frame and the raw key events behind it."""

    def __init__(self, config: Config, scanner: ScannerConfig, show: bool) -> None:
        self.config = config
        self.scanner = scanner
        self.show = show
        self.keys: list[tuple[int, int]] = []
        self.count = 0
        self.classifier = config.classifier()  # validated when the config was read
        self.source: EvdevWedgeSource | None = None
        self.done = asyncio.Event()
        self.limit = 0

    def channel_of(self, text: str, symbology: str | None) -> tuple[str | None, str]:
        c = self.classifier.classify(text, symbology)
        return c.channel, f"{c.channel}/{c.kind} (rule {c.rule})" + (f" REJECTED: {c.reject_reason}" if c.reject_reason else "")

    def on_item(self, item: Frame | Rejected) -> None:
        assert self.source is not None
        notes = self.source.decoder.take_notes()
        keys, self.keys = self.keys, []
        self.count += 1
        if self.limit and self.count >= self.limit:
            self.done.set()  # the report below still prints: done is only awaited afterwards
        shown = item.text if self.show else mask(item.text)
        if isinstance(item, Rejected):
            print(f"#{self.count} reject: {item.reason}  {shown!r}")
            for note in sorted(notes):
                print(f"   note: {note}")
            if item.reason == "no_terminator":
                print(f"   ! no terminator: the read ended on the {self.scanner.idle_gap_ms} ms idle gap without "
                      f"{self.scanner.terminator}; program a CR suffix on the scanner, or set terminator = \"none\"")
            return
        channel, label = self.channel_of(item.text, item.symbology)
        upper, _ = self.channel_of(item.text.upper(), item.symbology)
        others: dict[str, tuple[str, str | None]] = {}
        for name in LAYOUTS:
            if name != self.scanner.layout and keys:
                text = _strip_terminator(decode_keys(get_layout(name), keys))
                others[name] = (text, self.channel_of(text, item.symbology)[0])
        print(f"#{self.count} {label or 'scan'}  {shown!r}{'  [' + item.symbology + ']' if item.symbology else ''}")
        print("   " + timing_line(item))
        warnings = diagnose(item, channel=channel, upper_channel=upper, notes=notes, idle_gap_ms=self.scanner.idle_gap_ms,
                            layout=self.scanner.layout, other_layouts=others, shared_keyboard=self.scanner.shared_keyboard,
                            max_median_gap_ms=self.scanner.human_max_median_gap_ms, min_chars=self.scanner.human_min_chars)
        for w in warnings:
            # Layout hints quote the re-decoded text: mask it like the code itself.
            print(f"   ! {w if self.show else _mask_quoted(w, others)}")

    def on_state(self, ev: DeviceStateEvent) -> None:
        if ev.state == "present":
            grab = "grabbed" if effective_grab(self.scanner) else "NOT grabbed (scans also reach the focused window)"
            print(f"{self.scanner.path}: open, {grab}, layout {self.scanner.layout}; scan a code (Ctrl-C to stop)")
        else:
            print(f"{self.scanner.path}: {ev.state} {ev.reason}".rstrip())
            if "busy" in ev.reason.lower():
                print("   ! another program holds the grab: is the scannerd service running? "
                      "Stop it for the test, or use --no-grab to watch alongside it")


def timing_line(frame: Frame) -> str:
    n = len(frame.gaps_ns) + 1
    seconds = (frame.last_ns - frame.first_ns) / 1e9
    rate = f"{(n - 1) / seconds:.0f} chars/s" if seconds > 0 else "- chars/s"
    worst = max_gap_ms(frame.gaps_ns)
    gap = f"max gap {worst:.1f} ms" if worst is not None else "max gap -"
    return f"{len(frame.text)} chars, {frame.scan_ms:.1f} ms, {rate}, {gap}, ended by {frame.ended_by}"


def _strip_terminator(text: str) -> str:
    return text.rstrip("\r\n\t")


def _mask_quoted(warning: str, others: dict[str, tuple[str, str | None]]) -> str:
    for text, _ in others.values():
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
    t.source = source
    loop = asyncio.get_running_loop()
    task = loop.create_task(source.run())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, t.done.set)
    waiter = loop.create_task(t.done.wait())
    await asyncio.wait({task, waiter}, timeout=args.timeout or None, return_when=asyncio.FIRST_COMPLETED)
    ended_by_itself = task.done()
    task.cancel()
    waiter.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(f"{t.count} read(s)")
    if ended_by_itself and not source.present:
        return 1  # could not open/grab, or unplugged
    return 0

