"""What a scanner actually sends, learned from its raw stream: for `scannerd test`'s summary.

Pure and independent of the framer's settings: whatever terminator, idle gap or encoding a
config says, this looks at the characters (and bytes) as they came and reports the terminator
(CR, LF, CRLF, TAB or none), whether reads start with an AIM symbology id, the keystroke delay
(inter-character gaps inside a read) and, for serial bytes, the encoding that decodes them.
Nothing is kept of the codes themselves beyond the counts and the raw bytes held for the
encoding guess (in memory only, capped).
"""

from __future__ import annotations

import codecs
import itertools
import statistics
from collections import Counter
from collections.abc import Sequence

from ..config import ScannerConfig
from ..framing import parse_aim

_ENDS = "\r\n\t"
_NAMES = {"\r": "CR", "\n": "LF", "\t": "TAB"}
_MAX_BYTES = 64 * 1024  # enough to tell UTF-8 from GBK; a test session never needs more


def ending_name(ending: str) -> str:
    """The config name of a run of terminator characters: CRLF, CR, LF or TAB."""
    return "CRLF" if ending.startswith("\r\n") else _NAMES[ending[0]]


def guess_encoding(data: bytes) -> str | None:
    """The encoding that decodes data: None for plain ASCII (any will do), utf-8, gbk, or None."""
    if data.isascii():
        return None
    for encoding in ("utf-8", "gbk"):
        try:
            data.decode(encoding)
            return encoding
        except UnicodeDecodeError:
            continue
    return None


class Observation:
    """Reads seen on one scanner: how each ended, AIM ids, gaps between characters."""

    def __init__(self, idle_gap_ns: int, encoding: str = "utf-8") -> None:
        self.idle_gap_ns = idle_gap_ns
        self.endings: Counter[str] = Counter()
        self.aim_ids: Counter[str] = Counter()
        self.reads = 0
        self.gaps_ns: list[int] = []
        self.raw = bytearray()
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._data: list[str] = []
        self._times: list[int] = []
        self._ending = ""
        self._last_ns: int | None = None

    def feed_bytes(self, data: bytes, t_ns: int) -> None:
        if len(self.raw) < _MAX_BYTES:
            self.raw += data[: _MAX_BYTES - len(self.raw)]
        text = self._decoder.decode(data)
        self.feed(text, [t_ns] * len(text))

    def feed(self, text: str, times: Sequence[int]) -> None:
        for ch, t in zip(text, times, strict=True):
            if self._last_ns is not None and t - self._last_ns > self.idle_gap_ns:
                self._end_read()
            self._last_ns = t
            if ch in _ENDS:
                self._ending += ch
                continue
            if self._ending:
                self._end_read()
            self._data.append(ch)
            self._times.append(t)

    def finish(self) -> None:
        """The session ended: count a read still open."""
        self._end_read()

    def _end_read(self) -> None:
        data, times, ending = "".join(self._data), self._times, self._ending
        self._data, self._times, self._ending = [], [], ""
        if not data:
            return
        self.reads += 1
        self.endings[ending_name(ending) if ending else "none"] += 1
        if parse_aim(data)[0] is not None:
            self.aim_ids[data[:3]] += 1
        self.gaps_ns += [b - a for a, b in itertools.pairwise(times)]

    # --- the report -------------------------------------------------------------------------

    @property
    def terminator(self) -> str | None:
        """The terminator most reads ended with, or None before any read."""
        return self.endings.most_common(1)[0][0] if self.endings else None

    @property
    def sends_aim(self) -> bool:
        return self.reads > 0 and sum(self.aim_ids.values()) * 2 > self.reads

    def keystroke_delay_ms(self) -> tuple[float, float] | None:
        """(median, max) gap between characters of a read, in ms; None without gaps."""
        gaps = [g for g in self.gaps_ns if g > 0]  # characters of one serial read share a time
        if not gaps:
            return None
        return statistics.median(gaps) / 1e6, max(gaps) / 1e6

    def summary(self, transport: str, layout: str | None) -> list[str]:
        if not self.reads:
            return ["no reads seen: nothing to report about what this scanner sends"]
        ends = ", ".join(f"{name} {n}" for name, n in self.endings.most_common())
        lines = [f"terminator: {self.terminator} ({ends}; of {self.reads} read(s))"]
        if self.aim_ids:
            ids = ", ".join(f"{aim} {n}" for aim, n in self.aim_ids.most_common())
            lines.append(f"AIM prefix: {'yes' if self.sends_aim else 'some reads'} ({ids})")
        else:
            lines.append("AIM prefix: none (enable AIM ids on the scanner to report the symbology)")
        delay = self.keystroke_delay_ms()
        if transport == "evdev":
            lines.append(f"layout: {layout}")
            lines.append("keystroke delay: " + (f"median {delay[0]:.1f} ms, max {delay[1]:.1f} ms" if delay else "-"))
        else:
            lines.append("keystroke delay: " + (f"largest gap inside a read {delay[1]:.1f} ms" if delay else
                                                 "none seen (whole reads at once)"))
            enc = guess_encoding(bytes(self.raw))
            lines.append(f"encoding: {enc or 'ascii (any)'}")
        return lines

    def scanner_lines(self, scanner: ScannerConfig, layout: str | None = None) -> list[str]:
        """The [[scanner]] entry to paste, from the configured one and what was seen."""
        out = ["[[scanner]]", f'name = "{scanner.name}"']
        if scanner.transport != "serial":
            out.append(f'transport = "{scanner.transport}"')
        out.append(f'path = "{scanner.path}"')
        if scanner.usb:
            out.append(f'usb = "{scanner.usb}"')  # finds it again on another port or node number
        if scanner.transport == "serial":
            out.append(f"baudrate = {scanner.baudrate}")
            enc = guess_encoding(bytes(self.raw))
            if enc and enc != "utf-8":
                out.append(f'encoding = "{enc}"')
        elif layout and layout != "us":
            out.append(f'layout = "{layout}"')
        if self.terminator:
            out.append(f'terminator = "{self.terminator}"')
        delay = self.keystroke_delay_ms()
        if delay is not None and delay[1] > 0.7 * scanner.idle_gap_ms:
            # Leave room above the largest gap seen so a slow key never cuts a read in two.
            out.append(f"idle_gap_ms = {min(5000, int(delay[1] * 2) + 10)}")
        if self.reads and not self.sends_aim:
            out.append("aim = false")
        return out
