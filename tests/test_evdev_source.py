"""EvdevWedgeSource end to end without a kernel: a fake InputDevice over a real pipe.

The fake has exactly the python-evdev methods the adapter uses (fileno, read, grab, ungrab,
close) and behaves like the kernel where it matters: read() is a generator that raises
BlockingIOError when empty and OSError(ENODEV) once unplugged; event times are stamped on the
clock a real device uses, at the moment the events are pushed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from evdev.events import InputEvent

from scannerd.config import ScannerConfig
from scannerd.framing import FramingSpec
from scannerd.model import DeviceInfo, DeviceStateEvent, Frame, Rejected
from scannerd.sources.evdev_wedge import EvdevWedgeSource, effective_grab
from scannerd.sources.recording import read_recording

KEYS = Path(__file__).parent / "fixtures" / "keys"


class FakeInputDevice:
    def __init__(self, clock: str = "realtime") -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._queue: list[InputEvent] = []
        self.clock = clock
        self.gone = False
        self.grabbed = False
        self.calls: list[str] = []
        self.fail_grab: OSError | None = None

    # --- the InputDevice surface ---
    def fileno(self) -> int:
        return self._r

    def read(self) -> Iterator[InputEvent]:
        # Like evdev's EventIO.read: a generator, so errors surface on the first next().
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        if not self._queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        batch, self._queue = self._queue, []
        yield from batch

    def grab(self) -> None:
        self.calls.append("grab")
        if self.fail_grab is not None:
            raise self.fail_grab
        self.grabbed = True

    def ungrab(self) -> None:
        self.calls.append("ungrab")
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        self.grabbed = False

    def close(self) -> None:
        self.calls.append("close")
        os.close(self._r)
        os.close(self._w)

    # --- test controls ---
    def push(self, events: list[tuple[int, int, int, int]]) -> None:
        """(t_ns relative, type, code, value): stamped so the last event happened just now."""
        now = time.time_ns() if self.clock == "realtime" else time.monotonic_ns()
        last = events[-1][0]
        for rel, etype, code, value in events:
            t = now - (last - rel)
            self._queue.append(InputEvent(t // 1_000_000_000, (t % 1_000_000_000) // 1000, etype, code, value))
        os.write(self._w, b"x")

    def unplug(self) -> None:
        self.gone = True
        os.write(self._w, b"x")


def fixture_events(name: str) -> list[tuple[int, int, int, int]]:
    rec = read_recording(str(KEYS / name))
    return [(e.t_ns, e.type, e.code, e.value) for e in rec.events]


class Harness:
    def __init__(self, scanner: ScannerConfig | None = None, spec: FramingSpec | None = None, clock: str = "realtime") -> None:
        self.dev = FakeInputDevice(clock)
        self.items: list[Frame | Rejected] = []
        self.states: list[DeviceStateEvent] = []
        self.scanner = scanner or ScannerConfig(name="w1", transport="evdev", path="/dev/input/event7")
        self.source = EvdevWedgeSource(
            DeviceInfo("w1", "evdev", "outpatient", "window", self.scanner.path),
            spec or FramingSpec(),
            self.items.append,
            self.states.append,
            self.scanner,
            opener=self._open,
        )
        self.opened: list[str] = []

    def _open(self, path: str) -> FakeInputDevice:
        self.opened.append(path)
        return self.dev

    async def until(self, cond, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out; items={self.items} states={self.states}"
            await asyncio.sleep(0.005)


async def test_scan_is_framed_with_kernel_timing_and_grab_is_released_on_cancel() -> None:
    h = Harness()
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    assert h.opened == ["/dev/input/event7"] and h.dev.grabbed
    assert h.states[0].state == "present"
    h.dev.push(fixture_events("us_digits_enter.jsonl"))
    await h.until(lambda: h.items)
    (frame,) = h.items
    assert isinstance(frame, Frame) and frame.text == "134567890123456789" and frame.ended_by == "terminator"
    # All events arrived in one read at one instant: 8 ms gaps can only come from the kernel times.
    assert all(abs(g - 8_000_000) <= 1000 for g in frame.gaps_ns)
    assert frame.last_ns <= time.monotonic_ns()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.dev.calls == ["grab", "ungrab", "close"]


async def test_monotonic_kernel_clock_is_used_as_is() -> None:
    h = Harness(clock="monotonic")
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    before = time.monotonic_ns()
    h.dev.push(fixture_events("us_shift_mixed.jsonl"))
    await h.until(lambda: h.items)
    (frame,) = h.items
    assert isinstance(frame, Frame) and frame.text == "Ab9ZxQ7mK2"
    assert before - 200_000_000 < frame.first_ns < frame.last_ns <= time.monotonic_ns()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_unplug_mid_scan_rejects_the_partial_read_and_ends_cleanly() -> None:
    h = Harness(spec=FramingSpec(idle_gap_ms=5000))  # keep the partial read pending
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    h.dev.push(fixture_events("cut_mid_scan.jsonl"))
    await asyncio.sleep(0.05)
    assert h.items == []
    h.dev.unplug()
    await asyncio.wait_for(task, 2)  # run() returns by itself: no exception
    (reject,) = h.items
    assert isinstance(reject, Rejected) and reject.reason == "device_removed" and reject.text == "134567890"
    assert [(s.state, s.reason) for s in h.states] == [("present", ""), ("absent", "device_removed")]
    assert h.dev.calls == ["grab", "ungrab", "close"]  # ungrab's ENODEV is swallowed


async def test_syn_dropped_rejects_the_cut_scan_and_keeps_the_next() -> None:
    h = Harness()
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    h.dev.push(fixture_events("syn_dropped.jsonl"))
    await h.until(lambda: len(h.items) == 2)
    reject, frame = h.items
    assert isinstance(reject, Rejected) and reject.reason == "events_dropped"
    assert isinstance(frame, Frame) and frame.text == "281234567890123456"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_idle_gap_timer_completes_a_scan_without_terminator() -> None:
    h = Harness(spec=FramingSpec(terminator=None, idle_gap_ms=30))
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    events = fixture_events("no_terminator.jsonl")
    h.dev.push(events[: 18 * 6])  # the first scan only: 18 keys, two HID reports of 3 events each
    await h.until(lambda: h.items)
    await asyncio.sleep(0.1)
    assert [(f.text, f.ended_by) for f in h.items if isinstance(f, Frame)] == [("134567890123456789", "idle")]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_events_split_over_reads_stay_one_scan() -> None:
    h = Harness()
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    events = fixture_events("keypad_numlock_on.jsonl")
    h.dev.push(events[:40])
    await asyncio.sleep(0.01)
    h.dev.push(events[40:])
    await h.until(lambda: h.items)
    assert [i.text for i in h.items] == ["6212345678901234567"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_device_busy_is_an_error_state_and_nothing_is_read() -> None:
    h = Harness()
    h.dev.fail_grab = OSError(errno.EBUSY, "Device or resource busy")
    await asyncio.wait_for(h.source.run(), 2)
    assert [s.state for s in h.states] == ["error"] and "busy" in h.states[0].reason
    assert h.dev.calls == ["grab", "close"]


async def test_missing_device_is_absent() -> None:
    states: list[DeviceStateEvent] = []

    def opener(path: str) -> FakeInputDevice:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    scanner = ScannerConfig(name="w1", transport="evdev", path="/dev/input/event99")
    src = EvdevWedgeSource(DeviceInfo("w1", "evdev", "outpatient", "window", scanner.path), FramingSpec(),
                           lambda _: None, states.append, scanner, opener=opener)
    await asyncio.wait_for(src.run(), 2)
    assert [s.state for s in states] == ["absent"] and "event99" in states[0].reason


async def test_shared_keyboard_is_not_grabbed_and_human_typing_is_not_emitted() -> None:
    scanner = ScannerConfig(name="w1", transport="evdev", path="/dev/input/event7", shared_keyboard=True)
    h = Harness(scanner, spec=FramingSpec(idle_gap_ms=1000))
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    assert "grab" not in h.dev.calls
    h.dev.push(fixture_events("human_typing.jsonl"))
    await asyncio.sleep(0.05)
    h.dev.push(fixture_events("us_digits_enter.jsonl"))
    await h.until(lambda: h.items)
    assert [i.text for i in h.items] == ["134567890123456789"]
    assert h.source.human is not None and h.source.human.dropped == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert h.dev.calls == ["close"]


@pytest.mark.parametrize(("grab", "shared", "expected"), [(True, False, True), (False, False, False), (True, True, False)])
def test_effective_grab(grab: bool, shared: bool, expected: bool) -> None:
    assert effective_grab(ScannerConfig(name="x", transport="evdev", grab=grab, shared_keyboard=shared)) is expected


async def test_real_python_evdev_opener_on_a_non_input_node_is_an_error_state() -> None:
    # The real adapter path without a kernel input device: python-evdev opens /dev/null, its
    # EVIOCGID ioctl fails (ENOTTY), and the source reports an error instead of crashing.
    states: list[DeviceStateEvent] = []
    scanner = ScannerConfig(name="w1", transport="evdev", path="/dev/null")
    src = EvdevWedgeSource(DeviceInfo("w1", "evdev", "outpatient", "window", "/dev/null"), FramingSpec(),
                           lambda _: None, states.append, scanner)
    await asyncio.wait_for(src.run(), 5)
    assert [s.state for s in states] == ["error"] and "/dev/null" in states[0].reason


async def test_other_read_errors_end_in_an_error_state() -> None:
    h = Harness(spec=FramingSpec(idle_gap_ms=5000))
    task = asyncio.create_task(h.source.run())
    await h.until(lambda: h.states)
    h.dev.push(fixture_events("cut_mid_scan.jsonl"))
    await asyncio.sleep(0.02)

    def broken() -> Iterator[InputEvent]:
        raise OSError(errno.EIO, "Input/output error")
        yield  # a generator, like evdev's read()

    h.dev.read = broken  # type: ignore[method-assign]
    os.write(h.dev._w, b"x")
    await asyncio.wait_for(task, 2)
    assert [(i.reason) for i in h.items if isinstance(i, Rejected)] == ["read_error"]
    assert h.states[-1].state == "error" and "Input/output error" in h.states[-1].reason
