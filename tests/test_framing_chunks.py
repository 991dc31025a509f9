"""The chunk framer: a read framed at once equals the same read fed in any split (17.2);
terminator auto (12.4); an idle cut never lets the tail pass (11.3); multibyte characters cut by
a frame boundary are rejects (11.5)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.framing import AUTO, AUTO_FORGET_AFTER, Framer, FramingSpec, Terminator
from scannerd.model import Frame, Rejected

MS = 1_000_000
TERMINATOR_CHOICES: list[Terminator] = ["\r", "\n", "\r\n", "\t", None, AUTO]
# Digits, letters, every terminator, a GS, a control character and a CJK character.
ALPHABET = "0123456789AQ]\r\n\t\x1d\x07青"


def split_points(draw: st.DrawFn, n: int) -> list[int]:
    cuts = draw(st.lists(st.integers(min_value=0, max_value=n), max_size=12))
    return sorted(set(cuts) | {0, n})


def run_reads(framer: Framer, reads: list[tuple[str, int]]) -> list[Frame | Rejected]:
    out: list[Frame | Rejected] = []
    for chunk, t in reads:
        out += framer.feed(chunk, t)
    return out + framer.flush(10**15)


@st.composite
def reads_and_splits(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """A sequence of timed reads, and the same characters with each read cut at random points."""
    whole: list[tuple[str, int]] = []
    split: list[tuple[str, int]] = []
    t = 0
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        text = draw(st.text(alphabet=ALPHABET, max_size=120))
        t += draw(st.sampled_from([0, 1, 20, 49, 51, 500])) * MS
        whole.append((text, t))
        points = split_points(draw, len(text))
        split += [(text[a:b], t) for a, b in itertools.pairwise(points)]
    return whole, split


@settings(max_examples=400, deadline=None)
@given(reads_and_splits(), st.sampled_from(TERMINATOR_CHOICES), st.sampled_from([8, 40, 512]))
def test_a_read_in_one_chunk_frames_like_the_same_read_in_random_splits(
    reads: tuple[list[tuple[str, int]], list[tuple[str, int]]], terminator: Terminator, max_length: int
) -> None:
    whole, split = reads
    spec = FramingSpec(terminator=terminator, max_length=max_length, idle_gap_ms=50)
    assert run_reads(Framer("d", spec), whole) == run_reads(Framer("d", spec), split)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=700), st.sampled_from(TERMINATOR_CHOICES), st.sampled_from([8, 512]))
def test_a_read_in_one_chunk_frames_like_the_same_read_byte_by_byte(text: str, terminator: Terminator, max_length: int) -> None:
    spec = FramingSpec(terminator=terminator, max_length=max_length)
    one = Framer("d", spec)
    by_char = Framer("d", spec)
    chunked = one.feed(text, 7 * MS) + one.flush(10**15)
    single: list[Frame | Rejected] = []
    for ch in text:
        single += by_char.feed_char(ch, 7 * MS)
    assert chunked == single + by_char.flush(10**15)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ALPHABET), st.sampled_from([0, 1, 8, 30, 51, 300])), max_size=200),
       st.sampled_from(TERMINATOR_CHOICES))
def test_a_timed_batch_frames_like_its_characters_one_at_a_time(keys: list[tuple[str, int]], terminator: Terminator) -> None:
    """Key-event batches (one time per character, idle gaps inside) against per-character feeding."""
    spec = FramingSpec(terminator=terminator, idle_gap_ms=50)
    t, chars, times = 0, "", []
    for ch, gap_ms in keys:
        t += gap_ms * MS
        chars += ch
        times.append(t)
    batch = Framer("d", spec)
    per_char = Framer("d", spec)
    out_batch = batch.feed_timed(chars, times) + batch.flush(10**15)
    out_single: list[Frame | Rejected] = []
    for ch, ti in zip(chars, times, strict=True):
        out_single += per_char.feed_char(ch, ti)
    assert out_batch == out_single + per_char.flush(10**15)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="09AZ\r\t青岛市医保码€", max_size=80), st.sampled_from(["utf-8", "gbk"]),
       st.sampled_from(TERMINATOR_CHOICES), st.data())
def test_bytes_in_one_read_frame_like_the_same_bytes_in_random_splits(
    text: str, encoding: str, terminator: Terminator, data: st.DataObject
) -> None:
    raw = text.encode(encoding, errors="replace")
    spec = FramingSpec(terminator=terminator)
    whole = Framer("d", spec, encoding=encoding)
    split = Framer("d", spec, encoding=encoding)
    points = data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=10))
    cuts = sorted(set(points) | {0, len(raw)})
    out_split: list[Frame | Rejected] = []
    for a, b in itertools.pairwise(cuts):
        out_split += split.feed_bytes(raw[a:b], 5 * MS)
    assert whole.feed_bytes(raw, 5 * MS) + whole.flush(10**15) == out_split + split.flush(10**15)


# --- terminator auto (12.4) --------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["\r", "\n", "\r\n", "\t"])
def test_auto_ends_a_frame_at_whichever_terminator_the_scanner_sends(suffix: str) -> None:
    framer = Framer("d", FramingSpec(terminator=AUTO))
    codes = ["134567890123456789", "]Q1280123456789012345", "RX0000000001"]
    out = framer.feed("".join(c + suffix for c in codes), 0)
    assert [(type(f).__name__, f.text) for f in out] == [
        ("Frame", "134567890123456789"), ("Frame", "280123456789012345"), ("Frame", "RX0000000001")]
    assert all(isinstance(f, Frame) and f.ended_by == "terminator" for f in out)
    assert framer.flush(10**15) == []  # CRLF is one frame, not a frame and an empty one


def test_auto_crlf_split_between_its_cr_and_lf_is_still_one_frame() -> None:
    framer = Framer("d", FramingSpec(terminator=AUTO, idle_gap_ms=50))
    (frame,) = framer.feed("134567890123456789\r", 0)
    assert isinstance(frame, Frame)
    assert framer.feed("\n", 300 * MS) == [] and framer.flush(10**15) == []


def test_auto_before_any_terminator_an_idle_ended_read_is_a_frame() -> None:
    framer = Framer("d", FramingSpec(terminator=AUTO, idle_gap_ms=50))
    assert framer.feed("134567890123456789", 0) == []
    (frame,) = framer.flush(60 * MS)
    assert isinstance(frame, Frame) and frame.text == "134567890123456789" and frame.ended_by == "idle"


def test_auto_once_a_terminator_was_seen_an_idle_cut_is_a_reject_and_its_tail_too() -> None:
    framer = Framer("d", FramingSpec(terminator=AUTO, idle_gap_ms=50))
    assert isinstance(framer.feed("RX0000000001\t", 0)[0], Frame)
    assert framer.feed("13456789", 1000 * MS) == []
    (head,) = framer.flush(1100 * MS)
    assert isinstance(head, Rejected) and head.reason == "no_terminator"
    (tail,) = framer.feed("0123456789\t", 1300 * MS)
    assert isinstance(tail, Rejected) and tail.reason == "partial_read"
    (frame,) = framer.feed("134567890123456789\t", 2000 * MS)
    assert isinstance(frame, Frame) and frame.text == "134567890123456789"


def test_auto_forgets_the_terminator_of_a_scanner_reprogrammed_to_send_none() -> None:
    framer = Framer("d", FramingSpec(terminator=AUTO, idle_gap_ms=50))
    framer.feed("RX0000000001\r", 0)
    t = 0
    reasons = []
    for _ in range(AUTO_FORGET_AFTER):
        t += 1000 * MS
        framer.feed("RX0000000002", t)
        reasons += [x.reason for x in framer.flush(t + 60 * MS) if isinstance(x, Rejected)]
    assert reasons == ["no_terminator"] * AUTO_FORGET_AFTER
    framer.feed("RX0000000003", t + 1000 * MS)
    (frame,) = framer.flush(t + 1100 * MS)
    assert isinstance(frame, Frame) and frame.ended_by == "idle" and frame.text == "RX0000000003"


def test_explicit_terminator_idle_read_is_still_no_terminator() -> None:
    framer = Framer("d", FramingSpec(terminator="\t", idle_gap_ms=50))
    framer.feed("RX0000000001", 0)
    (r,) = framer.flush(60 * MS)
    assert isinstance(r, Rejected) and r.reason == "no_terminator"


# --- an idle cut never passes as a code (11.3) ----------------------------------------------------

@pytest.mark.parametrize("terminator", ["\r", "\r\n", AUTO])
def test_a_read_stalled_past_the_idle_gap_gives_rejects_and_no_scan(terminator: Terminator) -> None:
    framer = Framer("d", FramingSpec(terminator=terminator, idle_gap_ms=50))
    end = "\r\n" if terminator == "\r\n" else "\r"
    framer.feed("RX0000000001" + end, 0)  # auto learns that this scanner terminates its reads
    code = "1" * 48
    out = framer.feed(code[:12], 1000 * MS)
    out += framer.feed(code[12:] + end, 1200 * MS)  # the loop stalled 200 ms mid-code
    out += framer.flush(10**15)
    assert [(type(x).__name__, getattr(x, "reason", None), x.text) for x in out] == [
        ("Rejected", "no_terminator", code[:12]), ("Rejected", "partial_read", code[12:])]


def test_the_tail_after_an_idle_cut_stays_a_reject_across_further_gaps() -> None:
    framer = Framer("d", FramingSpec(terminator="\r", idle_gap_ms=50))
    framer.feed("111", 0)
    framer.feed("222", 100 * MS)  # idle cut before: "111" no_terminator
    framer.feed("333\r", 200 * MS)  # another gap: "222" no_terminator; "333" is a tail
    out = framer.flush(10**15)
    assert out == []
    (frame,) = framer.feed("444\r", 10**16)
    assert isinstance(frame, Frame) and frame.text == "444"


def test_abort_starts_the_stream_clean() -> None:
    framer = Framer("d", FramingSpec(terminator="\r", idle_gap_ms=50))
    framer.feed("111", 0)
    framer.flush(100 * MS)  # a cut: the next frame would be a tail
    framer.feed("22", 200 * MS)
    (r,) = framer.abort("device_removed", 210 * MS)
    assert r.reason == "device_removed"
    (frame,) = framer.feed("333\r", 10**12)  # after a replug the first scan is whole
    assert isinstance(frame, Frame) and frame.text == "333"


# --- multibyte characters (11.5) -------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
@pytest.mark.parametrize("terminator", [None, AUTO])
def test_a_read_ending_inside_a_multibyte_character_is_a_reject(encoding: str, terminator: Terminator) -> None:
    framer = Framer("d", FramingSpec(terminator=terminator, idle_gap_ms=50), encoding=encoding)
    data = "P张三医保".encode(encoding)
    cut = len("P张".encode(encoding)) + 1  # inside 三
    assert framer.feed_bytes(data[:cut], 0) == []
    (r,) = framer.flush(100 * MS)
    assert isinstance(r, Rejected) and r.reason == "partial_character" and r.text == "P张"
    # The rest of the character starts the next read: it never glues onto it as a whole character.
    framer.feed_bytes(data[cut:], 200 * MS)
    (nxt,) = framer.flush(300 * MS)
    assert isinstance(nxt, Rejected) and nxt.reason in {"undecodable", "partial_read"}
    # And a clean read after that is a frame again.
    framer.feed_bytes("P李四".encode(encoding), 400 * MS)
    (frame,) = framer.flush(500 * MS)
    assert isinstance(frame, Frame) and frame.text == "P李四"


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_a_multibyte_character_split_across_reads_inside_one_frame_is_whole(encoding: str) -> None:
    framer = Framer("d", FramingSpec(terminator="\r", idle_gap_ms=50), encoding=encoding)
    data = "01,10,青岛市,12345\r".encode(encoding)
    out: list[Frame | Rejected] = []
    for i in range(len(data)):  # every byte its own read, 1 ms apart
        out += framer.feed_bytes(data[i : i + 1], i * MS)
    (frame,) = out
    assert isinstance(frame, Frame) and frame.text == "01,10,青岛市,12345"


def test_feed_bytes_needs_an_encoding() -> None:
    with pytest.raises(ValueError, match="encoding"):
        Framer("d", FramingSpec()).feed_bytes(b"x", 0)
