"""HID report descriptors → where a HID-POS scanner puts its code in a report. Pure.

`parse_descriptor` walks the items of a report descriptor (HID 1.11 §6.2.2: main, global and
local items, Push/Pop, report ids, collections) and lists every field of every report with its
usages and bit position. `find_pos_layout` then looks, in the input reports of an application
collection on the Bar Code Scanner page (0x008C; never the vendor page 0xFF8C some Honeywell
models expose beside it), for the usages HID-POS scanners declare:

    Byte Count                 Generic Desktop 0x01:0x3B   bytes of decoded data in this report
    Symbology Identifier 1-3   0x8C:0xFB-0xFD              the AIM id "]cm"
    Decoded Data               0x8C:0xFE                   the code's bytes, zero-padded
    Decode Data Continued      0x8C:0xFF                   1 bit: more reports follow

Where a descriptor lacks them, `fallback_layout` gives the published fixed layouts (Honeywell,
Zebra, Newland; see /work/shared/HIDPOS.md). All byte offsets in a PosLayout include the report-id
byte, as hidraw read() and a pyusb interrupt read return reports.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PAGE_GENERIC_DESKTOP = 0x0001
PAGE_BARCODE_SCANNER = 0x008C
PAGE_VENDOR_BARCODE = 0xFF8C  # Honeywell's vendor twin of 0x008C: reads nothing useful

USAGE_BARCODE_SCANNER = PAGE_BARCODE_SCANNER << 16 | 0x02
USAGE_BYTE_COUNT = PAGE_GENERIC_DESKTOP << 16 | 0x3B
USAGE_SYMBOLOGY_IDS = tuple(PAGE_BARCODE_SCANNER << 16 | u for u in (0xFB, 0xFC, 0xFD))
USAGE_DECODED_DATA = PAGE_BARCODE_SCANNER << 16 | 0xFE
USAGE_CONTINUED = PAGE_BARCODE_SCANNER << 16 | 0xFF
USAGE_GOOD_READ_BEEP = PAGE_BARCODE_SCANNER << 16 | 0x86
USAGE_ERROR_BEEP = PAGE_BARCODE_SCANNER << 16 | 0x85

_MAIN_INPUT, _MAIN_OUTPUT, _MAIN_COLLECTION, _MAIN_FEATURE, _MAIN_END = 0x8, 0x9, 0xA, 0xB, 0xC
_KINDS = {_MAIN_INPUT: "input", _MAIN_OUTPUT: "output", _MAIN_FEATURE: "feature"}
_COLLECTION_APPLICATION = 0x01
_FLAG_CONSTANT, _FLAG_VARIABLE = 0x01, 0x02
_MAX_USAGE_RANGE = 0x10000  # a Usage Minimum..Maximum wider than a page is a broken descriptor


class DescriptorError(ValueError):
    """A report descriptor that cannot be walked: names the byte offset and the problem."""

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        super().__init__(f"report descriptor byte {offset}: {message}")


@dataclass(frozen=True, slots=True)
class ReportField:
    """One Input/Output/Feature main item: `count` elements of `size` bits from `bit_offset`
    (counted from the first byte after the report id)."""

    kind: str  # input | output | feature
    report_id: int  # 0 when the descriptor declares no report ids
    bit_offset: int
    size: int
    count: int
    flags: int
    usages: tuple[int, ...]  # 32-bit usages (page << 16 | id), as declared
    application: int  # 32-bit usage of the enclosing application collection, 0 if none

    @property
    def constant(self) -> bool:
        return bool(self.flags & _FLAG_CONSTANT)

    @property
    def variable(self) -> bool:
        return bool(self.flags & _FLAG_VARIABLE)

    def element_usage(self, i: int) -> int:
        """The usage of element i: a variable field's usages map one to one, the last one
        repeating (HID 1.11 §6.2.2.8); an array field's elements are all of its usages' kind."""
        if not self.usages:
            return 0
        if not self.variable and len(self.usages) == 1:
            return self.usages[0]
        return self.usages[min(i, len(self.usages) - 1)]


@dataclass(frozen=True, slots=True)
class ReportDescriptor:
    fields: tuple[ReportField, ...]
    uses_report_ids: bool
    applications: tuple[int, ...]  # usages of the top-level application collections, in order

    def report_ids(self, kind: str) -> tuple[int, ...]:
        return tuple(sorted({f.report_id for f in self.fields if f.kind == kind}))

    def report_bytes(self, kind: str, report_id: int) -> int:
        """Length of a report as read or written, report-id byte included."""
        bits = max((f.bit_offset + f.size * f.count for f in self.fields
                    if f.kind == kind and f.report_id == report_id), default=0)
        return (bits + 7) // 8 + (1 if self.uses_report_ids else 0)

    def has_application(self, page: int) -> bool:
        return any(a >> 16 == page for a in self.applications)


@dataclass(frozen=True, slots=True)
class PosLayout:
    """Where one scanned-data report keeps its parts (byte offsets include the report-id byte).

    `report_id` None: reports carry no id byte. `length_prefixed`: Zebra "Simple COM Port
    Emulation" chunks (byte 0 the length, then the data, no end-of-scan mark)."""

    source: str  # descriptor | honeywell | zebra | newland | length_prefixed
    report_id: int | None
    data_offset: int
    data_length: int
    count_offset: int | None = None
    aim_offsets: tuple[int, ...] = ()
    continued: tuple[int, int] | None = None  # (byte offset, bit)
    code_id_offset: int | None = None  # the vendor's one-letter code id (Honeywell "s" = QR)
    length_prefixed: bool = False


