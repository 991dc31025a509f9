"""Reassembly of HID-POS reports into frames: multi-report codes, AIM ids, binary data, garbage."""

from __future__ import annotations

import pytest
from hidpos_fixtures import pos_reports
from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.framing import AUTO, FramingSpec
from scannerd.model import Frame, Rejected
from scannerd.sources.hid_descriptor import (
    HONEYWELL,
    LENGTH_PREFIXED,
    NEWLAND,
    ZEBRA,
    PosLayout,
)
from scannerd.sources.hid_reports import Reassembler, reassemble

MS = 1_000_000
SPEC = FramingSpec(terminator="\r", idle_gap_ms=200)
WECHAT = b"134567890123456789"


def timed(reports: list[bytes], start: int = 1000 * MS, step: int = 2 * MS) -> list[tuple[int, bytes]]:
    return [(start + i * step, r) for i, r in enumerate(reports)]


@pytest.mark.parametrize(("layout", "name"), [(HONEYWELL, "honeywell"), (ZEBRA, "zebra")])
def test_one_report_code_with_aim(layout: PosLayout, name: str) -> None:
    items = reassemble("w1", layout, SPEC, timed(pos_reports(WECHAT, name)))
    assert len(items) == 1
    frame = items[0]
    assert isinstance(frame, Frame)
    assert (frame.text, frame.symbology, frame.ended_by) == ("134567890123456789", "qr", "report")


def test_newland_aim_inside_the_data() -> None:
    items = reassemble("w1", NEWLAND, SPEC, timed(pos_reports(b"]Q1" + WECHAT, "newland")))
    assert [(i.text, i.symbology) for i in items if isinstance(i, Frame)] == [("134567890123456789", "qr")]


def test_code_over_three_reports_timed_first_to_last() -> None:
    code = bytes(range(0x30, 0x3A)) * 15  # 150 digits: 56 + 56 + 38
    reports = pos_reports(code, aim=b"]Q1")
    assert len(reports) == 3 and [r[63] for r in reports] == [1, 1, 0]
    r = Reassembler("w1", HONEYWELL, FramingSpec(terminator="\r", max_length=512))
    assert r.feed(reports[0], 10 * MS) == []
    assert r.feed(reports[1], 14 * MS) == []
    assert r.pending
    out = r.feed(reports[2], 19 * MS)
    assert len(out) == 1 and isinstance(out[0], Frame)
    assert out[0].text == code.decode()
    assert (out[0].first_ns, out[0].last_ns, out[0].scan_ms) == (10 * MS, 19 * MS, 9.0)
    assert r.last_scan is not None and r.last_scan.reports == 3
    assert not r.pending


def test_binary_data_keeps_nul_bytes_and_is_rejected_as_binary() -> None:
    data = b"AB\x00\x00CD\x00"  # trailing NUL is data too: the count says so
    r = Reassembler("w1", HONEYWELL, SPEC)
    out = r.feed(pos_reports(data)[0], MS)
    assert r.last_scan is not None and r.last_scan.data == data
    assert len(out) == 1 and isinstance(out[0], Rejected) and out[0].reason == "binary_data"


def test_binary_split_across_reports_keeps_every_byte() -> None:
    data = bytes(range(256)) * 2
    r = Reassembler("w1", HONEYWELL, FramingSpec(max_length=4096))
    for i, rep in enumerate(pos_reports(data)):
        r.feed(rep, i * MS)
    assert r.last_scan is not None and r.last_scan.data == data and r.last_scan.reports == 10


def test_prefix_suffix_and_terminator_stripped() -> None:
    spec = FramingSpec(terminator="\r", prefix="<", suffix=">")
    items = reassemble("w1", HONEYWELL, spec, timed(pos_reports(b"<" + WECHAT + b">\r")))
    assert [i.text for i in items] == ["134567890123456789"]


def test_auto_terminator_is_dropped_too() -> None:
    spec = FramingSpec(terminator=AUTO)
    items = reassemble("w1", HONEYWELL, spec, timed(pos_reports(WECHAT + b"\r\n") + pos_reports(WECHAT + b"\t")))
    assert [i.text for i in items] == [WECHAT.decode()] * 2


def test_vendor_code_id_when_no_aim() -> None:
    spec = FramingSpec(vendor_ids={"s": "qr"})
    items = reassemble("w1", HONEYWELL, spec, timed(pos_reports(WECHAT, aim=b"\0\0\0", code_id=ord("s"))))
    assert isinstance(items[0], Frame) and items[0].symbology == "qr"


