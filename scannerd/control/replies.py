"""Take a controlled device's replies out of its byte stream, before the framer sees it.

One demultiplexer per device and protocol family; pure (bytes in, bytes and items out, no I/O,
no clock). `feed()` returns the bytes that belong to scans (for the framer) and the items it
recognised: replies to commands, scans the device sent as frames (`DATA=`), and garbage frames
with a reason. ACK / NAK / ENQ bytes and reply frames never come back as scan bytes.

Bytes that might start a reply are held until the next bytes decide; `release()` gives back
what is still held when no more bytes come (the caller's timer), so nothing is lost or stuck.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import ClassVar

from .encode import (
    ETX_TAG,
    SSI_ACK,
    SSI_DECODER,
    SSI_NAK,
    STX_TAG,
    UCS_REPLY_HEAD,
    ssi_checksum,
    xor_lrc,
)

ACK, NAK, ENQ = 0x06, 0x15, 0x05
STATUS_BYTES = {ACK: "ack", NAK: "nak", ENQ: "enq"}
_SEVERITY = {"ack": 0, "enq": 1, "nak": 2, "error": 3}

# A frame that grows past this without its end is line noise, not a reply.
MAX_FRAME_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Reply:
    """A device's answer to a command: `ack` (accepted), `nak` (refused, data out of range),
    `enq` (unknown command), `error` (a reply frame with a failure code)."""

    status: str
    serial: int | None = None  # the Newland box echoes the command's serial number
    code: str = ""  # the device's own status code, where it gives one

    @property
    def ok(self) -> bool:
        return self.status == "ack"


@dataclass(frozen=True, slots=True)
class DataScan:
    """A scan the device sent inside a frame (Newland box `DATA=`): raw bytes of the code."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Garbage:
    """A control frame that could not be read: bad checksum, bad length, too long."""

    reason: str
    data: bytes = field(repr=False)


Item = Reply | DataScan | Garbage


@dataclass(slots=True)
class Demuxed:
    passthrough: bytes = b""
    items: list[Item] = field(default_factory=list)


def worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: _SEVERITY.get(s, 3)) if statuses else "error"