@dataclass(frozen=True, slots=True)
class OutputReport:
    """An output report the scanner accepts, for feedback (beeps) and control."""

    report_id: int
    length: int  # report-id byte included
    good_beep: tuple[int, int] | None = None  # (byte offset, bit) of Good Read Beep
    error_beep: tuple[int, int] | None = None


@dataclass
class _Globals:
    usage_page: int = 0
    report_size: int = 0
    report_count: int = 0
    report_id: int = 0


@dataclass
class _Locals:
    minimum: int | None = None
    minimum_size: int = 0  # a 4-byte Usage Minimum carries its own page


def _items(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(offset, type, tag, size, unsigned value) of each short item; long items are skipped."""
    out: list[tuple[int, int, int, int, int]] = []
    i = 0
    while i < len(data):
        prefix = data[i]
        if prefix == 0xFE:  # long item: size byte, tag byte, data (no long items are defined)
            if i + 2 >= len(data):
                raise DescriptorError(i, "long item cut short")
            size = data[i + 1]
            if i + 3 + size > len(data):
                raise DescriptorError(i, f"long item of {size} bytes runs past the end")
            i += 3 + size
            continue
        size = (0, 1, 2, 4)[prefix & 3]
        if i + 1 + size > len(data):
            raise DescriptorError(i, f"item 0x{prefix:02x} needs {size} data byte(s), descriptor ends")
        value = int.from_bytes(data[i + 1: i + 1 + size], "little")
        out.append((i, prefix >> 2 & 3, prefix >> 4, size, value))
        i += 1 + size
    return out


def parse_descriptor(data: bytes) -> ReportDescriptor:
    """Walk a report descriptor. Raises DescriptorError for a truncated or inconsistent one."""
    glob = _Globals()
    stack: list[_Globals] = []
    local = _Locals()
    collections: list[tuple[int, int]] = []  # (type, usage) of open collections
    applications: list[int] = []
    offsets: dict[tuple[str, int], int] = {}
    fields: list[ReportField] = []
    uses_ids = False

    def full(usage: int, size: int) -> int:
        # A 1- or 2-byte usage takes the Usage Page in effect where it is declared, so one field
        # may mix pages (Byte Count 0x01:0x3B beside 0x8C usages).
        return usage if size == 4 else glob.usage_page << 16 | usage

    pending_usages: list[int] = []  # 32-bit usages until the main item

    for offset, itype, tag, size, value in _items(data):
        if itype == 0:  # main
            usages = pending_usages
            if tag in _KINDS:
                kind = _KINDS[tag]
                if glob.report_size * glob.report_count > 8 * 4096:
                    raise DescriptorError(offset, f"{kind} field of {glob.report_count}×{glob.report_size} bits is too large")
                key = (kind, glob.report_id)
                start = offsets.get(key, 0)
                app = next((u for t, u in collections if t == _COLLECTION_APPLICATION), 0)
                fields.append(ReportField(kind, glob.report_id, start, glob.report_size, glob.report_count,
                                          value, tuple(usages), app))
                offsets[key] = start + glob.report_size * glob.report_count
            elif tag == _MAIN_COLLECTION:
                usage = usages[0] if usages else 0
                collections.append((value, usage))
                if value == _COLLECTION_APPLICATION and len(collections) == 1:
                    applications.append(usage)
            elif tag == _MAIN_END:
                if not collections:
                    raise DescriptorError(offset, "End Collection without a Collection")
                collections.pop()
            else:
                raise DescriptorError(offset, f"unknown main item tag 0x{tag:x}")
            pending_usages = []
            local = _Locals()
        elif itype == 1:  # global
            if tag == 0x0:
                glob.usage_page = value & 0xFFFF
            elif tag == 0x7:
                glob.report_size = value
            elif tag == 0x8:
                if not 1 <= value <= 255:
                    raise DescriptorError(offset, f"report id {value} (expected 1-255)")
                glob.report_id = value
                uses_ids = True
            elif tag == 0x9:
                glob.report_count = value
            elif tag == 0xA:
                stack.append(_Globals(**vars(glob)))
            elif tag == 0xB:
                if not stack:
                    raise DescriptorError(offset, "Pop without Push")
                glob = stack.pop()
            # logical/physical extents, units: not needed to find bytes
        elif itype == 2:  # local
            if tag == 0x0:
                pending_usages.append(full(value, size))
            elif tag == 0x1:
                local.minimum, local.minimum_size = value, size
            elif tag == 0x2:
                if local.minimum is None:
                    raise DescriptorError(offset, "Usage Maximum without Usage Minimum")
                lo, hi = local.minimum & 0xFFFF, value & 0xFFFF
                if hi < lo or hi - lo > _MAX_USAGE_RANGE:
                    raise DescriptorError(offset, f"usage range 0x{lo:x}-0x{hi:x}")
                page = local.minimum >> 16 if local.minimum_size == 4 else glob.usage_page
                pending_usages.extend(page << 16 | u for u in range(lo, hi + 1))
                local.minimum = None
        else:
            raise DescriptorError(offset, "reserved item type 3")
    if collections:
        raise DescriptorError(len(data), f"{len(collections)} collection(s) not closed")
    return ReportDescriptor(tuple(fields), uses_ids, tuple(applications))


def _byte_elements(f: ReportField, usage: int) -> list[int]:
    """Bit offsets of the byte-aligned 8-bit elements of `f` with `usage`."""
    if f.size != 8:
        return []
    return [f.bit_offset + 8 * i for i in range(f.count)
            if f.element_usage(i) == usage and (f.bit_offset + 8 * i) % 8 == 0]


def find_pos_layout(desc: ReportDescriptor) -> PosLayout | None:
    """The scanned-data input report of a 0x008C application collection, or None."""
    base = 1 if desc.uses_report_ids else 0
    for report_id in desc.report_ids("input"):
        fields = [f for f in desc.fields if f.kind == "input" and f.report_id == report_id
                  and f.application >> 16 == PAGE_BARCODE_SCANNER and not f.constant]
        data_bits = [b for f in fields for b in _byte_elements(f, USAGE_DECODED_DATA)]
        if not data_bits:
            continue
        # The decoded data must be one run of bytes.
        data_bits.sort()
        if data_bits != list(range(data_bits[0], data_bits[0] + 8 * len(data_bits), 8)):
            continue
        count_bits = [b for f in fields for b in _byte_elements(f, USAGE_BYTE_COUNT)]
        aim: list[int] = []
        for usage in USAGE_SYMBOLOGY_IDS:
            aim.extend(base + b // 8 for f in fields for b in _byte_elements(f, usage)[:1])
        continued: tuple[int, int] | None = None
        for f in fields:
            for i in range(f.count):
                if f.element_usage(i) == USAGE_CONTINUED and f.size == 1:
                    bit = f.bit_offset + i
                    continued = (base + bit // 8, bit % 8)
                    break
            if continued:
                break
        return PosLayout(
            source="descriptor",
            report_id=report_id if desc.uses_report_ids else None,
            data_offset=base + data_bits[0] // 8,
            data_length=len(data_bits),
            count_offset=base + count_bits[0] // 8 if count_bits else None,
            aim_offsets=tuple(aim),
            continued=continued,
        )
    return None


def find_output_report(desc: ReportDescriptor) -> OutputReport | None:
    """The output report holding Good Read / Error Beep bits of a 0x008C collection, or None."""
    base = 1 if desc.uses_report_ids else 0
    for report_id in desc.report_ids("output"):
        good = error = None
        for f in desc.fields:
            if f.kind != "output" or f.report_id != report_id or f.application >> 16 != PAGE_BARCODE_SCANNER:
                continue
            for i in range(f.count):
                usage = f.element_usage(i)
                bit = f.bit_offset + f.size * i
                if f.size == 1 and usage == USAGE_GOOD_READ_BEEP:
                    good = (base + bit // 8, bit % 8)
                elif f.size == 1 and usage == USAGE_ERROR_BEEP:
                    error = (base + bit // 8, bit % 8)
        if good or error:
            return OutputReport(report_id, desc.report_bytes("output", report_id), good, error)
    return None


# --- fixed layouts of HIDPOS.md: input report 0x02, 64 bytes ----------------------------------

HONEYWELL = PosLayout("honeywell", 0x02, data_offset=5, data_length=56, count_offset=1,
                      aim_offsets=(2, 3, 4), continued=(63, 0), code_id_offset=61)
ZEBRA = PosLayout("zebra", 0x02, data_offset=6, data_length=56, count_offset=1,
                  aim_offsets=(3, 4, 5), continued=(63, 0))
NEWLAND = PosLayout("newland", 0x02, data_offset=2, data_length=56, count_offset=1,
                    continued=(63, 0), code_id_offset=62)
LENGTH_PREFIXED = PosLayout("length_prefixed", None, data_offset=1, data_length=63, count_offset=0,
                            length_prefixed=True)

_VENDOR_LAYOUTS = {"0c2e": HONEYWELL, "05e0": ZEBRA, "1eab": NEWLAND}


def fallback_layout(vid: str, pid: str = "") -> PosLayout:
    """The fixed layout for a vendor whose descriptor does not say (Honeywell's for others:
    Access-IS and most OEM engines use it)."""
    if (vid, pid) == ("05e0", "0600"):
        return LENGTH_PREFIXED  # Symbol "Simple COM Port Emulation"
    return _VENDOR_LAYOUTS.get(vid.lower(), HONEYWELL)


def layout_for(descriptor: bytes | None, vid: str = "", pid: str = "") -> tuple[PosLayout, str]:
    """The layout to read with and why: the descriptor's usages, else the vendor's fixed layout."""
    if descriptor:
        try:
            desc = parse_descriptor(descriptor)
        except DescriptorError as e:
            return fallback_layout(vid, pid), f"descriptor unreadable ({e}); fixed layout"
        found = find_pos_layout(desc)
        if found is not None:
            fixed = fallback_layout(vid, pid)
            if (found.data_offset, found.aim_offsets) == (fixed.data_offset, fixed.aim_offsets):
                # The vendor's layout: its code id byte sits on a vendor usage, where the fixed one says.
                found = replace(found, code_id_offset=fixed.code_id_offset)
            return found, "report descriptor"
        if not desc.uses_report_ids and not desc.has_application(PAGE_BARCODE_SCANNER) and (vid, pid) == ("05e0", "0600"):
            return LENGTH_PREFIXED, "length-prefixed chunks (no report ids)"
        return fallback_layout(vid, pid), "descriptor has no decoded-data usage; fixed layout"
    return fallback_layout(vid, pid), "no descriptor; fixed layout"


def is_pos_descriptor(descriptor: bytes) -> bool:
    """True when the descriptor has an application collection on page 0x008C (not 0xFF8C)."""
    try:
        return parse_descriptor(descriptor).has_application(PAGE_BARCODE_SCANNER)
    except DescriptorError:
        return False


__all__ = [
    "HONEYWELL", "LENGTH_PREFIXED", "NEWLAND", "ZEBRA", "DescriptorError", "OutputReport", "PosLayout",
    "ReportDescriptor", "ReportField", "fallback_layout", "find_output_report", "find_pos_layout",
    "is_pos_descriptor", "layout_for", "parse_descriptor",
]
