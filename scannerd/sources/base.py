"""What every transport shares: a per-device framer driven by the event loop's clock."""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..config import ScannerConfig
from ..framing import Framer, FramingSpec
from ..model import DeviceInfo, DeviceStateEvent, Frame, Rejected

if TYPE_CHECKING:
    from ..control.channel import ControlChannel

FrameSink = Callable[[Frame | Rejected], None]
StateSink = Callable[[DeviceStateEvent], None]


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """Everything a transport needs to build a source for one device (see sources/registry.py)."""

    device: DeviceInfo
    scanner: ScannerConfig
    spec: FramingSpec
    emit: FrameSink
    state: StateSink
    # The site configured this path: the source waits for it to come back by itself. A node
    # name discovery handed over may next belong to another device, so those are not polled.
    reopen: bool
    # A scanner with a control profile (serial): commands out, replies in, on the source's device.
    control: ControlChannel | None = None


class Framing(Protocol):
    """What the idle timer and abort need of a framer (Framer, or HID-POS's Reassembler)."""

    def deadline_ns(self) -> int | None: ...
    def flush(self, now_ns: int) -> Sequence[Frame | Rejected]: ...
    def abort(self, reason: str, now_ns: int) -> Sequence[Frame | Rejected]: ...


# How far past the idle deadline a read may find an unfired idle timer before the loop counts as
# late (its timer is due within ~1 ms when the loop runs freely).
LATE_READER_NS = 2_000_000


class FramedInput:
    """A Framer plus the idle-gap timer that flushes it; one per device, never shared.

    Sources push characters with their times (monotonic ns: arrival for serial, the kernel
    event time mapped onto the monotonic clock for evdev); complete frames go to `emit`.
    A source that frames by itself (HID-POS reports) passes its own `framing` and hands what
    it made to deliver(); abort and the idle timer then work on that.
    """

    def __init__(self, device: str, spec: FramingSpec, emit: FrameSink, *, encoding: str | None = None,
                 framing: Framing | None = None) -> None:
        self.framer = Framer(device, spec, encoding=encoding)
        self._framing: Framing = framing or self.framer
        self._emit = emit
        self._timer: asyncio.TimerHandle | None = None
        # Set by a source that can tell whether its device has input waiting (serial: FIONREAD):
        # takes that input and says whether there was any.
        self.pending_input: Callable[[], bool] | None = None

    def push(self, chars: str, t_ns: int) -> None:
        """A read of characters that arrived at t_ns, framed at once."""
        self._emit_all(self.framer.feed(chars, t_ns))

    def push_char(self, ch: str, t_ns: int) -> None:
        self._emit_all(self.framer.feed_char(ch, t_ns))

    def push_timed(self, chars: str, times: Sequence[int]) -> None:
        """A batch of typed characters with one arrival time each (a keyboard-wedge read)."""
        self._emit_all(self.framer.feed_timed(chars, times))

    def push_bytes(self, data: bytes, t_ns: int, *, continues: bool = False) -> None:
        """Raw bytes of a read (serial), decoded by the framer so a cut character is caught.
        `continues`: bytes that were waiting when the idle gap ran out (see _on_idle). A read
        that finds the idle deadline long past while its timer never ran was late itself (the
        process was not scheduled): it continues the read too, since a responsive loop would
        have run the timer on time."""
        if not continues and self._timer is not None:
            deadline = self._framing.deadline_ns()
            continues = deadline is not None and t_ns > deadline + LATE_READER_NS
        self._emit_all(self.framer.feed_bytes(data, t_ns, continues=continues))

    def deliver(self, items: Sequence[Frame | Rejected]) -> None:
        """Frames and rejects a source's own framing made (HID-POS reassembly)."""
        self._emit_all(items)

    def _emit_all(self, items: Sequence[Frame | Rejected]) -> None:
        for item in items:
            self._emit(item)
        self._arm_timer()

    def abort(self, reason: str) -> None:
        """Drop a partial frame as a reject (device removed, kernel dropped events)."""
        self._cancel_timer()
        for item in self._framing.abort(reason, time.monotonic_ns()):
            self._emit(item)

    def close(self) -> None:
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_timer(self) -> None:
        self._cancel_timer()
        deadline = self._framing.deadline_ns()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        # loop.time() is time.monotonic(): convert the framer's monotonic-ns deadline onto it.
        delay = (deadline - time.monotonic_ns()) / 1e9
        self._timer = loop.call_at(loop.time() + max(delay, 0.0) + 0.0005, self._on_idle)

    def _on_idle(self) -> None:
        self._timer = None
        # The idle gap is "nothing arrived", not "we did not look": when the process was not
        # scheduled for a while (a loaded PC), the rest of the scan may already wait in the
        # kernel. The source takes it first, as part of the read in progress.
        if self.pending_input is not None and self.pending_input():
            return
        for item in self._framing.flush(time.monotonic_ns()):
            self._emit(item)
        self._arm_timer()


class Source(abc.ABC):
    """One configured or discovered device. `run()` lasts until cancelled or the device is gone
    for good; a source that can reopen its device (serial) does so itself."""

    def __init__(self, device: DeviceInfo, spec: FramingSpec, emit: FrameSink, state: StateSink, *,
                 encoding: str | None = None) -> None:
        self.device = device
        self.spec = spec
        # encoding: the source pushes bytes (serial) and the framer decodes them.
        self.input = FramedInput(device.name, spec, emit, encoding=encoding)
        self._state = state
        self.present = False

    @classmethod
    def from_request(cls, req: SourceRequest) -> Source:
        """How the daemon builds a source of this transport (sources/registry.py names the class)."""
        return cls(req.device, req.spec, req.emit, req.state)

    def set_state(self, state: str, reason: str = "") -> None:
        self.present = state == "present"
        self._state(DeviceStateEvent(self.device.name, state, reason))

    def abort(self, reason: str) -> None:
        """The daemon stops this source: a partial scan is reported as a reject, not lost."""
        self.input.abort(reason)

    @property
    def reopens(self) -> bool:
        """Whether this source waits for its own path to come back (it can be poked)."""
        return False

    def feedback(self, accepted: bool) -> None:
        """After the pipeline took a read: a good or error beep where the transport itself can
        give one (HID-POS output reports). Scanners with a control profile get theirs from it."""
        return  # most transports have no feedback of their own (optional hook, not abstract)

    def switch(self, on: bool) -> str:
        """Turn the scanner's reading on or off (a kiosk's arm / disarm) where the transport can:
        "sent", "unanswered", or "not_controllable"."""
        return "not_controllable"

    def poke(self) -> None:
        """Discovery saw this source's device come back; sources that reopen look at once."""
        return  # only sources that reopen their own path act on it (optional hook)

    @abc.abstractmethod
    async def run(self) -> None:
        """Read until cancelled."""
