"""HID-POS input reports → frames: pure reassembly, one Reassembler per device.

A HID-POS scanner says itself where a scan ends: each report carries the number of data bytes
it holds and a "continued" bit. The reassembler appends `data[:count]` while the bit is set and
completes the scan on the report without it, so the terminator logic of the keyboard and serial
framer is bypassed (a configured prefix and suffix are still stripped, and a terminator the
scanner still appends is dropped). NUL bytes are data: never stripped, the count decides.
The AIM id travels in its own field; it becomes the frame's symbology.

Zebra's "Simple COM Port Emulation" has no end-of-scan mark (length-prefixed chunks, no report
id): its bytes go through the ordinary Framer, as for a serial scanner.

Every byte sequence gives a frame, a reject with a reason, or nothing (a report that is not
scanned data, an empty report), never an exception.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from ..framing import AUTO, Framer, FramingSpec, clean, parse_aim, rejection_reason
from ..model import Frame, Rejected
from .hid_descriptor import PosLayout

# A scan longer than this many reports' worth is runaway input (a stuck continued bit).
_SLACK_BYTES = 64


@dataclass(frozen=True, slots=True)
class HidScan:
    """One scan exactly as the device sent it: the reassembled bytes and its fields."""

    data: bytes
    aim: str | None  # "]Q1", or None when the report carries none
    code_id: str | None  # the vendor's one-letter code id
    first_ns: int
    last_ns: int
    reports: int


def _aim_text(raw: bytes) -> str | None:
    if len(raw) < 3 or not raw.strip(b"\x00"):
        return None
    text = raw.decode("latin-1")
    return text if text[0] == "]" else None


def scan_to_item(device: str, scan: HidScan, spec: FramingSpec, encoding: str, completed_ns: int) -> Frame | Rejected:
    """A reassembled scan → a Frame, or a Rejected with the reason it cannot be a code."""
    try:
        text = scan.data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return Rejected(device, "undecodable", scan.data.decode(encoding, "replace"), completed_ns)
    # Some scanners keep their CR suffix in HID-POS mode: one terminator at the end is dropped.
    terms = (spec.terminator,) if isinstance(spec.terminator, str) else ("\r\n", "\r", "\n", "\t") \
        if spec.terminator is AUTO else ()
    for term in terms:
        if term and text.endswith(term):
            text = text[: -len(term)]
            break
    symbology, text = clean(text, spec)
    if scan.aim is not None:
        symbology = parse_aim(scan.aim)[0] or symbology
    if symbology is None and scan.code_id and scan.code_id in spec.vendor_ids:
        symbology = spec.vendor_ids[scan.code_id]
    reason = rejection_reason(text, spec.max_length)
    if reason == "non_printable":
        reason = "binary_data"  # the device framed it: not line noise, but no text code either
    if reason is not None:
        return Rejected(device, reason, text, completed_ns)
    return Frame(device=device, text=text, symbology=symbology, first_ns=scan.first_ns, last_ns=scan.last_ns,
                 completed_ns=completed_ns, ended_by="report")


class Reassembler:
    """Per-device state: reports in (with their arrival times), frames and rejects out."""

    def __init__(self, device: str, layout: PosLayout, spec: FramingSpec, encoding: str = "utf-8") -> None:
        self.device = device
        self.spec = spec
        self.encoding = encoding
        self._limit = spec.max_length * 4 + _SLACK_BYTES  # UTF-8: up to 4 bytes a character
        self.ignored = 0  # reports that were not scanned data (other report ids)
        self.last_scan: HidScan | None = None  # for replay diagnostics
        self.use_layout(layout)

    def use_layout(self, layout: PosLayout) -> None:
        """Start over with another layout (the device's descriptor was read)."""
        self.layout = layout
        self._buf = bytearray()
        self._first_ns = 0
        self._last_ns = 0
        self._reports = 0
        self._aim: str | None = None
        self._code_id: str | None = None
        self._discarding = False  # after a reject mid-scan, until the scan's last report
        # Length-prefixed chunks carry a byte stream: the ordinary framer finds the scans.
        self._stream: Framer | None = Framer(self.device, self.spec) if layout.length_prefixed else None
        self._decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._discarding or (self._stream is not None and self._stream.pending)

    def deadline_ns(self) -> int | None:
        """When a scan whose last report never came is given up (the idle gap after the last one)."""
        if self._stream is not None:
            return self._stream.deadline_ns()
        if not self._buf and not self._discarding:
            return None
        return self._last_ns + self.spec.idle_gap_ns

    def flush(self, now_ns: int) -> list[Frame | Rejected]:
        if self._stream is not None:
            return self._stream.flush(now_ns)
        deadline = self.deadline_ns()
        if deadline is None or now_ns < deadline:
            return []
        return list(self.abort("no_last_report", now_ns))

    def abort(self, reason: str, now_ns: int) -> list[Frame | Rejected]:
        """Drop a partial scan (device removed, stopped): it becomes a reject."""
        if self._stream is not None:
            return list(self._stream.abort(reason, now_ns))
        self._discarding = False
        if not self._buf:
            return []
        return [self._reject(reason, now_ns)]

    def feed(self, report: bytes, t_ns: int) -> list[Frame | Rejected]:
        lay = self.layout
        if self._stream is not None:
            return self._feed_stream(report, t_ns)
        if lay.report_id is not None and (not report or report[0] != lay.report_id):
            self.ignored += 1
            return []
        out: list[Frame | Rejected] = []
        if self._buf and t_ns > self._last_ns + self.spec.idle_gap_ns:
            out.extend(self.abort("no_last_report", t_ns))  # a new scan after a lost last report
        continued = False
        if lay.continued is not None:
            byte, bit = lay.continued
            continued = len(report) > byte and bool(report[byte] >> bit & 1)
        if lay.count_offset is not None:
            if len(report) <= lay.count_offset:
                return out + self._bad(t_ns, "short_report", continued)
            count = report[lay.count_offset]
            if count > lay.data_length:
                return out + self._bad(t_ns, "bad_byte_count", continued)
            if len(report) < lay.data_offset + count:
                return out + self._bad(t_ns, "short_report", continued)
            chunk = bytes(report[lay.data_offset: lay.data_offset + count])
        else:
            # No Byte Count usage: zero padding is all there is to go by.
            chunk = bytes(report[lay.data_offset: lay.data_offset + lay.data_length]).rstrip(b"\x00")
        self._last_ns = t_ns
        if self._discarding:
            if not continued:
                self._discarding = False
            return out
        if not self._buf:
            self._first_ns = t_ns
            self._reports = 0
            self._aim = _aim_text(bytes(report[o] for o in lay.aim_offsets if o < len(report)))
            co = lay.code_id_offset
            self._code_id = chr(report[co]) if co is not None and co < len(report) and report[co] else None
        self._buf += chunk
        self._reports += 1
        if len(self._buf) > self._limit:
            out.append(self._reject("too_long", t_ns))
            self._discarding = continued
            return out
        if continued:
            return out
        if not self._buf:
            return out  # an empty last report (some scanners send one after each scan)
        scan = HidScan(bytes(self._buf), self._aim, self._code_id, self._first_ns, t_ns, self._reports)
        self._buf.clear()
        self.last_scan = scan
        out.append(scan_to_item(self.device, scan, self.spec, self.encoding, t_ns))
        return out

    def _feed_stream(self, report: bytes, t_ns: int) -> list[Frame | Rejected]:
        assert self._stream is not None
        if not report:
            return []
        count = report[0]
        if count > len(report) - 1:
            return list(self._stream.abort("bad_byte_count", t_ns)) or [Rejected(self.device, "bad_byte_count", "", t_ns)]
        return self._stream.feed(self._decoder.decode(bytes(report[1: 1 + count])), t_ns)

    def _bad(self, t_ns: int, reason: str, continued: bool) -> list[Frame | Rejected]:
        """A report that breaks the layout: the scan it belongs to is lost, and said so."""
        self._last_ns = t_ns
        text = self._buf.decode(self.encoding, "replace")
        self._buf.clear()
        self._discarding = continued  # skip the rest of this scan: its tail is not a code
        return [Rejected(self.device, reason, text, t_ns)]

    def _reject(self, reason: str, now_ns: int) -> Rejected:
        text = self._buf.decode(self.encoding, "replace")
        self._buf.clear()
        return Rejected(self.device, reason, text, now_ns)


def reassemble(device: str, layout: PosLayout, spec: FramingSpec, reports: list[tuple[int, bytes]],
               encoding: str = "utf-8") -> list[Frame | Rejected]:
    """A whole stream of (t_ns, report) → items, the last partial scan flushed: what replay and tests use."""
    r = Reassembler(device, layout, spec, encoding)
    out: list[Frame | Rejected] = []
    last = 0
    for t_ns, report in reports:
        out.extend(r.flush(t_ns))
        out.extend(r.feed(report, t_ns))
        last = t_ns
    deadline = r.deadline_ns()
    if deadline is not None:
        out.extend(r.flush(max(deadline, last)))
    return out


__all__ = ["HidScan", "Reassembler", "reassemble", "scan_to_item"]
