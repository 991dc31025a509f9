"""Key-event recordings ("scannerd-keys/1") and their offline replay through keymap → framer.

Format (JSON lines, UTF-8):
    line 1:  {"format":"scannerd-keys/1","device":{...},"layout":"us"}
    then:    {"t":1732523702.123456,"type":1,"code":2,"value":1}      one per input event
`t` is the kernel event time in seconds (microsecond precision, as the kernel gives it);
`type`, `code`, `value` are Linux input event numbers (linux/input-event-codes.h), including
EV_SYN and EV_MSC events, so a recording is exactly what the device sent. `device` describes
where it came from (name, path, vid, pid, by_id); readers ignore keys they do not know.

HID-POS recordings ("scannerd-hid/1") hold USB reports instead of key events:
    line 1:  {"format":"scannerd-hid/1","device":{"name":…,"vid":…,"pid":…},"report_descriptor":"<hex>"}
    then:    {"t":1732523702.123456,"report":"0241…"}      one per report, exactly as read from
hidraw (report id first when the descriptor declares report ids). Replay parses the recorded
descriptor, so it reads the reports as the live source would have.

A recording of real scans contains the codes themselves (as key strokes or report bytes): treat
the file like the codes. `scannerd record` writes it with mode 0600.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any

from ..framing import Framer, FramingSpec
from ..model import Frame, Rejected
from .evdev_wedge import Abort, EventDecoder
from .hid_descriptor import layout_for
from .hid_reports import reassemble
from .human import HumanFilter
from .keymap import get_layout

FORMAT = "scannerd-keys/1"
HID_FORMAT = "scannerd-hid/1"


class RecordingError(ValueError):
    """A file that is not a valid scannerd-keys/1 recording: names the line and the problem."""

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source, self.line = source, line
        super().__init__(f"{source}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class RawEvent:
    t_ns: int
    type: int
    code: int
    value: int


@dataclass(frozen=True, slots=True)
class Recording:
    device: dict[str, Any]
    layout: str
    events: tuple[RawEvent, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def header_line(device: dict[str, Any], layout: str, **extra: Any) -> str:
    return json.dumps({"format": FORMAT, "device": device, "layout": layout, **extra}, ensure_ascii=False)


def event_line(sec: int, usec: int, etype: int, code: int, value: int) -> str:
    # Written by hand so the time keeps its exact microseconds (no float round trip).
    return f'{{"t":{sec}.{usec:06d},"type":{etype},"code":{code},"value":{value}}}'


def write_recording(fp: IO[str], device: dict[str, Any], layout: str,
                    events: Iterable[tuple[int, int, int, int, int]], **extra: Any) -> None:
    """Write a header and (sec, usec, type, code, value) events."""
    fp.write(header_line(device, layout, **extra) + "\n")
    for sec, usec, etype, code, value in events:
        fp.write(event_line(sec, usec, etype, code, value) + "\n")


def parse_recording(lines: Iterable[str], source: str = "<recording>") -> Recording:
    it: Iterator[tuple[int, str]] = ((i, ln) for i, ln in enumerate(lines, 1) if ln.strip())
    try:
        n, first = next(it)
    except StopIteration:
        raise RecordingError(source, 1, "empty file (expected a scannerd-keys/1 header)") from None
    header = _json(source, n, first)
    if header.get("format") != FORMAT:
        raise RecordingError(source, n, f'expected a header with "format":"{FORMAT}", got {header.get("format")!r}')
    layout = header.get("layout", "us")
    if not isinstance(layout, str):
        raise RecordingError(source, n, f"layout: expected a string, got {layout!r}")
    device = header.get("device", {})
    if not isinstance(device, dict):
        raise RecordingError(source, n, "device: expected an object")
    events: list[RawEvent] = []
    for n, line in it:
        obj = _json(source, n, line)
        try:
            t, etype, code, value = obj["t"], obj["type"], obj["code"], obj["value"]
        except KeyError as e:
            raise RecordingError(source, n, f"missing key {e.args[0]!r} (expected t, type, code, value)") from None
        if not isinstance(t, (Decimal, int)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in (etype, code, value)):
            raise RecordingError(source, n, "expected a number t and integers type, code, value")
        events.append(RawEvent(int(Decimal(t) * 1_000_000) * 1000, etype, code, value))
    extra = {k: v for k, v in header.items() if k not in ("format", "device", "layout")}
    return Recording(device=device, layout=layout, events=tuple(events), extra=extra)


def read_recording(path: str) -> Recording:
    with open(path, encoding="utf-8") as fp:
        return parse_recording(fp, path)


def _json(source: str, n: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line, parse_float=Decimal)
    except json.JSONDecodeError as e:
        raise RecordingError(source, n, f"not JSON: {e.msg}") from None
    if not isinstance(obj, dict):
        raise RecordingError(source, n, "expected a JSON object")
    return obj


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """One replay result and what the decoder noticed while its keys were typed."""

    item: Frame | Rejected
    notes: frozenset[str]


def replay(recording: Recording, spec: FramingSpec, *, layout: str | None = None, device: str = "replay",
           alt_numpad: bool = False, shared_keyboard: bool = False, human_max_median_gap_ms: float = 15.0,
           human_min_chars: int = 6) -> list[ReplayItem]:
    """Run a recording through the same decoder and framer the live source uses.

    Event times come from the recording, so idle gaps and scan timing are as they were on site.
    With shared_keyboard, bursts that look human are dropped as the live source would.
    """
    decoder = EventDecoder(get_layout(layout or recording.layout), alt_numpad=alt_numpad,
                           idle_gap_ns=spec.idle_gap_ns)
    framer = Framer(device, spec)
    out: list[ReplayItem] = []

    def take(items: list[Frame | Rejected]) -> None:
        for item in items:
            out.append(ReplayItem(item, frozenset(decoder.take_notes())))

    last_t = 0
    for ev in recording.events:
        last_t = ev.t_ns
        take(framer.flush(ev.t_ns))  # an idle gap passed before this event
        for typed in decoder.feed(ev.type, ev.code, ev.value, ev.t_ns):
            if isinstance(typed, Abort):
                take(list(framer.abort(typed.reason, typed.t_ns)))
            else:
                take(framer.feed_char(typed.ch, typed.t_ns))
    deadline = framer.deadline_ns()
    if deadline is not None:
        take(framer.flush(max(deadline, last_t)))
    if shared_keyboard:
        human = HumanFilter(lambda _: None, human_max_median_gap_ms, human_min_chars)
        out = [r for r in out if human.passes(r.item)]
    return out


# --- HID-POS reports ("scannerd-hid/1") -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HidRecording:
    device: dict[str, Any]
    report_descriptor: bytes
    reports: tuple[tuple[int, bytes], ...]  # (t_ns, report as read)
    extra: dict[str, Any] = field(default_factory=dict)


def hid_header_line(device: dict[str, Any], report_descriptor: bytes, **extra: Any) -> str:
    return json.dumps({"format": HID_FORMAT, "device": device, "report_descriptor": report_descriptor.hex(), **extra},
                      ensure_ascii=False)


def hid_report_line(t_ns: int, report: bytes) -> str:
    sec, rest = divmod(t_ns, 1_000_000_000)
    return f'{{"t":{sec}.{rest // 1000:06d},"report":"{report.hex()}"}}'


def parse_hid_recording(lines: Iterable[tuple[int, str]], header: dict[str, Any], n: int, source: str) -> HidRecording:
    """The lines after a scannerd-hid/1 header (numbered), the header itself at line n."""
    device = header.get("device", {})
    if not isinstance(device, dict):
        raise RecordingError(source, n, "device: expected an object")
    descriptor = _hex(source, n, header.get("report_descriptor", ""), "report_descriptor")
    reports: list[tuple[int, bytes]] = []
    for line_no, line in lines:
        obj = _json(source, line_no, line)
        t, report = obj.get("t"), obj.get("report")
        if not isinstance(t, (Decimal, int)) or isinstance(t, bool) or report is None:
            raise RecordingError(source, line_no, "expected a number t and a hex string report")
        reports.append((int(Decimal(t) * 1_000_000) * 1000, _hex(source, line_no, report, "report")))
    extra = {k: v for k, v in header.items() if k not in ("format", "device", "report_descriptor")}
    return HidRecording(device, descriptor, tuple(reports), extra)


def _hex(source: str, n: int, value: Any, key: str) -> bytes:
    if not isinstance(value, str):
        raise RecordingError(source, n, f"{key}: expected a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise RecordingError(source, n, f"{key}: not hex") from None


def parse_any_recording(lines: Iterable[str], source: str = "<recording>") -> Recording | HidRecording:
    """A key-event or a HID-POS recording, told apart by the header's format."""
    all_lines = list(lines)
    it: Iterator[tuple[int, str]] = ((i, ln) for i, ln in enumerate(all_lines, 1) if ln.strip())
    try:
        n, first = next(it)
    except StopIteration:
        raise RecordingError(source, 1, f"empty file (expected a {FORMAT} or {HID_FORMAT} header)") from None
    header = _json(source, n, first)
    if header.get("format") == HID_FORMAT:
        return parse_hid_recording(it, header, n, source)
    return parse_recording(all_lines, source)  # says what it expected if this is no recording at all


def read_any_recording(path: str) -> Recording | HidRecording:
    with open(path, encoding="utf-8") as fp:
        return parse_any_recording(fp, path)


def replay_hid(recording: HidRecording, spec: FramingSpec, *, device: str = "replay",
               encoding: str = "utf-8") -> tuple[list[ReplayItem], str]:
    """The recorded reports through the layout their own descriptor gives, and that layout's origin."""
    vid, pid = str(recording.device.get("vid", "")).lower(), str(recording.device.get("pid", "")).lower()
    layout, why = layout_for(recording.report_descriptor or None, vid, pid)
    items = reassemble(device, layout, spec, list(recording.reports), encoding)
    return [ReplayItem(item, frozenset()) for item in items], why