class Demux(abc.ABC):
    """Per-device reply recogniser for one protocol family."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._expecting = False

    @property
    def holding(self) -> bool:
        return bool(self._buf)

    @property
    def mid_reply(self) -> bool:
        """What is held is (probably) a reply or frame under way, not the start of a scan:
        worth waiting for as long as a reply may take, even on a stalled machine."""
        return False

    def expect(self) -> None:
        """A command went out: its reply may come next (families whose replies are printable
        echoes hold printable bytes from now on until the reply or a scan's end shows)."""
        self._expecting = True

    @abc.abstractmethod
    def feed(self, data: bytes) -> Demuxed: ...

    @abc.abstractmethod
    def release(self) -> Demuxed:
        """No more bytes came: give back whatever is held (scan bytes or a garbage item)."""


# --- Newland scan box: <STX>…<ETX><XX> frames among code+CRLF scans ----------------------------


class NewlandBoxDemux(Demux):
    def __init__(self) -> None:
        super().__init__()
        self._in_frame = False

    @property
    def mid_reply(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> Demuxed:
        out = Demuxed()
        passthrough = bytearray()
        buf = self._buf
        buf += data
        while buf:
            if not self._in_frame:
                start = buf.find(b"<")
                if start < 0:
                    passthrough += buf
                    buf.clear()
                    break
                passthrough += buf[:start]
                del buf[:start]
                if buf.startswith(STX_TAG):
                    self._in_frame = True
                    continue
                if len(buf) < len(STX_TAG) and STX_TAG.startswith(bytes(buf)):
                    break  # "<ST": the next byte decides
                passthrough += buf[:1]
                del buf[:1]
                continue
            end = buf.find(ETX_TAG)
            if end >= 0 and len(buf) >= end + len(ETX_TAG) + 4:
                size = end + len(ETX_TAG) + 4
                out.items.extend(parse_newland_box(bytes(buf[:size])))
                del buf[:size]
                self._in_frame = False
                continue
            if len(buf) > MAX_FRAME_BYTES:
                out.items.append(Garbage("control_frame_too_long", bytes(buf)))
                buf.clear()
                self._in_frame = False
            break
        out.passthrough = bytes(passthrough)
        return out

    def release(self) -> Demuxed:
        held = bytes(self._buf)
        self._buf.clear()
        if self._in_frame:
            self._in_frame = False
            return Demuxed(items=[Garbage("control_frame_incomplete", held)])
        return Demuxed(passthrough=held)


_BOX_LRC = re.compile(rb"<([0-9A-F]{2})>")


def _box_fields(inner: bytes) -> list[bytes] | None:
    """The bracketed fields between <STX> and <ETX>. A DATA= value runs to the next '><' or the
    end, so a code holding '>' survives; the length check catches a wrong split."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(inner):
        if inner[pos : pos + 1] != b"<":
            return None
        if inner.startswith(b"<DATA=", pos):
            close = inner.find(b"><", pos)
            close = len(inner) - 1 if close < 0 else close
        else:
            close = inner.find(b">", pos)
        if close < 0 or inner[close : close + 1] != b">":
            return None
        fields.append(inner[pos + 1 : close])
        pos = close + 1
    return fields


def parse_newland_box(frame: bytes) -> list[Item]:
    """One complete `<STX>…<ETX><XX>` frame → reply and/or DATA= scans, or a garbage item."""
    lrc = _BOX_LRC.fullmatch(frame[-4:])
    if lrc is None or int(lrc.group(1), 16) != xor_lrc(frame[:-4]):
        return [Garbage("control_frame_bad_lrc", frame)]
    fields = _box_fields(frame[len(STX_TAG) : -4 - len(ETX_TAG)])
    if fields is None or len(fields) < 4 or not fields[0].isdigit():
        return [Garbage("control_frame_malformed", frame)]
    if int(fields[0]) != sum(len(f) for f in fields[1:]):
        return [Garbage("control_frame_bad_length", frame)]
    serial = int(fields[3]) if fields[3].isdigit() else None
    rest = fields[4:]
    scans: list[Item] = [DataScan(f[len(b"DATA=") :]) for f in rest if f.startswith(b"DATA=")]
    if scans:
        # A result frame is a scan, never the answer to a command: its serial number is the
        # box's own, and taking it for an ACK would confirm a command nobody answered.
        return scans
    if rest and len(rest[0]) == 2 and rest[0].isdigit():
        code = rest[0].decode()
        return [Reply("ack" if code == "00" else "error", serial, code)]
    return []


# --- Newland UCS: <STX><SOH>0000 … ACK ;<ETX>, or a bare NAK / ENQ ---------------------------


class UcsDemux(Demux):
    @property
    def mid_reply(self) -> bool:
        return self._buf.startswith(UCS_REPLY_HEAD)

    def feed(self, data: bytes) -> Demuxed:
        out = Demuxed()
        passthrough = bytearray()
        buf = bytes(self._buf) + data
        pos = 0  # an index, not deletions from the front: a 4 KiB read stays linear
        while pos < len(buf):
            b = buf[pos]
            if b == 0x02:
                head = buf[pos : pos + len(UCS_REPLY_HEAD)]
                if len(head) < len(UCS_REPLY_HEAD) and UCS_REPLY_HEAD.startswith(head):
                    break
                if head == UCS_REPLY_HEAD:
                    end = buf.find(b"\x03", pos)
                    if end < 0:
                        if len(buf) - pos > MAX_FRAME_BYTES:
                            out.items.append(Garbage("control_frame_too_long", buf[pos:]))
                            pos = len(buf)
                        break
                    out.items.append(_status_reply(buf[pos : end + 1]))
                    pos = end + 1
                    continue
            if b in STATUS_BYTES:
                out.items.append(Reply(STATUS_BYTES[b]))
            else:
                passthrough.append(b)
            pos += 1
        self._buf = bytearray(buf[pos:])
        out.passthrough = bytes(passthrough)
        return out

    def release(self) -> Demuxed:
        held = bytes(self._buf)
        self._buf.clear()
        if held.startswith(UCS_REPLY_HEAD):
            return Demuxed(items=[Garbage("control_frame_incomplete", held)])
        return Demuxed(passthrough=held)


def _status_reply(data: bytes) -> Reply:
    found = [STATUS_BYTES[b] for b in data if b in STATUS_BYTES]
    return Reply(worst(found) if found else "error")


# --- Echo families: Honeywell (TAG…<ACK>!) and the Newland legacy protocol (@@@@!…;^^^^) -----


class _EchoDemux(Demux):
    """While a command is outstanding, printable bytes are held: they are either the reply's
    echo (consumed when the reply ends) or a scan (given back at its first control byte)."""

    ALPHABET: ClassVar[frozenset[int]] = frozenset()

    @property
    def mid_reply(self) -> bool:
        return self._expecting and bool(self._buf)

    @abc.abstractmethod
    def _complete(self) -> Reply | None:
        """The reply the buffered echo bytes make, or None while it is incomplete."""

    def feed(self, data: bytes) -> Demuxed:
        out = Demuxed()
        passthrough = bytearray()
        for b in data:
            if not self._expecting:
                if b in STATUS_BYTES:
                    out.items.append(Reply(STATUS_BYTES[b]))  # a stray status byte: never scan data
                else:
                    passthrough.append(b)
                continue
            if b in self.ALPHABET and len(self._buf) < MAX_FRAME_BYTES:
                self._buf.append(b)
                reply = self._complete()
                if reply is not None:
                    out.items.append(reply)
                    self._buf.clear()
                    self._expecting = False
                continue
            # Not a reply after all: what was held is scan data (status bytes never are).
            passthrough += bytes(c for c in self._buf if c not in STATUS_BYTES)
            self._buf.clear()
            if b not in STATUS_BYTES:
                passthrough.append(b)
        out.passthrough = bytes(passthrough)
        return out

    def release(self) -> Demuxed:
        held = bytes(self._buf)
        self._buf.clear()
        return Demuxed(passthrough=bytes(c for c in held if c not in STATUS_BYTES))


_PRINTABLE = frozenset(range(0x20, 0x7F))


class HoneywellDemux(_EchoDemux):
    """`SYN M CR TRGMOD3;MNUENA0!` is answered `TRGMOD3<ACK>;MNUENA0<ACK>!`: each part with its
    status byte, the storage mark last."""

    ALPHABET = _PRINTABLE | frozenset(STATUS_BYTES)

    def _complete(self) -> Reply | None:
        buf = self._buf
        if len(buf) >= 2 and buf[-1] in b"!." and buf[-2] in STATUS_BYTES:
            return Reply(worst([STATUS_BYTES[b] for b in buf if b in STATUS_BYTES]))
        return None


class LegacyDemux(_EchoDemux):
    """`$$$$#99900035;%%%%` is answered `@@@@!99900035;^^^^` (or `?…;` when refused)."""

    ALPHABET = frozenset(b"@^!?;0123456789")

    def _complete(self) -> Reply | None:
        if not self._buf.endswith(b"^^^^"):  # checked per byte: no copy until the end shows
            return None
        buf = bytes(self._buf)
        if b"?" in buf:
            return Reply("nak")
        return Reply("ack" if b"!" in buf or buf == b"@@@@^^^^" else "error")


# --- Zebra SSI: binary CMD_ACK / CMD_NAK packets ----------------------------------------------


class SsiDemux(Demux):
    """CMD_ACK `04 D0 00 00 cksum` and CMD_NAK `05 D1 00 00 cause cksum` from the decoder.
    Their length bytes (04, 05) never occur in text, so only they are held."""

    _OPCODE_FOR_LENGTH: ClassVar[dict[int, int]] = {4: SSI_ACK, 5: SSI_NAK}

    @property
    def mid_reply(self) -> bool:
        return bool(self._buf)

    def feed(self, data: bytes) -> Demuxed:
        out = Demuxed()
        passthrough = bytearray()
        buf = bytes(self._buf) + data
        pos = 0
        while pos < len(buf):
            opcode = self._OPCODE_FOR_LENGTH.get(buf[pos])
            if opcode is not None:
                need = buf[pos] + 2
                if len(buf) - pos < need:
                    if len(buf) - pos < 2 or buf[pos + 1] == opcode:
                        break  # may be an ACK / NAK still arriving
                else:
                    packet = buf[pos : pos + need]
                    if packet[1] == opcode and packet[2] == SSI_DECODER and ssi_checksum(packet[:-2]) == packet[-2:]:
                        out.items.append(Reply("ack" if opcode == SSI_ACK else "nak", code=packet[4:-2].hex()))
                        pos += need
                        continue
            passthrough.append(buf[pos])
            pos += 1
        self._buf = bytearray(buf[pos:])
        out.passthrough = bytes(passthrough)
        return out

    def release(self) -> Demuxed:
        held = bytes(self._buf)
        self._buf.clear()
        return Demuxed(items=[Garbage("control_frame_incomplete", held)] if held else [])
