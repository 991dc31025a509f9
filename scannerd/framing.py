"""Turn a device's character stream into frames: pure, one Framer per device.

A scanner sends [prefix][AIM id][data][suffix][terminator]. The framer splits on the
terminator (or on an idle gap when there is none), strips what the scanner adds, and rejects
what cannot be a code. With a terminator configured the idle gap is a safety net: a read that
stops without its terminator ends there as a `no_terminator` reject, never as a partial code,
and the rest of that read (up to the next terminator) is a `partial_read` reject, never a code.

Terminator `auto` (the default) ends a frame at CR, LF, CRLF or TAB, whichever the scanner
sends. Until the scanner has sent one, an idle-ended read is a frame (`ended_by="idle"`); once it
has, the scanner is known to terminate its reads and an idle cut is treated as with an explicit
terminator. Three idle-ended reads in a row (a scanner reprogrammed to send none) forget that.

A whole read is framed at once: terminators are found with str.find / a regex over the chunk,
never character by character. Framing a read in one chunk, byte by byte or in any split gives
the same frames (a property test checks it).
"""

from __future__ import annotations

import codecs
import enum
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from .model import Frame, Rejected


class Auto(enum.Enum):
    """The `auto` terminator: CR, LF, CRLF or TAB, whichever the scanner sends."""

    AUTO = "auto"


AUTO = Auto.AUTO
# A terminator string, None (idle gap only) or AUTO.
Terminator: TypeAlias = str | None | Auto

TERMINATORS: dict[str, Terminator] = {
    "auto": AUTO, "CR": "\r", "LF": "\n", "CRLF": "\r\n", "TAB": "\t", "none": None,
}
# What `auto` accepts; CRLF is a CR frame followed by an empty LF frame, which is no frame.
_AUTO_ENDS = re.compile(r"[\r\n\t]")
# Idle-ended reads in a row after which `auto` stops expecting a terminator from a scanner.
AUTO_FORGET_AFTER = 3

DEFAULT_MAX_LENGTH = 512

# ECI 26 (UTF-8) marker some Honeywell readers put before UTF-8 QR content.
_ECI_UTF8 = "\\000026"

# GS (0x1D) separates GS1 fields and is part of the data; every other control character is garbage.
_WITHOUT_ALLOWED_CONTROLS = str.maketrans("", "", "\x1d")

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
    terminator: Terminator = "\r"
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
    return symbology, text.removeprefix(_ECI_UTF8)


def rejection_reason(text: str, max_length: int) -> str | None:
    """Why `text` cannot be a code, or None when it can."""
    if not text.strip():
        return "empty"
    if len(text) > max_length:
        return "too_long"
    if "\ufffd" in text:
        return "undecodable"
    if not text.isprintable() and not text.translate(_WITHOUT_ALLOWED_CONTROLS).isprintable():
        return "non_printable"
    return None


