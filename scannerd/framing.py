"""Turn a device's character stream into frames: pure, one Framer per device.

A scanner sends [prefix][AIM id][data][suffix][terminator]. The framer splits on the
terminator (or on an idle gap when there is none), strips what the scanner adds, and rejects
what cannot be a code. With a terminator configured the idle gap is a safety net: a read that
stops without its terminator ends there as a `no_terminator` reject, never as a partial code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Frame, Rejected

TERMINATORS: dict[str, str | None] = {"CR": "\r", "LF": "\n", "CRLF": "\r\n", "TAB": "\t", "none": None}

DEFAULT_MAX_LENGTH = 512

# ECI 26 (UTF-8) marker some Honeywell readers put before UTF-8 QR content.
_ECI_UTF8 = "\\000026"

# GS (0x1D) separates GS1 fields and is part of the data; every other control character is garbage.
_ALLOWED_CONTROLS = frozenset("\x1d")

# AIM symbology identifiers (ISO/IEC 15424): "]" + code character + modifier.
_AIM_BASE: dict[str, str] = {
    "A": "code39",
    "C": "code128",
    "E": "ean",
    "F": "codabar",
    "G": "code93",
    "I": "itf",
    "L": "pdf417",
    "Q": "qr",
    "d": "datamatrix",
    "e": "databar",
    "h": "hanxin",
    "z": "aztec",
    "U": "maxicode",
    "X": "other",
}
_AIM_SPECIAL: dict[str, str] = {
    "]C1": "gs1_128",
    "]E0": "ean13",
    "]E4": "ean8",
    "]Q3": "gs1_qr",
    "]Q5": "gs1_qr",
    "]d2": "gs1_datamatrix",
    "]M0": "micro_qr",
}


def parse_aim(text: str) -> tuple[str | None, str]:
    """Return (symbology, data) with a leading AIM identifier removed, or (None, text)."""
    if len(text) >= 3 and text[0] == "]" and text[2].isalnum():
        aim = text[:3]
        name = _AIM_SPECIAL.get(aim) or _AIM_BASE.get(text[1])
        if name is not None:
            return name, text[3:]
    return None, text


@dataclass(frozen=True, slots=True)
class FramingSpec:
    terminator: str | None = "\r"
    idle_gap_ms: int = 50
    prefix: str = ""
    suffix: str = ""
    max_length: int = DEFAULT_MAX_LENGTH
    aim: bool = True
    # One-letter vendor code ids (Honeywell "s" = QR …), used when aim finds none.
    vendor_ids: dict[str, str] = field(default_factory=dict)

    @property
    def idle_gap_ns(self) -> int:
        return self.idle_gap_ms * 1_000_000


def clean(text: str, spec: FramingSpec) -> tuple[str | None, str]:
    """Strip what the scanner adds around the data: ECI marker, prefix, AIM/vendor id, suffix."""
    if spec.prefix and text.startswith(spec.prefix):
        text = text[len(spec.prefix):]
    if spec.suffix and text.endswith(spec.suffix):
        text = text[: -len(spec.suffix)]
    symbology: str | None = None
    if spec.aim:
        symbology, text = parse_aim(text)
    if symbology is None and spec.vendor_ids and text[:1] in spec.vendor_ids:
        symbology, text = spec.vendor_ids[text[0]], text[1:]
    if text.startswith(_ECI_UTF8):
        text = text[len(_ECI_UTF8):]
    return symbology, text


def rejection_reason(text: str, max_length: int) -> str | None:
    """Why `text` cannot be a code, or None when it can."""
    if not text.strip():
        return "empty"
    if len(text) > max_length:
        return "too_long"
    if "\ufffd" in text:
        return "undecodable"
    for ch in text:
        if not ch.isprintable() and ch not in _ALLOWED_CONTROLS:
            return "non_printable"
    return None


class Framer:
    """Per-device framing state. Feed characters with their arrival times; take frames out."""

    def __init__(self, device: str, spec: FramingSpec) -> None:
        self.device = device
        self.spec = spec
        self._buf: list[str] = []
        self._times: list[int] = []
        # After a runaway read is rejected, the rest of that read (up to its terminator or an
        # idle gap) is discarded too: its tail must never pass for a code of its own.
        self._discarding = False

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def deadline_ns(self) -> int | None:
        """Monotonic time at which an idle flush is due, or None with nothing pending."""
        if not self._times:
            return None
        return self._times[-1] + self.spec.idle_gap_ns

    def feed(self, chars: str, t_ns: int) -> list[Frame | Rejected]:
        """Add characters that arrived at t_ns (a serial read: all at once)."""
        out: list[Frame | Rejected] = []
        for ch in chars:
            out.extend(self.feed_char(ch, t_ns))
        return out

    def feed_char(self, ch: str, t_ns: int) -> list[Frame | Rejected]:
        out: list[Frame | Rejected] = []
        # An idle gap before this character ends the previous frame (scanners without terminator).
        deadline = self.deadline_ns()
        if deadline is not None and t_ns > deadline:
            out.extend(self._complete(t_ns, "idle", deadline))
        if self._discarding:
            if deadline is not None and t_ns > deadline:
                self._discarding = False  # an idle gap: a new read starts with this character
            else:
                self._times[-1:] = [t_ns]  # keep only the time, for the idle gap
                term = self.spec.terminator
                if term is not None and term.endswith(ch):
                    self._discarding = False
                    self._buf.clear()
                    self._times.clear()
                return out
        self._buf.append(ch)
        self._times.append(t_ns)
        term = self.spec.terminator
        if term is not None and len(self._buf) >= len(term) and "".join(self._buf[-len(term):]) == term:
            del self._buf[-len(term):]
            times = self._times[: len(self._times) - len(term)]
            self._times = times
            out.extend(self._complete(t_ns, "terminator", t_ns))
        elif len(self._buf) > self.spec.max_length + 64:
            # Runaway input (a stuck key, line noise): reject now instead of growing without end.
            out.append(self._reject("too_long", t_ns))
            self._discarding = True
            self._times = [t_ns]
        return out

    def flush(self, now_ns: int) -> list[Frame | Rejected]:
        """Complete a pending frame whose idle gap has passed by now_ns."""
        deadline = self.deadline_ns()
        if deadline is None or now_ns < deadline:
            return []
        if self._discarding:
            self._discarding = False
            self._buf.clear()
            self._times.clear()
            return []
        return self._complete(now_ns, "idle", now_ns)

    def abort(self, reason: str, now_ns: int) -> list[Rejected]:
        """Drop a partial frame (device removed, events lost): it becomes a reject."""
        if self._discarding:
            self._discarding = False
            self._times.clear()
        if not self._buf:
            return []
        return [self._reject(reason, now_ns)]

    def _reject(self, reason: str, now_ns: int) -> Rejected:
        text = "".join(self._buf)
        self._buf.clear()
        self._times.clear()
        return Rejected(self.device, reason, text, now_ns)

    def _complete(self, now_ns: int, ended_by: str, completed_ns: int) -> list[Frame | Rejected]:
        raw = "".join(self._buf)
        times = self._times
        self._buf = []
        self._times = []
        # A bare terminator (the LF of a CRLF scanner set to CR, an extra Enter) is not a scan.
        lead = len(raw) - len(raw.lstrip("\r\n"))
        raw, times = raw[lead:], times[lead:]
        if raw == "":
            return []
        if ended_by == "idle" and self.spec.terminator is not None:
            # The terminator never came: a read cut short (unplug, lost characters) or a scanner
            # not sending the configured suffix. Either way not a code to pay with.
            return [Rejected(self.device, "no_terminator", raw, completed_ns)]
        symbology, text = clean(raw, self.spec)
        reason = rejection_reason(text, self.spec.max_length)
        if reason is not None:
            return [Rejected(self.device, reason, raw, completed_ns)]
        first = times[0] if times else now_ns
        last = times[-1] if times else now_ns
        gaps = tuple(b - a for a, b in zip(times, times[1:]))
        return [
            Frame(
                device=self.device,
                text=text,
                symbology=symbology,
                first_ns=first,
                last_ns=last,
                completed_ns=completed_ns,
                gaps_ns=gaps,
                ended_by=ended_by,
            )
        ]
