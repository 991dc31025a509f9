"""HID-POS test data built from the usage tables (HIDPOS.md): no real 0x8C descriptor has been
published byte for byte, so these are written item by item, the way a scanner's firmware declares
them. Used by tests/test_hid*.py and by the VM rig's gadget (tests/vm/guest)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def item(kind: str, tag: int, value: int | None = None, size: int | None = None) -> bytes:
    """One short item: kind main|global|local, its tag, an unsigned value in 0/1/2/4 bytes."""
    itype = {"main": 0, "global": 1, "local": 2}[kind]
    if value is None:
        size = 0
    elif size is None:
        size = 1 if value <= 0xFF else 2 if value <= 0xFFFF else 4
    code = {0: 0, 1: 1, 2: 2, 4: 3}[size]
    data = b"" if value is None else value.to_bytes(size, "little")
    return bytes([tag << 4 | itype << 2 | code]) + data


def usage_page(p: int) -> bytes:
    return item("global", 0x0, p, 2 if p > 0xFF else 1)


def usage(u: int) -> bytes:
    return item("local", 0x0, u)


def report_id(i: int) -> bytes:
    return item("global", 0x8, i)


def size_count(size: int, count: int) -> bytes:
    return item("global", 0x7, size) + item("global", 0x9, count)


def logical(lo: int, hi: int) -> bytes:
    return item("global", 0x1, lo) + item("global", 0x2, hi, 2 if hi > 0x7F else 1)


def main(kind: str, flags: int) -> bytes:
    return item("main", {"input": 0x8, "output": 0x9, "feature": 0xB}[kind], flags)


def collection(kind: int) -> bytes:
    return item("main", 0xA, kind)


END = item("main", 0xC)
DATA_VAR, CONST = 0x02, 0x03


def _pad_bytes(n: int, kind: str = "input") -> bytes:
    return size_count(8, n) + main(kind, CONST)


def pos_descriptor(layout: str = "honeywell", page: int = 0x8C, rid: int = 2, with_output: bool = True) -> bytes:
    """An application collection on `page` with input report `rid` in the given vendor layout
    (64 bytes with the id: count, [pad], AIM, 56 data bytes, vendor bytes, continued bit), and
    Honeywell's output reports 4 (trigger/beep bits) and 0xFD (menu command) when with_output."""
    body = report_id(rid) + usage(0x12) + collection(0x02)
    body += usage_page(0x01) + usage(0x3B) + logical(0, 255) + size_count(8, 1) + main("input", DATA_VAR)
    body += usage_page(page)
    if layout == "zebra":
        body += _pad_bytes(1)
    if layout in ("honeywell", "zebra"):
        body += usage(0xFB) + usage(0xFC) + usage(0xFD) + size_count(8, 3) + main("input", DATA_VAR)
    body += usage(0xFE) + size_count(8, 56) + item("main", 0x8, 0x0102, 2)  # Data,Var,Abs,Buffered Bytes
    vendor = {"honeywell": 2, "zebra": 1, "newland": 1}[layout]
    if layout == "newland":
        body += _pad_bytes(4)
    body += usage_page(0xFF66) + usage(0x01) + size_count(8, vendor) + main("input", DATA_VAR)
    body += usage_page(page) + usage(0xFF) + logical(0, 1) + size_count(1, 1) + main("input", DATA_VAR)
    body += size_count(7, 1) + main("input", CONST) + END
    if with_output:
        # Output report 4: bit 1 untrigger, bit 2 trigger (Initiate Read), bit 5 error beep,
        # bit 6 good-read beep; the other bits constant.
        body += report_id(4) + logical(0, 1) + size_count(1, 1) + main("output", CONST)
        body += usage_page(0xFF66) + usage(0x02) + size_count(1, 1) + main("output", DATA_VAR)
        body += usage_page(page) + usage(0x60) + size_count(1, 1) + main("output", DATA_VAR)
        body += size_count(1, 2) + main("output", CONST)
        body += usage(0x85) + usage(0x86) + size_count(1, 2) + main("output", DATA_VAR)
        body += size_count(1, 1) + main("output", CONST)
        # Output report 0xFD: a raw menu command, 63 bytes.
        body += report_id(0xFD) + usage_page(0xFF66) + usage(0x03) + logical(0, 255) + size_count(8, 63)
        body += main("output", DATA_VAR)
        body += usage_page(page)
    return usage_page(page) + usage(0x02) + collection(0x01) + body + END


