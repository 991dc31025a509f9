"""The protocol families a profile can name: what a verb part may look like, how parts become
messages on the wire, and which demultiplexer reads the replies.

Profiles (TOML data) choose a family and list verb parts; the family is code, so a profile can
only ever produce what its family allows: each part must match the family's whitelist.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import encode
from .replies import (
    Demux,
    HoneywellDemux,
    LegacyDemux,
    NewlandBoxDemux,
    SsiDemux,
    UcsDemux,
)


@dataclass(frozen=True, slots=True)
class Message:
    """One write to the device and the reply it waits for."""

    data: bytes
    verbs: tuple[str, ...]
    serial: int | None = None  # Newland box: the reply carries the same serial number


class SerialCounter:
    """The Newland box's 00–99 frame serial number, per device."""

    def __init__(self) -> None:
        self._next = itertools.cycle(range(100))

    def take(self) -> int:
        return next(self._next)


Encoder = Callable[[Sequence[bytes], tuple[str, ...], SerialCounter], list[Message]]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    part: re.Pattern[str]  # what one verb part may be (before {amount}/{voice} are filled in)
    part_help: str  # the same, in words, for config errors
    placeholders: frozenset[str]
    encode: Encoder
    demux: Callable[[], Demux]


def _box(parts: Sequence[bytes], verbs: tuple[str, ...], serials: SerialCounter) -> list[Message]:
    serial = serials.take()
    return [Message(encode.newland_box_frame("SET", serial, parts), verbs, serial)]


def _ucs(parts: Sequence[bytes], verbs: tuple[str, ...], serials: SerialCounter) -> list[Message]:
    return [Message(encode.ucs_command(parts), verbs)]


def _honeywell(parts: Sequence[bytes], verbs: tuple[str, ...], serials: SerialCounter) -> list[Message]:
    return [Message(encode.honeywell_menu(parts), verbs)]


def _legacy(parts: Sequence[bytes], verbs: tuple[str, ...], serials: SerialCounter) -> list[Message]:
    return [Message(encode.legacy_command(p), verbs) for p in parts]  # one reply per command


def _ssi(parts: Sequence[bytes], verbs: tuple[str, ...], serials: SerialCounter) -> list[Message]:
    out = []
    for p in parts:
        opcode, data = encode.SSI_OPCODES[p.decode("ascii")]
        out.append(Message(encode.ssi_packet(opcode, data), verbs))
    return out


# Newland box tags that change what the box does for one transaction. Not here: PREFIX= /
# SUFFIX= / ENTER= (they change how scans are framed) and GET (reads identifiers).
_BOX_TAGS = "SWITCH|PACK|INTERVAL|AMOUNT|MODE|LED|VOLUME|VOICE|PROMPT"
# Newland UCS and Honeywell tags from SCANBOX.md that only switch reading on/off, set its
# timing or lock setup codes. Not here: FACDEF, REBOOT, baud rates, suffixes, SYN N anything.
_UCS_TAGS = "SCNTRG|SCNMOD|SCNTCE|ORTSET|RRDDUR|GRBENA|SETUPE|EXPLVL"
_HONEYWELL_TAGS = "TRGMOD|TRGSTO|MNUENA"
_LEGACY_CODES = "99900035|99900036|99900116|99900112|99900040|99900041|99900031"

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "newland-box",
            re.compile(rf"(?:{_BOX_TAGS})=(?:[A-Z0-9_.]{{1,16}}|\{{amount\}}|\{{voice\}})"),
            f"a tag TAG=VALUE with TAG one of {_BOX_TAGS.replace('|', ', ')} and VALUE in A-Z 0-9 _ . (or {{amount}} / {{voice}})",
            frozenset({"amount", "voice"}),
            _box,
            NewlandBoxDemux,
        ),
        Family(
            "newland-ucs",
            re.compile(rf"(?:{_UCS_TAGS})\d{{1,6}}"),
            f"a tag with its data, e.g. SCNTRG1, tag one of {_UCS_TAGS.replace('|', ', ')}",
            frozenset(),
            _ucs,
            UcsDemux,
        ),
        Family(
            "honeywell",
            re.compile(rf"(?:{_HONEYWELL_TAGS})\d{{1,6}}"),
            f"a menu command with its data, e.g. TRGMOD3, tag one of {_HONEYWELL_TAGS.replace('|', ', ')}",
            frozenset(),
            _honeywell,
            HoneywellDemux,
        ),
        Family(
            "newland-legacy",
            re.compile(rf"(?:{_LEGACY_CODES})"),
            f"an 8-digit command, one of {_LEGACY_CODES.replace('|', ', ')}",
            frozenset(),
            _legacy,
            LegacyDemux,
        ),
        Family(
            "zebra-ssi",
            re.compile("|".join(encode.SSI_OPCODES)),
            f"an SSI command, one of {', '.join(encode.SSI_OPCODES)}",
            frozenset(),
            _ssi,
            SsiDemux,
        ),
    )
}
