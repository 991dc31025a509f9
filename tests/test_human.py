"""Scanner-vs-human burst test, the shared-keyboard filter, and `scannerd test` warnings."""

from __future__ import annotations

import pytest

from scannerd.model import Frame, Rejected
from scannerd.sources.human import HumanFilter, diagnose, looks_like_machine, median_gap_ms

MS = 1_000_000


def frame(text: str, gaps_ms: list[float] | None = None, ended_by: str = "terminator") -> Frame:
    gaps = tuple(int(g * MS) for g in (gaps_ms if gaps_ms is not None else [8.0] * (len(text) - 1)))
    return Frame("kbd", text, None, 0, sum(gaps), sum(gaps), gaps, ended_by)


@pytest.mark.parametrize(
    ("text", "gaps", "expected"),
    [
        ("134567890123456789", [8.0] * 17, True),  # Honeywell-like wedge timing
        ("134567890123456789", [1.0] * 17, True),
        ("123456", [15.0] * 5, True),  # exactly at the limits
        ("12345", [2.0] * 4, False),  # too short to tell a scanner from a burst of keys
        ("123456", [140, 120, 160, 135, 145], False),  # a person typing
        ("1234567890", [80.0] * 9, False),  # a slow Zebra scanner: looks human (documented trade-off)
        # One slow USB poll and one Shift do not make a scan human: the median is used.
        ("Ab9ZxQ7mK2", [3, 3, 3, 40, 3, 3, 90, 3, 3], True),
        # One fast rollover pair does not make typing a scan.
        ("hello!", [150, 2, 160, 140, 2], False),
        ("abcdef", [], False),  # no timing at all
    ],
)
def test_looks_like_machine(text: str, gaps: list[float], expected: bool) -> None:
    assert looks_like_machine(frame(text, gaps), 15.0, 6) is expected


def test_limits_are_configurable() -> None:
    slow = frame("1234567890", [80.0] * 9)
    assert looks_like_machine(slow, max_median_gap_ms=100.0, min_chars=6)
    assert not looks_like_machine(frame("1234"), max_median_gap_ms=15.0, min_chars=6)
    assert looks_like_machine(frame("1234"), max_median_gap_ms=15.0, min_chars=4)


def test_median_gap() -> None:
    assert median_gap_ms((1 * MS, 3 * MS, 100 * MS)) == 3.0
    assert median_gap_ms(()) is None


def test_filter_passes_scans_and_device_problems_drops_typing_and_key_noise() -> None:
    out: list[Frame | Rejected] = []
    f = HumanFilter(out.append, 15.0, 6)
    scan = frame("134567890123456789")
    typed = frame("123456", [140, 120, 160, 135, 145])
    f(scan)
    f(typed)
    f(Rejected("kbd", "undecodable", "\ufffd", 0))  # a person pressing an arrow key
    f(Rejected("kbd", "device_removed", "1345", 0))
    assert out == [scan, Rejected("kbd", "device_removed", "1345", 0)]
    assert f.dropped == 2


def test_diagnose_a_clean_scan_has_no_warnings() -> None:
    assert diagnose(frame("134567890123456789"), channel="wechat") == []


def test_diagnose_warnings() -> None:
    slow = frame("134567890123456789", [40.0] * 17, ended_by="idle")
    warnings = diagnose(slow, channel="wechat", idle_gap_ms=50)
    assert any(w.startswith("no terminator") for w in warnings)
    assert any("inter-key gap 40 ms: reduce" in w for w in warnings)
    assert any("close to idle_gap_ms" in w for w in warnings)


def test_diagnose_capslock_case() -> None:
    lower = frame("e5c7a2f1b9d3")
    warnings = diagnose(lower, channel="unknown", upper_channel="health_card")
    assert any("CapsLock" in w for w in warnings)
    assert not any("CapsLock" in w for w in diagnose(lower, channel="unknown", upper_channel="unknown"))
    assert any("CapsLock" in w for w in diagnose(lower, notes={"capslock_on"}))


def test_diagnose_layout_suggestions() -> None:
    azerty = frame("&#$%^&*()&é\"'(-è_ç")
    warnings = diagnose(azerty, channel="unknown",
                        other_layouts={"fr": ("134567890123456789", "wechat"), "de": ("x", "unknown")})
    assert any('layout = "fr"' in w for w in warnings)
    # Without re-decoding (e.g. no raw events), the AZERTY digit row still gives the hint.
    assert any('French' in w for w in diagnose(frame("&é\"'(-è_çà"), channel="unknown"))


def test_diagnose_notes_and_shared_keyboard() -> None:
    notes = {"numlock_off", "alt_code_without_alt_numpad", "undecodable_key:103", "events_dropped"}
    warnings = diagnose(frame("2812345678901234"), channel="alipay", notes=notes)
    assert any("NumLock" in w for w in warnings)
    assert any("alt_numpad = true" in w for w in warnings)
    assert any("key code 103" in w for w in warnings)
    assert any("SYN_DROPPED" in w for w in warnings)
    human = diagnose(frame("123456", [140, 120, 160, 135, 145]), shared_keyboard=True)
    assert any("looks human" in w and "NOT be emitted" in w for w in human)