class Framer:
    """Per-device framing state. Feed characters (or bytes) with their arrival times; take frames out.

    feed(chars, t) takes a whole read that arrived at t; feed_timed(chars, times) a batch with one
    time per character (keyboard-wedge events); feed_bytes(data, t) raw bytes, decoded with the
    framer's own incremental decoder so a character cut by a frame boundary is caught.
    """

    def __init__(self, device: str, spec: FramingSpec, *, encoding: str | None = None) -> None:
        self.device = device
        self.spec = spec
        self._text = ""  # characters of the frame being read
        self._times: list[int] = []  # the arrival time of each of them
        # Arrival of the last input (characters or bytes of an unfinished character) while a read
        # is open; None when nothing is pending and no idle gap is due.
        self._last_ns: int | None = None
        # The frame being read was already rejected as too_long: drop it when it ends. Only the
        # last len(terminator) - 1 characters are kept, to see a terminator cut by a read.
        self._overflowed = False
        # An idle gap cut a read of a scanner that terminates its reads: the next frame that
        # ends with a terminator is that read's tail, never a code of its own.
        self._resync = False
        self._seen_terminator = False  # auto: this scanner has sent a terminator
        self._idle_streak = 0  # auto: idle-ended reads in a row
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace") if encoding else None
        self._partial_bytes = False  # the decoder holds the start of a character
        term = spec.terminator
        self._term = term if isinstance(term, str) else None
        self._auto = term is AUTO
        # Characters that may end a frame: anything else can simply be appended.
        self._end_chars = frozenset("\r\n\t" if self._auto else (self._term or ""))
        self._limit = spec.max_length + 64  # a read longer than this is runaway input

    @property
    def pending(self) -> bool:
        return bool(self._text) or self._partial_bytes

    @property
    def strict(self) -> bool:
        """True when an idle-ended read is a cut read (a reject), not a frame."""
        return self._term is not None or (self._auto and self._seen_terminator)

    def deadline_ns(self) -> int | None:
        """Monotonic time at which an idle flush is due, or None with nothing pending."""
        if self._last_ns is None:
            return None
        return self._last_ns + self.spec.idle_gap_ns

    def feed(self, chars: str, t_ns: int) -> list[Frame | Rejected]:
        """Add characters that arrived at t_ns (a serial read: all at once)."""
        out: list[Frame | Rejected] = []
        if chars:  # no input, no news: an idle gap is the timer's to see (flush)
            self._idle_before(t_ns, out)
            self._take(chars, [t_ns] * len(chars), out)
        return out

    def feed_char(self, ch: str, t_ns: int) -> list[Frame | Rejected]:
        """Add one character (replay, a key at a time): the common case costs an append."""
        last = self._last_ns
        if (
            ch not in self._end_chars
            and not self._overflowed
            and len(self._text) < self._limit
            and (last is None or t_ns <= last + self.spec.idle_gap_ns)
        ):
            self._text += ch
            self._times.append(t_ns)
            self._last_ns = t_ns
            return []
        return self.feed(ch, t_ns)

    def feed_timed(self, chars: str, times: Sequence[int]) -> list[Frame | Rejected]:
        """Add characters with one (non-decreasing) arrival time each: a batch of key events."""
        if len(chars) != len(times):
            raise ValueError(f"feed_timed: {len(chars)} characters but {len(times)} times")
        out: list[Frame | Rejected] = []
        if not chars:
            return out
        gap = self.spec.idle_gap_ns
        start = 0
        if times[-1] - times[0] > gap:  # an idle gap may lie inside the batch: split there
            for i in range(1, len(times)):
                if times[i] - times[i - 1] > gap:
                    self._idle_before(times[start], out)
                    self._take(chars[start:i], list(times[start:i]), out)
                    start = i
        self._idle_before(times[start], out)
        self._take(chars[start:], list(times[start:]), out)
        return out

    def feed_bytes(self, data: bytes, t_ns: int, *, continues: bool = False) -> list[Frame | Rejected]:
        """Add raw bytes that arrived at t_ns, decoded with this framer's encoding. `continues`:
        they were already waiting when the idle gap ran out (the reader was late, not the
        scanner), so they extend the read in progress instead of ending it."""
        if self._decoder is None:
            raise ValueError("feed_bytes needs a Framer made with an encoding")
        out: list[Frame | Rejected] = []
        if not data:
            return out
        if not continues:
            self._idle_before(t_ns, out)
        text = self._decoder.decode(data)
        if text:
            self._take(text, [t_ns] * len(text), out)
        self._partial_bytes = bool(self._decoder.getstate()[0])
        if self._partial_bytes:
            self._last_ns = t_ns
        return out

    def flush(self, now_ns: int) -> list[Frame | Rejected]:
        """Complete a pending frame whose idle gap has passed by now_ns."""
        deadline = self.deadline_ns()
        if deadline is None or now_ns < deadline:
            return []
        out: list[Frame | Rejected] = []
        self._end_by_idle(now_ns, out)
        return out

    def abort(self, reason: str, now_ns: int) -> list[Rejected]:
        """Drop a partial frame (device removed, events lost): it becomes a reject."""
        text, overflowed = self._text, self._overflowed
        self._clear()
        self._reset_decoder()
        self._resync = False  # the stream starts again from nothing (a replug, a kernel overflow)
        if overflowed or not text:
            return []
        return [Rejected(self.device, reason, text, now_ns)]

    # --- internals --------------------------------------------------------------------------

    def _clear(self) -> None:
        self._text, self._times, self._last_ns, self._overflowed = "", [], None, False

    def _reset_decoder(self) -> None:
        if self._decoder is not None:
            self._decoder.reset()
        self._partial_bytes = False

    @property
    def last_input_ns(self) -> int | None:
        """When the read in progress last grew (None: no read in progress)."""
        return self._last_ns

    def _idle_before(self, t_ns: int, out: list[Frame | Rejected]) -> None:
        """An idle gap before input arriving at t_ns ends the read in progress."""
        if self._last_ns is not None and t_ns > self._last_ns + self.spec.idle_gap_ns:
            self._end_by_idle(self._last_ns + self.spec.idle_gap_ns, out)

    def _find_end(self, text: str, pos: int) -> tuple[int, int]:
        """(index, length) of the first terminator in text at or after pos, or (-1, 0)."""
        if self._auto:
            m = _AUTO_ENDS.search(text, pos)
            return (m.start(), 1) if m else (-1, 0)
        term = self._term
        if term is None:
            return -1, 0
        return text.find(term, pos), len(term)

    def _take(self, chars: str, times: list[int], out: list[Frame | Rejected]) -> None:
        """Frame characters that arrived with no idle gap before or among them."""
        held = len(self._text)
        text = self._text + chars if held else chars
        alltimes = self._times + times if held else times
        tlen = len(self._term) if self._term else 1
        start = 0
        # A terminator may straddle the previous read and this one: look back tlen - 1 characters.
        j, n = self._find_end(text, max(0, held - tlen + 1))
        while j >= 0:
            # Runaway input is rejected the moment the read outgrows the limit, terminator or not.
            if not self._overflowed and j - start + tlen - 1 > self._limit:
                self._too_long(text, alltimes, start, out)
            end = j + n
            self._end_frame(text[start:j], alltimes[start:j], alltimes[end - 1], out)
            start = end
            j, n = self._find_end(text, start)
        rest = len(text) - start
        if not self._overflowed and rest > self._limit:
            self._too_long(text, alltimes, start, out)
        if self._overflowed:
            start = len(text) - min(rest, tlen - 1)  # keep enough to see a terminator cut by the next read
        self._text, self._times = text[start:], alltimes[start:]
        self._last_ns = times[-1] if self._text or self._overflowed else None

    def _too_long(self, text: str, times: list[int], start: int, out: list[Frame | Rejected]) -> None:
        """Runaway input (a stuck key, line noise): rejected at once instead of growing without end;
        the rest of that read is dropped up to its terminator or an idle gap."""
        cut = start + self._limit + 1
        out.append(Rejected(self.device, "too_long", text[start:cut], times[cut - 1]))
        self._overflowed = True

    def _end_frame(self, raw: str, times: list[int], t_ns: int, out: list[Frame | Rejected]) -> None:
        """A terminator arrived at t_ns and ends the frame raw."""
        self._idle_streak = 0
        self._seen_terminator = True
        if self._overflowed:
            self._overflowed = False  # the tail of a read already rejected as too_long
            return
        if self._resync:
            self._resync = False
            raw, times = _strip_leading_ends(raw, times)
            if raw:
                out.append(Rejected(self.device, "partial_read", raw, t_ns))
            return
        out.extend(self._complete(raw, times, "terminator", t_ns))

    def _end_by_idle(self, completed_ns: int, out: list[Frame | Rejected]) -> None:
        raw, times, overflowed, partial = self._text, self._times, self._overflowed, self._partial_bytes
        self._clear()
        self._reset_decoder()
        if overflowed:
            return  # rejected as too_long already; the idle gap ends the discarded read
        raw, times = _strip_leading_ends(raw, times)
        if not raw and not partial:
            return
        strict = self.strict
        if partial:
            # The read stopped inside a multibyte character: whatever came before it is cut.
            out.append(Rejected(self.device, "partial_character", raw, completed_ns))
        elif strict:
            # The terminator never came: a read cut short (unplug, a stall, lost characters) or a
            # scanner not sending the configured suffix. Either way not a code to pay with.
            out.append(Rejected(self.device, "no_terminator", raw, completed_ns))
        else:
            out.extend(self._complete(raw, times, "idle", completed_ns))
        if strict:
            self._resync = True
        if self._auto and self._seen_terminator:
            self._idle_streak += 1
            if self._idle_streak >= AUTO_FORGET_AFTER:
                self._seen_terminator = self._resync = False
                self._idle_streak = 0

    def _complete(self, raw: str, times: list[int], ended_by: str, completed_ns: int) -> list[Frame | Rejected]:
        # A bare terminator (the LF of a CRLF scanner set to CR, an extra Enter) is not a scan.
        raw, times = _strip_leading_ends(raw, times)
        if raw == "":
            return []
        symbology, text = clean(raw, self.spec)
        reason = rejection_reason(text, self.spec.max_length)
        if reason is not None:
            return [Rejected(self.device, reason, raw, completed_ns)]
        first = times[0] if times else completed_ns
        last = times[-1] if times else completed_ns
        return [
            Frame(
                device=self.device,
                text=text,
                symbology=symbology,
                first_ns=first,
                last_ns=last,
                completed_ns=completed_ns,
                gaps_ns=tuple(map(operator.sub, times[1:], times)),
                ended_by=ended_by,
            )
        ]


def _strip_leading_ends(raw: str, times: list[int]) -> tuple[str, list[int]]:
    lead = len(raw) - len(raw.lstrip("\r\n"))
    return (raw[lead:], times[lead:]) if lead else (raw, times)