HONEYWELL_DESCRIPTOR = pos_descriptor("honeywell")
ZEBRA_DESCRIPTOR = pos_descriptor("zebra", with_output=False)
NEWLAND_DESCRIPTOR = pos_descriptor("newland", with_output=False)
# Honeywell 0c2e:0b87: a vendor 0xFF8C twin (report 2) before the real 0x008C collection (report 3).
DUAL_PAGE_DESCRIPTOR = pos_descriptor("honeywell", page=0xFF8C, rid=2, with_output=False) + pos_descriptor(
    "honeywell", page=0x8C, rid=3, with_output=False)
VENDOR_ONLY_DESCRIPTOR = pos_descriptor("honeywell", page=0xFF8C, with_output=False)

# A boot keyboard's descriptor (what a keyboard-mode scanner shows): no 0x8C collection.
KEYBOARD_DESCRIPTOR = bytes.fromhex(
    "05010906a101050719e029e71500250175019508810295017508810395057501050819012905910295017503910395"
    "067508150025650507190029658100c0")

_OFFSETS = {"honeywell": (5, (2, 3, 4), 61), "zebra": (6, (3, 4, 5), 62), "newland": (2, (), 62)}


def pos_reports(data: bytes, layout: str = "honeywell", aim: bytes = b"]Q1", code_id: int = ord("s"),
                rid: int = 2, chunk: int = 56) -> list[bytes]:
    """The 64-byte input reports a scanner sends for `data`: `chunk` bytes a report, every report
    repeating the AIM id, continued bit on all but the last."""
    data_at, aim_at, code_at = _OFFSETS[layout]
    parts = [data[i: i + chunk] for i in range(0, len(data), chunk)] or [b""]
    out = []
    for n, part in enumerate(parts):
        r = bytearray(64)
        r[0] = rid
        r[1] = len(part)
        for o, b in zip(aim_at, aim, strict=False):  # Newland: no AIM field
            r[o] = b
        r[data_at: data_at + len(part)] = part
        r[code_at] = code_id
        r[63] = 1 if n < len(parts) - 1 else 0
        out.append(bytes(r))
    return out


# --- Honeywell N5600 in HID-POS mode (published lsusb -v): 0c2e:0967, one interface 3/0/0 "HID POS",
# interrupt IN 0x82 and OUT 0x07, both 64 bytes.

N5600_VID, N5600_PID = 0x0C2E, 0x0967
N5600_STRINGS = {1: "Honeywell Imaging & Mobility", 2: "N5600", 3: "19123B4A21", 4: "HID POS"}


def n5600_device_descriptor() -> bytes:
    return bytes([18, 1, 0x00, 0x02, 0, 0, 0, 64]) + N5600_VID.to_bytes(2, "little") + \
        N5600_PID.to_bytes(2, "little") + bytes([0x00, 0x01, 1, 2, 3, 1])


def n5600_config_descriptor(report_descriptor: bytes = HONEYWELL_DESCRIPTOR) -> bytes:
    interface = bytes([9, 4, 0, 0, 2, 3, 0, 0, 4])
    hid = bytes([9, 0x21, 0x11, 0x01, 0, 1, 0x22]) + len(report_descriptor).to_bytes(2, "little")
    ep_in = bytes([7, 5, 0x82, 3, 64, 0, 1])
    ep_out = bytes([7, 5, 0x07, 3, 64, 0, 1])
    body = interface + hid + ep_in + ep_out
    total = 9 + len(body)
    return bytes([9, 2]) + total.to_bytes(2, "little") + bytes([1, 1, 0, 0x80, 250]) + body


async def until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait on the event loop until condition() holds (a generous deadline, never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)
