"""Byte encoders for each protocol family: pure functions, one rule each, checked against the
byte strings in SCANBOX.md. A correction found on a real device is a one-line change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

STX_TAG = b"<STX>"
ETX_TAG = b"<ETX>"


# --- Newland scan box -----------------------------------------------------------------------


def xor_lrc(data: bytes) -> int:
    return reduce(lambda acc, b: acc ^ b, data, 0)


def newland_box_frame(command: str, serial: int, tags: Sequence[bytes]) -> bytes:
    """`<STX><LLLL><CMD><NN><SS><tag>…<ETX><XX>`; tags are given in the order the SDK adds
    them and written reversed (the SDK prepends). LLLL counts CMD+NN+SS plus every tag's
    content, brackets not counted; XX is the XOR of every byte before it, in uppercase hex."""
    if not 0 <= serial <= 99:
        raise ValueError(f"serial number must be 00–99, got {serial}")
    ordered = list(reversed(tags))
    cmd = command.encode("ascii")
    nn = b"%02d" % len(ordered)
    ss = b"%02d" % serial
    length = len(cmd) + len(nn) + len(ss) + sum(len(t) for t in ordered)
    head = STX_TAG + b"<%04d>" % length + b"<" + cmd + b"><" + nn + b"><" + ss + b">"
    body = head + b"".join(b"<" + t + b">" for t in ordered) + ETX_TAG
    return body + b"<%02X>" % xor_lrc(body)


def newland_box_text(text: str, charset: str = "gbk") -> bytes:
    """`<NNNN><text>` as VOICE= / PROMPT= carry it: a 4-digit byte count, then the bytes."""
    raw = text.encode(charset)
    return b"%04d" % len(raw) + raw


# --- Newland UCS ------------------------------------------------------------------------------

UCS_HEAD = b"~\x010000"
UCS_TAIL = b";\x03"
UCS_REPLY_HEAD = b"\x02\x010000"
UCS_TEMPORARY = b"#"  # '@' is the permanent form: never written by this package


def ucs_command(parts: Sequence[bytes]) -> bytes:
    """`~<SOH>0000#Tag1;Tag2;<ETX>` in the temporary storage."""
    return UCS_HEAD + UCS_TEMPORARY + b";".join(parts) + UCS_TAIL


# --- Newland / Yuanjingda legacy ---------------------------------------------------------------

LEGACY_ENTER, LEGACY_LEAVE = b"$$$$", b"%%%%"


def legacy_command(code: bytes) -> bytes:
    """`$$$$#dddddddd;%%%%`: enter setup, one command, leave setup."""
    return LEGACY_ENTER + b"#" + code + b";" + LEGACY_LEAVE


# --- Honeywell --------------------------------------------------------------------------------

HONEYWELL_MENU = b"\x16M\r"  # SYN M CR
HONEYWELL_VOLATILE = b"!"  # '.' is the permanent form: never written by this package


def honeywell_menu(parts: Sequence[bytes]) -> bytes:
    """`SYN M CR Tag1;Tag2!`: menu commands in volatile storage."""
    return HONEYWELL_MENU + b";".join(parts) + HONEYWELL_VOLATILE


# --- Zebra SSI --------------------------------------------------------------------------------

SSI_HOST = 0x04
SSI_DECODER = 0x00
SSI_ACK, SSI_NAK = 0xD0, 0xD1

# The only opcodes this package sends (parameter send C6 and friends are not here on purpose).
SSI_OPCODES: dict[str, tuple[int, bytes]] = {
    "START_DECODE": (0xE4, b""),
    "STOP_DECODE": (0xE5, b""),
    "SCAN_ENABLE": (0xE9, b""),
    "SCAN_DISABLE": (0xEA, b""),
    "LED_ON": (0xE7, b"\x01"),
    "LED_OFF": (0xE8, b"\x01"),
}


def ssi_checksum(data: bytes) -> bytes:
    """16-bit two's complement of the byte sum, high byte first."""
    return ((-sum(data)) & 0xFFFF).to_bytes(2, "big")


def ssi_packet(opcode: int, data: bytes = b"", source: int = SSI_HOST, status: int = 0) -> bytes:
    body = bytes([4 + len(data), opcode, source, status]) + data
    return body + ssi_checksum(body)
