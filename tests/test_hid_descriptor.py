"""The pure HID report-descriptor parser: layouts found by usage, the 0x008C-not-0xFF8C rule, fallbacks."""

from __future__ import annotations

import pytest
from hidpos_fixtures import (
    DUAL_PAGE_DESCRIPTOR,
    HONEYWELL_DESCRIPTOR,
    KEYBOARD_DESCRIPTOR,
    NEWLAND_DESCRIPTOR,
    VENDOR_ONLY_DESCRIPTOR,
    ZEBRA_DESCRIPTOR,
    collection,
    main,
    size_count,
    usage,
    usage_page,
)
from hypothesis import given
from hypothesis import strategies as st

from scannerd.sources.hid_descriptor import (
    HONEYWELL,
    LENGTH_PREFIXED,
    NEWLAND,
    ZEBRA,
    DescriptorError,
    fallback_layout,
    find_output_report,
    find_pos_layout,
    is_pos_descriptor,
    layout_for,
    parse_descriptor,
)


@pytest.mark.parametrize(("descriptor", "report_id", "count", "aim", "data", "continued"), [
    (HONEYWELL_DESCRIPTOR, 2, 1, (2, 3, 4), 5, (63, 0)),
    (ZEBRA_DESCRIPTOR, 2, 1, (3, 4, 5), 6, (63, 0)),
    (NEWLAND_DESCRIPTOR, 2, 1, (), 2, (63, 0)),
    (DUAL_PAGE_DESCRIPTOR, 3, 1, (2, 3, 4), 5, (63, 0)),  # the 0x008C collection, not the 0xFF8C one
], ids=["honeywell", "zebra", "newland", "dual-page"])
def test_layout_found_by_usage(descriptor: bytes, report_id: int, count: int, aim: tuple[int, ...], data: int,
                               continued: tuple[int, int]) -> None:
    layout = find_pos_layout(parse_descriptor(descriptor))
    assert layout is not None
    assert (layout.source, layout.report_id, layout.count_offset, layout.aim_offsets, layout.data_offset,
            layout.data_length, layout.continued) == ("descriptor", report_id, count, aim, data, 56, continued)


def test_descriptor_layouts_agree_with_the_published_fixed_ones() -> None:
    for descriptor, fixed in ((HONEYWELL_DESCRIPTOR, HONEYWELL), (ZEBRA_DESCRIPTOR, ZEBRA), (NEWLAND_DESCRIPTOR, NEWLAND)):
        found = find_pos_layout(parse_descriptor(descriptor))
        assert found is not None
        assert (found.report_id, found.count_offset, found.aim_offsets, found.data_offset, found.continued) == (
            fixed.report_id, fixed.count_offset, fixed.aim_offsets, fixed.data_offset, fixed.continued)


def test_report_sizes_and_applications() -> None:
    desc = parse_descriptor(HONEYWELL_DESCRIPTOR)
    assert desc.uses_report_ids
    assert desc.applications == (0x008C0002,)
    assert desc.report_bytes("input", 2) == 64
    assert desc.report_bytes("output", 0xFD) == 64
    dual = parse_descriptor(DUAL_PAGE_DESCRIPTOR)
    assert dual.applications == (0xFF8C0002, 0x008C0002)


def test_vendor_page_only_and_keyboard_are_not_pos() -> None:
    assert find_pos_layout(parse_descriptor(VENDOR_ONLY_DESCRIPTOR)) is None
    assert not is_pos_descriptor(VENDOR_ONLY_DESCRIPTOR)
    assert not is_pos_descriptor(KEYBOARD_DESCRIPTOR)
    assert is_pos_descriptor(HONEYWELL_DESCRIPTOR) and is_pos_descriptor(DUAL_PAGE_DESCRIPTOR)
    kbd = parse_descriptor(KEYBOARD_DESCRIPTOR)
    assert not kbd.uses_report_ids and kbd.report_bytes("input", 0) == 8


def test_output_report_beep_bits() -> None:
    out = find_output_report(parse_descriptor(HONEYWELL_DESCRIPTOR))
    assert out is not None
    # Honeywell output report 4: 0x40 good beep, 0x20 error beep (bits 6 and 5 of byte 1).
    assert (out.report_id, out.length, out.good_beep, out.error_beep) == (4, 2, (1, 6), (1, 5))
    assert find_output_report(parse_descriptor(ZEBRA_DESCRIPTOR)) is None


def test_usage_range_and_mixed_pages_in_one_field() -> None:
    # Byte Count (0x01:0x3B) declared in the same field list as 0x8C usages, pages switched between.
    d = (usage_page(0x8C) + usage(0x02) + collection(1) + usage_page(0x01) + usage(0x3B) + usage_page(0x8C)
         + usage(0xFB) + size_count(8, 2) + main("input", 2) + usage(0xFE) + size_count(8, 8) + main("input", 2)
         + usage_page(0x8C) + bytes([0x19, 0xFF, 0x29, 0xFF]) + size_count(1, 1) + main("input", 2)
         + size_count(7, 1) + main("input", 3) + bytes([0xC0]))
    layout = find_pos_layout(parse_descriptor(d))
    assert layout is not None
    assert (layout.report_id, layout.count_offset, layout.aim_offsets, layout.data_offset, layout.data_length,
            layout.continued) == (None, 0, (1,), 2, 8, (10, 0))


@pytest.mark.parametrize(("data", "message"), [
    (bytes([0x05]), "needs 1 data byte"),
    (bytes([0xA1, 0x01]), "not closed"),
    (bytes([0xC0]), "End Collection without"),
    (bytes([0xB4]), "Pop without Push"),
    (bytes([0x85, 0x00]), "report id 0"),
    (bytes([0x29, 0x05]), "Usage Maximum without"),
    (bytes([0xFE, 0x05, 0x10, 0x00]), "long item"),
    (bytes([0x0C]), "reserved item type"),
])
def test_broken_descriptors_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(DescriptorError, match=message):
        parse_descriptor(data)


def test_fallbacks_by_vendor() -> None:
    assert fallback_layout("0c2e") is HONEYWELL
    assert fallback_layout("05e0") is ZEBRA
    assert fallback_layout("1eab") is NEWLAND
    assert fallback_layout("05e0", "0600") is LENGTH_PREFIXED
    assert fallback_layout("1234") is HONEYWELL
    assert layout_for(None, "05e0")[0] is ZEBRA
    layout, why = layout_for(b"\x05", "1eab")
    assert layout is NEWLAND and why.startswith("descriptor unreadable (report descriptor byte 0: item 0x05 needs")
    layout, why = layout_for(HONEYWELL_DESCRIPTOR, "0c2e", "0967")
    assert why == "report descriptor" and layout.code_id_offset == 61  # the vendor's code id kept
    assert layout_for(KEYBOARD_DESCRIPTOR, "05e0", "0600")[0] is LENGTH_PREFIXED


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_descriptor_error(data: bytes) -> None:
    try:
        desc = parse_descriptor(data)
    except DescriptorError:
        return
    find_pos_layout(desc)
    find_output_report(desc)
    layout_for(data, "0c2e")
