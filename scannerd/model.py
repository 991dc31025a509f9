"""The small frozen types that travel between rooms.

source → Frame/Rejected → classify → Classification → pipeline → ScanEvent/RejectEvent → sinks.
Nothing here does I/O; every room imports from here and from nowhere sideways.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Kind(str, enum.Enum):
    """What a code is for. The vocabulary of DESIGN.md's event format."""

    PAYMENT = "payment"
    MEDICAL_INSURANCE = "medical_insurance"
    HEALTH_CARD = "health_card"
    OTHER = "other"


class Channel(str, enum.Enum):
    """Who issued a code. `unknown` when no rule says."""

    WECHAT = "wechat"
    ALIPAY = "alipay"
    UNIONPAY = "unionpay"
    ECNY = "ecny"
    BESTPAY = "bestpay"
    JDPAY = "jdpay"
    EMV = "emv"
    NHSA = "nhsa"
    HEALTH_CARD = "health_card"
    EAN13 = "ean13"
    VAT_INVOICE = "vat_invoice"
    ID_NUMBER = "id_number"
    HIS = "his"
    UNKNOWN = "unknown"


class Confidence(str, enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    SITE = "site"
    CANDIDATE = "candidate"
    NONE = "none"


# Symbology names the framer gives (from AIM ids) that are two-dimensional: a 医保码 is a QR code.
TWO_D_SYMBOLOGIES = frozenset({"qr", "gs1_qr", "micro_qr", "datamatrix", "gs1_datamatrix", "aztec", "pdf417", "hanxin", "maxicode"})

# Kinds whose codes are secrets or personal data: masked in every log line.
SENSITIVE_KINDS = frozenset({Kind.PAYMENT, Kind.MEDICAL_INSURANCE})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Where a scan came from, as the pipeline and sinks need to know it."""

    name: str
    transport: str  # serial | evdev | hidpos | inject
    area: str
    role: str  # window | kiosk
    path: str = ""


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete read from one device, framed but not yet classified.

    Times are time.monotonic_ns() values (or kernel event times mapped onto that clock).
    """

    device: str
    text: str = field(repr=False)  # the code itself: never in a repr, a log line or a traceback
    symbology: str | None
    first_ns: int
    last_ns: int
    completed_ns: int
    # Gaps between successive characters in ns (keyboard wedge); empty where unknown.
    gaps_ns: tuple[int, ...] = ()
    # "terminator" or "idle": a scanner that never sends its terminator is worth a warning.
    ended_by: str = "terminator"
    injected: bool = False

    @property
    def scan_ms(self) -> float:
        return (self.last_ns - self.first_ns) / 1e6


@dataclass(frozen=True, slots=True)
class Rejected:
    """A read that could not become a frame (garbage, too long, device gone mid-scan)."""

    device: str
    reason: str
    text: str = field(repr=False)  # what was read, for masking only; never logged or sent in full
    completed_ns: int


@dataclass(frozen=True, slots=True)
class Classification:
    channel: str
    kind: str
    rule: str
    confidence: str
    source: str = ""
    # Set when the code is a known non-payment that must be refused (merchant receive code).
    reject_reason: str | None = None

    @property
    def sensitive(self) -> bool:
        return self.kind in {k.value for k in SENSITIVE_KINDS} or self.channel == Channel.ID_NUMBER.value


@dataclass(frozen=True, slots=True)
class Latency:
    scan_ms: float
    pipeline_us: int | None = None


@dataclass(frozen=True, slots=True)
class ScanEvent:
    id: str
    ts: str  # wall clock, ISO 8601 with offset
    device: DeviceInfo
    code: str = field(repr=False)  # a bearer token: never in a repr, a log line or a traceback
    symbology: str | None
    classification: Classification
    scan_ms: float
    completed_ns: int  # monotonic: frame complete, for pipeline_us and TTL
    expires_ns: int | None  # monotonic deadline after which it must not be delivered
    injected: bool = False


@dataclass(frozen=True, slots=True)
class RejectEvent:
    ts: str
    device: str
    reason: str
    masked: str


@dataclass(frozen=True, slots=True)
class DeviceStateEvent:
    device: str
    state: str  # present | absent | error
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


Event = ScanEvent | RejectEvent | DeviceStateEvent


def mask(text: str) -> str:
    """Mask the middle of a code: keep 4 characters each side of long codes, fewer of short ones.

    Payment codes are bearer tokens; this is the only form in which one may be logged.
    """
    n = len(text)
    if n <= 4:
        return "*" * n
    if n <= 10:
        return text[:2] + "*" * (n - 4) + text[-2:]
    return text[:4] + "*" * (n - 8) + text[-4:]
