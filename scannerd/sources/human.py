"""Scanner or human? Burst timing, and the warnings `scannerd test` gives a technician.

Some cashier keyboards have a built-in reader: scans and the cashier's typing arrive on the
same input device (`shared_keyboard = true`). Such a device is never grabbed (the cashier must
keep typing into the HIS), and a framed burst counts as a scan only when it looks like a
machine: at least `human_min_chars` characters (default 6) and a median inter-key gap of at
most `human_max_median_gap_ms` (default 15 ms; wedge scanners measure 1–19 ms, people 80 ms
and more even when typing fast). Anything else is silently not a scan: no event, no reject.

The trade-off, in plain words:
- A scanner programmed with a long keystroke delay (some Zebra models: ~80 ms) looks human and
  its scans are lost: reduce the scanner's delay, or raise human_max_median_gap_ms.
- A very fast typist, or a paste/macro tool replaying keys, can look like a machine: a typed
  run of ≥ 6 characters ending in Enter at machine speed becomes a "scan" (it is classified
  like any other; a random string is `unknown`).
- Because the device is not grabbed, the scanner's characters ALSO reach the focused window as
  typed text, exactly as before scannerd; scannerd only adds the classified event. A payment
  code therefore still lands in whatever field has focus: prefer a dedicated scanner.
- The median (not the mean or the maximum) is used so one slow USB poll or a Shift press in a
  scan does not turn it human, and one fast key-rollover pair does not turn typing into a scan.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from ..model import Frame, Rejected
from .base import FrameSink

# Rejects a shared keyboard still reports: they are about the device, not about what was typed.
_DEVICE_REASONS = frozenset({"device_removed", "events_dropped"})

_AZERTY_ROW = frozenset("&é\"'(-è_çà")


def median_gap_ms(gaps_ns: tuple[int, ...]) -> float | None:
    return statistics.median(gaps_ns) / 1e6 if gaps_ns else None


def max_gap_ms(gaps_ns: tuple[int, ...]) -> float | None:
    return max(gaps_ns) / 1e6 if gaps_ns else None


def looks_like_machine(frame: Frame, max_median_gap_ms: float = 15.0, min_chars: int = 6) -> bool:
    """True when a framed burst was typed by a scanner rather than a person."""
    if len(frame.text) < min_chars:
        return False
    median = median_gap_ms(frame.gaps_ns)
    # No timing (a one-character frame after stripping): nothing says machine.
    return median is not None and median <= max_median_gap_ms


class HumanFilter:
    """A FrameSink in front of the real one: passes machine bursts, drops human typing."""

    def __init__(self, emit: FrameSink, max_median_gap_ms: float, min_chars: int) -> None:
        self._emit = emit
        self.max_median_gap_ms = max_median_gap_ms
        self.min_chars = min_chars
        self.dropped = 0  # bursts judged human (a count only: what a person typed is not kept)

    def passes(self, item: Frame | Rejected) -> bool:
        if isinstance(item, Frame):
            return looks_like_machine(item, self.max_median_gap_ms, self.min_chars)
        # A person pressing F5 or an arrow key is not a bad scan; a vanished device still matters.
        return item.reason in _DEVICE_REASONS

    def __call__(self, item: Frame | Rejected) -> None:
        if self.passes(item):
            self._emit(item)
        else:
            self.dropped += 1


def diagnose(
    frame: Frame,
    *,
    channel: str | None = None,
    upper_channel: str | None = None,
    notes: set[str] | frozenset[str] = frozenset(),
    idle_gap_ms: int = 50,
    layout: str = "us",
    other_layouts: Mapping[str, tuple[str, str | None]] | None = None,
    shared_keyboard: bool = False,
    max_median_gap_ms: float = 15.0,
    min_chars: int = 6,
) -> list[str]:
    """Warnings a technician can act on, for one scan seen by `scannerd test`.

    channel: the classification of the text ("unknown" or None when nothing matched);
    upper_channel: the classification of text.upper(); other_layouts: layout → (text, channel)
    for the same key events decoded in another layout.
    """
    out: list[str] = []
    text = frame.text
    known = channel not in (None, "unknown")
    if frame.ended_by == "idle":
        out.append(f"no terminator: the read ended on the {idle_gap_ms} ms idle gap; program a CR suffix "
                   "on the scanner (or set terminator = \"none\" and tune idle_gap_ms)")
    worst = max_gap_ms(frame.gaps_ns)
    # Wedge scanners measure 1–19 ms; above 20 ms the delay is a setting worth changing.
    if worst is not None and worst > 20:
        out.append(f"inter-key gap {worst:.0f} ms: reduce the scanner's keystroke (intercharacter) delay")
    if worst is not None and worst > 0.7 * idle_gap_ms:
        out.append(f"inter-key gap {worst:.0f} ms is close to idle_gap_ms = {idle_gap_ms}: reads may split in two")
    has_lower = any(c.islower() for c in text)
    has_upper = any(c.isupper() for c in text)
    if has_lower and not has_upper and (("capslock_on" in notes) or (not known and upper_channel not in (None, "unknown"))):
        out.append("lowercase where the code is digits+uppercase: check the scanner's CapsLock mode "
                   "(set it to ignore CapsLock / 'auto caps')")
    suggestion = None if known else suggest_layout(text, layout, other_layouts or {})
    if suggestion is not None:
        name, alt_text = suggestion
        out.append(f'decoded with layout = "{name}" this reads {alt_text!r}: the scanner\'s keyboard '
                   f'country is probably {name.upper()}; set layout = "{name}" or reprogram the scanner to US')
    elif layout != "fr" and _AZERTY_ROW & set(text) and not any(c.isdigit() for c in text):
        out.append('characters like "&é\\"\'(" where digits are expected: the scanner is set to a French '
                   'keyboard; set layout = "fr" or reprogram the scanner to US')
    if "numlock_off" in notes:
        out.append("the scanner switched NumLock off: scannerd still reads keypad digits, other programs would "
                   "not; prefer main-row digits in the scanner's keyboard settings")
    if "alt_code_without_alt_numpad" in notes:
        out.append("the scanner sends Alt+keypad codes: set alt_numpad = true for this scanner")
    for note in sorted(n for n in notes if n.startswith("undecodable_key:")):
        out.append(f"key code {note.split(':', 1)[1]} typed nothing a code can contain: check the scanner's "
                   "keyboard country and disable function-key/arrow output")
    if "events_dropped" in notes:
        out.append("the kernel dropped input events (SYN_DROPPED): the system was too busy to read the device")
    if shared_keyboard and not looks_like_machine(frame, max_median_gap_ms, min_chars):
        median = median_gap_ms(frame.gaps_ns)
        shown = f"{median:.0f} ms" if median is not None else "n/a"
        out.append(f"shared keyboard: this burst looks human (median gap {shown}, {len(text)} chars) and would "
                   f"NOT be emitted (limits: ≤ {max_median_gap_ms:g} ms, ≥ {min_chars} chars)")
    return out


def suggest_layout(text: str, layout: str, others: Mapping[str, tuple[str, str | None]]) -> tuple[str, str] | None:
    """Another layout under which the same keys read as a known code, or else as plain letters/digits."""
    candidates = [(n, t, c) for n, (t, c) in sorted(others.items()) if n != layout and t != text]
    for name, alt_text, alt_channel in candidates:
        if alt_channel not in (None, "unknown"):
            return name, alt_text
    if not _plain(text):
        for name, alt_text, _ in candidates:
            if _plain(alt_text) and len(alt_text) == len(text):
                return name, alt_text
    return None


def _plain(text: str) -> bool:
    return text.isascii() and text.isalnum()
