"""Keyboard-wedge scanners through evdev: a pure event decoder and a thin python-evdev adapter.

EventDecoder (pure, shared with `scannerd replay` and `scannerd test`) turns raw input events
into typed characters with their times, using keymap.step and one KeyState per device. It also
applies the kernel's SYN_DROPPED rule: when the kernel's buffer overflowed, the partial read is
aborted ("events_dropped"), events up to the next SYN_REPORT are discarded, held modifiers are
forgotten, and the rest of the interrupted burst is skipped (it would be a fragment of a code).

EvdevWedgeSource is the only code that touches a device: open, grab (EVIOCGRAB), ask for
CLOCK_MONOTONIC timestamps (EVIOCSCLOCKID), register the fd with loop.add_reader, read batches
with InputDevice.read(), and release everything on the way out. A device object needs just
fileno(), read(), grab(), ungrab(), close(): the methods python-evdev's InputDevice has, so
tests drive it with a fake over a real pipe and the VM rig with the real thing.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import ScannerConfig
from ..framing import FramingSpec
from ..model import DeviceInfo
from .base import FrameSink, Source, SourceRequest, StateSink
from .human import HumanFilter
from .keymap import (
    EV_KEY,
    EV_SYN,
    KEY_PRESS,
    KEYPAD_DIGITS,
    SYN_DROPPED,
    SYN_REPORT,
    UNDECODABLE,
    KeyState,
    Layout,
    get_layout,
    step,
)

# _IOW('E', 0xa0, int): choose the clock of event timestamps (Linux ≥ 3.4).
EVIOCSCLOCKID = 0x400445A0
CLOCK_MONOTONIC = 1


# --- pure decoding ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Typed:
    """A character typed at t_ns (monotonic ns, or recording time in replay)."""

    ch: str
    t_ns: int


@dataclass(frozen=True, slots=True)
class Abort:
    """The partial read must be dropped: the reason becomes the reject's reason."""

    reason: str
    t_ns: int


class EventDecoder:
    """Raw (type, code, value, t_ns) events of one device → Typed / Abort, plus diagnostic notes."""

    def __init__(self, layout: Layout, *, alt_numpad: bool = False, idle_gap_ns: int = 50_000_000) -> None:
        self.layout = layout
        self.state = KeyState(alt_numpad=alt_numpad)
        self.idle_gap_ns = idle_gap_ns
        self._in_drop = False  # between SYN_DROPPED and the next SYN_REPORT
        self._skip_burst = False  # the rest of a burst cut by SYN_DROPPED
        self._last_press_ns: int | None = None
        # Things a technician can act on, collected until take_notes() (see scannerd test).
        self.notes: set[str] = set()

    def feed(self, etype: int, code: int, value: int, t_ns: int) -> list[Typed | Abort]:
        if etype == EV_SYN:
            if code == SYN_DROPPED:
                self._in_drop = True
                self._skip_burst = True
                self._last_press_ns = t_ns  # the burst is measured from the overflow on
                self.state = self.state.reset()
                self.notes.add("events_dropped")
                return [Abort("events_dropped", t_ns)]
            if code == SYN_REPORT:
                self._in_drop = False
            return []
        if self._in_drop or etype != EV_KEY:
            return []  # EV_MSC scan codes, EV_LED, EV_REP: nothing typed
        if value == KEY_PRESS:
            self._note_key(code)
        self.state, text = step(self.layout, self.state, code, value)
        if not text:
            return []
        if self._skip_burst:
            gap_over = self._last_press_ns is None or t_ns - self._last_press_ns > self.idle_gap_ns
            if not gap_over:
                self._last_press_ns = t_ns
                if text in ("\r", "\n", "\t"):
                    self._skip_burst = False  # the cut scan's terminator: the burst is over
                return []
            self._skip_burst = False
        self._last_press_ns = t_ns
        if UNDECODABLE in text and not (code in KEYPAD_DIGITS and self.state.lalt):  # Alt codes: noted above
            self.notes.add(f"undecodable_key:{code}")
        return [Typed(ch, t_ns) for ch in text]

    def _note_key(self, code: int) -> None:
        if code in KEYPAD_DIGITS:
            self.notes.add("keypad_digits")
            if not self.state.numlock:
                self.notes.add("numlock_off")
            if self.state.lalt and not self.state.alt_numpad:
                self.notes.add("alt_code_without_alt_numpad")
        if self.state.caps:
            self.notes.add("capslock_on")

    def take_notes(self) -> set[str]:
        notes, self.notes = self.notes, set()
        return notes


def decode_events(layout: Layout, events: Iterable[tuple[int, int, int, int]], *, alt_numpad: bool = False,
                  idle_gap_ns: int = 50_000_000) -> list[Typed | Abort]:
    """Decode a whole stream of (type, code, value, t_ns): what replay and fixtures use."""
    decoder = EventDecoder(layout, alt_numpad=alt_numpad, idle_gap_ns=idle_gap_ns)
    out: list[Typed | Abort] = []
    for etype, code, value, t_ns in events:
        out.extend(decoder.feed(etype, code, value, t_ns))
    return out


def map_kernel_time(t_ns: int, mono_now: int, real_now: int) -> int:
    """Put a kernel event time on the time.monotonic_ns() clock.

    Event times are CLOCK_REALTIME unless EVIOCSCLOCKID switched the device to
    CLOCK_MONOTONIC (which may fail, e.g. on an old kernel): take whichever clock the stamp is
    nearer to. An event cannot be from the future, so the result is clamped to now.
    """
    if abs(t_ns - mono_now) <= abs(t_ns - real_now):
        mapped = t_ns
    else:
        mapped = t_ns - (real_now - mono_now)
    return min(mapped, mono_now)


