"""Framing: terminators, idle gap, prefix/suffix, AIM ids, rejects; properties on any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.framing import Framer, FramingSpec, clean, parse_aim, rejection_reason
from scannerd.model import Frame, Rejected

MS = 1_000_000


def feed_all(framer: Framer, text: str, start: int = 0, gap_ns: int = MS) -> list[Frame | Rejected]:
    out: list[Frame | Rejected] = []
    t = start
    for ch in text:
        out += framer.feed_char(ch, t)
        t += gap_ns
    return out


@pytest.mark.parametrize(
    "terminator, stream, expected",
    [
        ("\r", "134567890123456789\r", ["134567890123456789"]),
        ("\n", "abc\n", ["abc"]),
        ("\r\n", "abc\r\ndef\r\n", ["abc", "def"]),
        ("\t", "RX0000000001\t", ["RX0000000001"]),
        # A CR-configured scanner that actually sends CRLF: the stray LF is not a scan.
        ("\r", "abc\r\ndef\r", ["abc", "def"]),
        # Double Enter: no empty frame.
        ("\r", "abc\r\r", ["abc"]),
    ],
)
def test_terminators(terminator: str, stream: str, expected: list[str]) -> None:
    framer = Framer("d", FramingSpec(terminator=terminator))
    frames = feed_all(framer, stream)
    assert [f.text for f in frames if isinstance(f, Frame)] == expected
    assert not any(isinstance(f, Rejected) for f in frames)


def test_idle_gap_ends_frame_without_terminator() -> None:
    framer = Framer("d", FramingSpec(terminator=None, idle_gap_ms=50))
    assert feed_all(framer, "12345", start=0) == []
    assert framer.deadline_ns() == 4 * MS + 50 * MS
    assert framer.flush(53 * MS) == []  # not yet
    (frame,) = framer.flush(54 * MS)
    assert isinstance(frame, Frame) and frame.text == "12345" and frame.ended_by == "idle"
    assert frame.first_ns == 0 and frame.last_ns == 4 * MS
    assert frame.gaps_ns == (MS, MS, MS, MS)


def test_idle_gap_before_next_character_splits_frames() -> None:
    framer = Framer("d", FramingSpec(terminator=None, idle_gap_ms=50))
    out = feed_all(framer, "111", start=0) + feed_all(framer, "222", start=500 * MS)
    assert [f.text for f in out if isinstance(f, Frame)] == ["111"]
    (last,) = framer.flush(10**12)
    assert isinstance(last, Frame) and last.text == "222"


def test_idle_gap_is_a_safety_net_with_terminator() -> None:
    # A read cut short (the scanner unplugged, characters lost) must not pass as a code.
    framer = Framer("d", FramingSpec(terminator="\r", idle_gap_ms=50))
    feed_all(framer, "280000000")
    (item,) = framer.flush(10**9)
    assert isinstance(item, Rejected) and item.reason == "no_terminator" and item.text == "280000000"
    # What comes next up to a terminator may be the rest of the cut read: never a code (11.3).
    (tail,) = feed_all(framer, "123456789\r", start=2 * 10**9)
    assert isinstance(tail, Rejected) and tail.reason == "partial_read" and tail.text == "123456789"
    # The read after that terminator is framed normally.
    (frame,) = feed_all(framer, "134567890123456789\r", start=3 * 10**9)
    assert isinstance(frame, Frame) and frame.text == "134567890123456789"


def test_prefix_suffix_aim_and_eci() -> None:
    spec = FramingSpec(prefix="<", suffix=">")
    sym, text = clean("<]Q1\\000026134567890123456789>", spec)
    assert (sym, text) == ("qr", "134567890123456789")
    # Prefix absent: nothing else is eaten.
    assert clean("]C0RX123>", spec) == ("code128", "RX123")


@pytest.mark.parametrize(
    "raw, symbology, data",
    [
        ("]Q1abc", "qr", "abc"),
        ("]Q3abc", "gs1_qr", "abc"),
        ("]C0abc", "code128", "abc"),
        ("]C1abc", "gs1_128", "abc"),
        ("]E06901234567892", "ean13", "6901234567892"),
        ("]E412345670", "ean8", "12345670"),
        ("]d2abc", "gs1_datamatrix", "abc"),
        ("]d1abc", "datamatrix", "abc"),
        ("]A0CODE39", "code39", "CODE39"),
        ("]I012345678", "itf", "12345678"),
        ("]z0x", "aztec", "x"),
        ("]L0x", "pdf417", "x"),
        ("]Zx", None, "]Zx"),  # not an AIM id: left alone
        ("]", None, "]"),
    ],
)
def test_aim(raw: str, symbology: str | None, data: str) -> None:
    assert parse_aim(raw) == (symbology, data)


def test_vendor_ids_when_no_aim() -> None:
    spec = FramingSpec(vendor_ids={"s": "qr", "j": "code128"})
    assert clean("s134567890123456789", spec) == ("qr", "134567890123456789")
    assert clean("]Q1abc", spec) == ("qr", "abc")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 513, "too_long"),
        ("abc\x00def", "non_printable"),
        ("abc\x1bdef", "non_printable"),
        ("ab\ufffdc", "undecodable"),
        ("01\x1d17250101", None),  # GS separates GS1 fields: data, not garbage
        ("青岛市市立医院", None),
    ],
)
def test_rejection_reasons(text: str, reason: str | None) -> None:
    assert rejection_reason(text, 512) == reason


def test_garbage_frame_becomes_reject_with_reason() -> None:
    framer = Framer("d", FramingSpec())
    (item,) = feed_all(framer, "12\x0734\r")
    assert isinstance(item, Rejected) and item.reason == "non_printable"


def test_runaway_input_is_rejected_without_unbounded_growth() -> None:
    framer = Framer("d", FramingSpec(max_length=16))
    out = feed_all(framer, "9" * 200)
    assert [x.reason for x in out if isinstance(x, Rejected)] == ["too_long"]
    assert len(framer._text) <= 16 + 64


def test_the_tail_of_a_runaway_read_is_never_a_scan_of_its_own() -> None:
    # Line noise or a stuck key followed by what looks like a payment code, in one read: the
    # tail must not come out as a WeChat code.
    framer = Framer("d", FramingSpec(max_length=512))
    out = feed_all(framer, "A" * 577 + "134567890123456789\r")
    assert [type(x).__name__ for x in out] == ["Rejected"]
    # The next read, after the terminator, is framed normally.
    out = feed_all(framer, "134567890123456789\r", start=10**9)
    assert [x.text for x in out if isinstance(x, Frame)] == ["134567890123456789"]


def test_runaway_without_terminator_ends_at_the_idle_gap() -> None:
    framer = Framer("d", FramingSpec(terminator=None, max_length=16, idle_gap_ms=50))
    out = feed_all(framer, "9" * 100 + "12345678")
    assert [type(x).__name__ for x in out] == ["Rejected"]
    assert framer.flush(10**12) == []
    out = feed_all(framer, "RX0000000001", start=2 * 10**12)
    (frame,) = framer.flush(3 * 10**12)
    assert isinstance(frame, Frame) and frame.text == "RX0000000001"


def test_abort_turns_partial_frame_into_reject() -> None:
    framer = Framer("d", FramingSpec())
    feed_all(framer, "13456")
    (r,) = framer.abort("device_removed", 0)
    assert r.reason == "device_removed" and r.text == "13456"
    assert framer.abort("device_removed", 0) == []


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=700),
    st.sampled_from(["\r", "\n", "\r\n", "\t", None]),
    st.integers(min_value=0, max_value=30),
)
def test_every_input_becomes_frames_or_rejects_never_an_exception(text: str, terminator: str | None, gap_ms: int) -> None:
    framer = Framer("d", FramingSpec(terminator=terminator, max_length=512))
    out = feed_all(framer, text, gap_ns=gap_ms * MS) + framer.flush(10**15)
    if gap_ms < 50 and terminator is not None and terminator not in text:
        # One burst with no terminator and no idle gap inside: at most one outcome.
        assert len(out) <= 1
    for item in out:
        if isinstance(item, Frame):
            assert rejection_reason(item.text, 512) is None
            assert item.text  # never an empty frame
        else:
            assert isinstance(item, Rejected) and item.reason
    assert not framer.pending


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=40), max_size=10))
def test_frames_round_trip_through_terminator(codes: list[str]) -> None:
    framer = Framer("d", FramingSpec(terminator="\r\n"))
    out = feed_all(framer, "".join(c + "\r\n" for c in codes))
    assert [f.text for f in out if isinstance(f, Frame)] == codes
