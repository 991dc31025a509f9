"""Recorded key-event streams (tests/fixtures/keys) through the decoder and framer, as replay runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from scannerd.framing import AUTO, FramingSpec
from scannerd.model import Frame, Rejected
from scannerd.sources.evdev_wedge import Abort, EventDecoder, Typed, decode_events, map_kernel_time
from scannerd.sources.keymap import EV_KEY, EV_SYN, KEY_1, SYN_DROPPED, SYN_REPORT, get_layout
from scannerd.sources.recording import read_recording, replay

KEYS = Path(__file__).parent / "fixtures" / "keys"


def run(name: str, **spec_kw: object) -> list[tuple[str, str, str]]:
    """(kind, text, how) per result: kind scan/reject, how = ended_by or reason."""
    rec = read_recording(str(KEYS / name))
    spec = FramingSpec(**spec_kw)  # type: ignore[arg-type]
    out = []
    for r in replay(rec, spec, alt_numpad="alt_numpad" in name):
        item = r.item
        if isinstance(item, Frame):
            out.append(("scan", item.text, item.ended_by))
        else:
            out.append(("reject", item.text, item.reason))
    return out


@pytest.mark.parametrize(
    ("fixture", "spec", "expected"),
    [
        ("us_digits_enter.jsonl", {}, [("scan", "134567890123456789", "terminator")]),
        ("us_shift_mixed.jsonl", {}, [("scan", "Ab9ZxQ7mK2", "terminator")]),
        ("us_capslock_toggle.jsonl", {}, [("scan", "ABC123def", "terminator")]),
        ("keypad_numlock_on.jsonl", {}, [("scan", "6212345678901234567", "terminator")]),
        ("keypad_numlock_off.jsonl", {}, [("scan", "2812345678901234", "terminator")]),
        ("tab_terminator.jsonl", {"terminator": "\t"}, [("scan", "280123456789012345", "terminator")]),
        # The held key is one character; a 1 s idle gap keeps the 300 ms hold inside one read.
        ("key_repeat.jsonl", {"idle_gap_ms": 1000}, [("scan", "12345678", "terminator")]),
        # Offline, a stream that just stops ends at the idle gap without its Enter: a reject,
        # never a partial code (live, the unplug makes it device_removed).
        ("cut_mid_scan.jsonl", {}, [("reject", "134567890", "no_terminator")]),
        ("syn_dropped.jsonl", {}, [("reject", "2812345", "events_dropped"), ("scan", "281234567890123456", "terminator")]),
        ("de_layout.jsonl", {}, [("scan", "QRZ-2024/Y", "terminator")]),
        ("fr_layout.jsonl", {}, [("scan", "134567890123456789", "terminator")]),
        ("uk_layout.jsonl", {}, [("scan", 'A@B"#1', "terminator")]),
        ("alt_numpad_gbk.jsonl", {}, [("scan", "P张三1", "terminator")]),
        ("no_terminator.jsonl", {"terminator": None},
         [("scan", "134567890123456789", "idle"), ("scan", "6212345678901234567", "idle")]),
    ],
)
def test_fixture(fixture: str, spec: dict[str, object], expected: list[tuple[str, str, str]]) -> None:
    assert run(fixture, **spec) == expected


def test_scan_timing_comes_from_the_event_times() -> None:
    rec = read_recording(str(KEYS / "us_digits_enter.jsonl"))
    (result,) = replay(rec, FramingSpec())
    frame = result.item
    assert isinstance(frame, Frame)
    # 18 characters, 8 ms apart: 17 gaps of exactly 8 ms, 136 ms from first to last key.
    assert frame.gaps_ns == (8_000_000,) * 17
    assert frame.scan_ms == pytest.approx(136.0)


def test_wrong_layout_gives_the_classic_symptoms() -> None:
    fr = read_recording(str(KEYS / "fr_layout.jsonl"))
    (r,) = replay(fr, FramingSpec(), layout="us")
    assert isinstance(r.item, Frame) and r.item.text == "!#$%^&*()!@#$%^&*("
    de = read_recording(str(KEYS / "de_layout.jsonl"))
    (r,) = replay(de, FramingSpec(), layout="us")
    assert isinstance(r.item, Frame) and r.item.text == "QRY/2024&Z"


def test_decoder_notes_what_a_technician_should_know() -> None:
    rec = read_recording(str(KEYS / "keypad_numlock_off.jsonl"))
    (r,) = replay(rec, FramingSpec())
    assert {"keypad_digits", "numlock_off"} <= r.notes
    rec = read_recording(str(KEYS / "alt_numpad_gbk.jsonl"))
    (r,) = replay(rec, FramingSpec())  # alt_numpad not enabled
    assert isinstance(r.item, Rejected) and r.item.reason == "undecodable"
    assert "alt_code_without_alt_numpad" in r.notes


def test_shared_keyboard_replay_drops_human_typing() -> None:
    rec = read_recording(str(KEYS / "human_typing.jsonl"))
    assert [r.item.text for r in replay(rec, FramingSpec())] == list("123456")  # each key alone: idle frames
    assert replay(rec, FramingSpec(), shared_keyboard=True) == []
    assert replay(rec, FramingSpec(idle_gap_ms=1000), shared_keyboard=True) == []
    scan = read_recording(str(KEYS / "us_digits_enter.jsonl"))
    assert len(replay(scan, FramingSpec(), shared_keyboard=True)) == 1


def test_syn_dropped_discards_until_syn_report_and_the_rest_of_the_burst() -> None:
    us = get_layout("us")
    ms = 1_000_000
    events = [
        (EV_KEY, KEY_1, 1, 0), (EV_SYN, SYN_REPORT, 0, 0),
        (EV_SYN, SYN_DROPPED, 0, 1 * ms),
        (EV_KEY, KEY_1 + 1, 1, 2 * ms),  # before SYN_REPORT: discarded by the kernel's rule
        (EV_SYN, SYN_REPORT, 0, 2 * ms),
        (EV_KEY, KEY_1 + 2, 1, 3 * ms),  # same burst: a fragment of the cut code, skipped
        (EV_KEY, KEY_1 + 3, 1, 200 * ms),  # after an idle gap: a new scan
    ]
    assert decode_events(us, events) == [Typed("1", 0), Abort("events_dropped", 1 * ms), Typed("4", 200 * ms)]


def test_syn_dropped_forgets_a_held_shift() -> None:
    dec = EventDecoder(get_layout("us"))
    dec.feed(EV_KEY, 42, 1, 0)  # Left Shift down; its release is lost in the overflow
    dec.feed(EV_SYN, SYN_DROPPED, 0, 1)
    dec.feed(EV_SYN, SYN_REPORT, 0, 2)
    assert dec.feed(EV_KEY, 30, 1, 500_000_000) == [Typed("a", 500_000_000)]


@pytest.mark.parametrize(
    ("t", "mono", "real", "expected"),
    [
        (995, 1000, 10_000_000, 995),  # already CLOCK_MONOTONIC (EVIOCSCLOCKID worked)
        (9_999_990, 1000, 10_000_000, 990),  # CLOCK_REALTIME: shifted onto the monotonic clock
        (1010, 1000, 10_000_000, 1000),  # never in the future
    ],
)
def test_map_kernel_time(t: int, mono: int, real: int, expected: int) -> None:
    assert map_kernel_time(t, mono, real) == expected


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("us_digits_enter.jsonl", [("scan", "134567890123456789", "terminator")]),  # CR (Enter)
        ("lf_terminator.jsonl", [("scan", "134567890123456789", "terminator")]),  # LF (Ctrl+J)
        ("crlf_terminator.jsonl", [("scan", "6212345678901234567", "terminator"), ("scan", "RX0000000001", "terminator")]),
        ("tab_terminator.jsonl", [("scan", "280123456789012345", "terminator")]),
        # Nothing ends these reads but the idle gap: auto makes them frames, not rejects.
        ("no_terminator.jsonl", [("scan", "134567890123456789", "idle"), ("scan", "6212345678901234567", "idle")]),
    ],
)
def test_terminator_auto_frames_every_common_suffix(fixture: str, expected: list[tuple[str, str, str]]) -> None:
    assert run(fixture, terminator=AUTO) == expected


@pytest.mark.parametrize("fixture", ["lf_terminator.jsonl", "tab_terminator.jsonl"])
def test_an_explicit_cr_on_a_scanner_with_another_suffix_rejects_instead_of_guessing(fixture: str) -> None:
    assert all(kind == "reject" for kind, _text, _how in run(fixture, terminator="\r"))