# --- the python-evdev adapter -----------------------------------------------------------------

class EvdevLike(Protocol):
    """What we use of evdev.InputDevice."""

    def fileno(self) -> int: ...
    def read(self) -> Iterable[Any]: ...  # objects with sec, usec, type, code, value
    def grab(self) -> None: ...
    def ungrab(self) -> None: ...
    def close(self) -> None: ...


def open_input_device(path: str) -> EvdevLike:
    import evdev  # imported here so pure users (replay, tests) never need the C extension

    return evdev.InputDevice(path)


def effective_grab(scanner: ScannerConfig) -> bool:
    """A shared keyboard is never grabbed: grabbing it would take the cashier's keyboard away."""
    return scanner.grab and not scanner.shared_keyboard


def set_monotonic_clock(fd: int) -> bool:
    try:
        fcntl.ioctl(fd, EVIOCSCLOCKID, struct.pack("i", CLOCK_MONOTONIC))
        return True
    except OSError:
        return False


class EvdevWedgeSource(Source):
    """One keyboard-wedge scanner: lasts until cancelled or the device disappears."""

    def __init__(self, device: DeviceInfo, spec: FramingSpec, emit: FrameSink, state: StateSink,
                 scanner: ScannerConfig, *, opener: Callable[[str], EvdevLike] = open_input_device) -> None:
        self.human: HumanFilter | None = None
        if scanner.shared_keyboard:
            self.human = HumanFilter(emit, scanner.human_max_median_gap_ms, scanner.human_min_chars)
            emit = self.human
        super().__init__(device, spec, emit, state)
        self.scanner = scanner
        self.decoder = EventDecoder(get_layout(scanner.layout), alt_numpad=scanner.alt_numpad,
                                    idle_gap_ns=spec.idle_gap_ns)
        self._opener = opener
        self._last_t = 0

    @classmethod
    def from_request(cls, req: SourceRequest) -> EvdevWedgeSource:
        return cls(req.device, req.spec, req.emit, req.state, req.scanner)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            dev = self._opener(self.device.path)
        except OSError as e:
            self.set_state("absent" if e.errno in (errno.ENOENT, errno.ENODEV) else "error",
                           f"cannot open {self.device.path}: {e.strerror or e}")
            return
        grabbed = False
        fd = dev.fileno()
        try:
            if effective_grab(self.scanner):
                try:
                    dev.grab()
                    grabbed = True
                except OSError as e:
                    # EBUSY: another program holds it. Reading ungrabbed would let the code
                    # also be typed into whatever window has focus: refuse instead.
                    self.set_state("error", f"cannot grab {self.device.path}: {e.strerror or e}")
                    return
            set_monotonic_clock(fd)
            self.set_state("present")
            gone: asyncio.Future[str] = loop.create_future()
            loop.add_reader(fd, self._on_readable, dev, gone)
            try:
                reason = await gone
            finally:
                loop.remove_reader(fd)
            removed = reason in ("device_removed", "eof")
            self.input.abort("device_removed" if removed else "read_error")
            self.set_state("absent" if removed else "error", reason)
        finally:
            self.input.close()
            if grabbed:
                try:
                    dev.ungrab()
                except OSError:
                    pass  # already gone: the kernel released the grab with the device
            try:
                dev.close()
            except OSError:
                pass

    def _on_readable(self, dev: EvdevLike, gone: asyncio.Future[str]) -> None:
        try:
            events = list(dev.read())
        except BlockingIOError:
            return
        except OSError as e:
            if not gone.done():
                gone.set_result("device_removed" if e.errno == errno.ENODEV else f"read failed: {e.strerror or e}")
            return
        if not events:  # end of stream: only a fake or a replay pipe does this, never evdev
            if not gone.done():
                gone.set_result("eof")
            return
        mono, real = time.monotonic_ns(), time.time_ns()
        batch: list[tuple[int, int, int, int]] = []
        for ev in events:
            t = map_kernel_time(ev.sec * 1_000_000_000 + ev.usec * 1000, mono, real)
            # Keep per-device time non-decreasing: the framer's gaps must never be negative.
            t = self._last_t = max(t, self._last_t)
            batch.append((ev.type, ev.code, ev.value, t))
        self.feed_events(batch)

    def feed_events(self, events: Iterable[tuple[int, int, int, int]]) -> None:
        """Decode a batch of (type, code, value, t_ns) events (one read), then frame it at once."""
        chars: list[str] = []
        times: list[int] = []
        for etype, code, value, t_ns in events:
            for item in self.decoder.feed(etype, code, value, t_ns):
                if isinstance(item, Abort):
                    if chars:  # what came before the overflow is framed first, in order
                        self.input.push_timed("".join(chars), times)
                        chars, times = [], []
                    self.input.abort(item.reason)
                else:
                    chars.append(item.ch)
                    times.append(item.t_ns)
        if chars:
            self.input.push_timed("".join(chars), times)

    def feed(self, etype: int, code: int, value: int, t_ns: int) -> None:
        """One event (tests, `scannerd test`)."""
        self.feed_events(((etype, code, value, t_ns),))


__all__ = ["Abort", "EvdevWedgeSource", "EventDecoder", "Typed", "decode_events", "effective_grab",
           "map_kernel_time", "open_input_device"]