def test_other_report_ids_and_empty_reports_are_not_scans() -> None:
    r = Reassembler("w1", HONEYWELL, SPEC)
    assert r.feed(bytes([0x04, 0x40]), MS) == []
    assert r.feed(b"", MS) == []
    assert r.ignored == 2
    assert r.feed(pos_reports(b"")[0], MS) == []  # count 0, not continued, nothing pending


@pytest.mark.parametrize(("report", "reason"), [
    (bytes([2, 57]) + bytes(62), "bad_byte_count"),  # more than 56 data bytes claimed
    (bytes([2, 20, 0x5D, 0x51, 0x31, 0x31]), "short_report"),  # count runs past the report's end
    (bytes([2]), "short_report"),
])
def test_broken_reports_are_rejects(report: bytes, reason: str) -> None:
    items = reassemble("w1", HONEYWELL, SPEC, [(MS, report)])
    assert [(type(i), i.reason) for i in items if isinstance(i, Rejected)] == [(Rejected, reason)]


def test_broken_report_mid_scan_drops_the_rest_of_that_scan() -> None:
    reports = pos_reports(b"9" * 150)
    broken = bytearray(reports[1])
    broken[1] = 99
    items = reassemble("w1", HONEYWELL, SPEC, timed([reports[0], bytes(broken), reports[2], *pos_reports(WECHAT)]))
    assert [(type(i).__name__, getattr(i, "reason", None)) for i in items] == [("Rejected", "bad_byte_count"), ("Frame", None)]
    assert items[1].text == WECHAT.decode()


def test_missing_last_report_is_a_reject_after_the_idle_gap() -> None:
    reports = pos_reports(b"7" * 100)
    r = Reassembler("w1", HONEYWELL, SPEC)
    r.feed(reports[0], 0)
    assert r.deadline_ns() == 200 * MS
    assert r.flush(199 * MS) == []
    out = r.flush(200 * MS)
    assert [(type(i), i.reason) for i in out if isinstance(i, Rejected)] == [(Rejected, "no_last_report")]


def test_abort_mid_scan() -> None:
    r = Reassembler("w1", HONEYWELL, SPEC)
    r.feed(pos_reports(b"7" * 100)[0], 0)
    out = r.abort("device_removed", MS)
    assert len(out) == 1 and isinstance(out[0], Rejected) and out[0].reason == "device_removed"
    assert out[0].text == "7" * 56
    assert r.abort("device_removed", MS) == []


def test_stuck_continued_bit_is_too_long() -> None:
    spec = FramingSpec(max_length=20)
    rep = pos_reports(b"1" * 112)[0]  # continued set, forever
    # The first report without the bit is the runaway scan's last: discarded with it.
    items = reassemble("w1", HONEYWELL, spec, timed([rep] * 5 + pos_reports(b"1" * 5) + pos_reports(WECHAT)))
    assert [getattr(i, "reason", "frame") for i in items] == ["too_long", "frame"]
    assert items[1].text == WECHAT.decode()


def test_length_prefixed_chunks_go_through_the_framer() -> None:
    chunks = [bytes([10]) + b"1345678901" + bytes(53), bytes([9]) + b"23456789\r" + bytes(54)]
    items = reassemble("z1", LENGTH_PREFIXED, SPEC, timed(chunks))
    assert [i.text for i in items] == ["134567890123456789"]
    assert reassemble("z1", LENGTH_PREFIXED, SPEC, [(0, bytes([70]) + bytes(63))])[0].reason == "bad_byte_count"  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * 10**9), st.binary(max_size=80)), max_size=30),
       st.sampled_from([HONEYWELL, ZEBRA, NEWLAND, LENGTH_PREFIXED]))
def test_any_reports_give_frames_or_rejects(reports: list[tuple[int, bytes]], layout: PosLayout) -> None:
    reports.sort(key=lambda r: r[0])
    items = reassemble("p", layout, SPEC, reports)
    for item in items:
        assert isinstance(item, (Frame, Rejected))
        if isinstance(item, Rejected):
            assert item.reason
        else:
            assert item.text and "\x00" not in item.text


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=400).filter(lambda b: b.strip()))
def test_any_printable_code_survives_reassembly(data: bytes) -> None:
    text = "".join(chr(0x21 + b % 94) for b in data).encode()
    items = reassemble("p", HONEYWELL, FramingSpec(max_length=512, aim=False), timed(pos_reports(text, aim=b"\0\0\0")))
    assert [i.text for i in items] == [text.decode()]
