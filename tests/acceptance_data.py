"""Scan events and random codes of every kind for the acceptance tests (ledger, report, fleet)."""

from __future__ import annotations

import random
from collections.abc import Callable

from scannerd.config import Config
from scannerd.model import DeviceInfo, ScanEvent
from scannerd.pipeline import new_event_id
from scannerd.protocol import wall_clock_iso
from tests.helpers import alipay_code, unionpay_code, wechat_code

_CLASSIFIER = Config().classifier()


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def _ean13(rng: random.Random) -> str:
    body = "69" + _digits(rng, 10)
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


# (generator, symbology): one per kind of code a cashier scanner sees (CODES.md).
CODE_MAKERS: dict[str, tuple[Callable[[random.Random], str], str]] = {
    "wechat": (wechat_code, "qr"),
    "alipay": (alipay_code, "qr"),
    "unionpay": (unionpay_code, "qr"),
    "ecny": (lambda r: "01" + _digits(r, 17), "qr"),
    "bestpay": (lambda r: "51" + _digits(r, 16), "qr"),
    "nhsa_424": (lambda r: "424" + _digits(r, 21) + "330000", "qr"),
    "nhsa_candidate": (lambda r: "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(32)), "qr"),
    "health_card": (lambda r: "".join(r.choice("0123456789ABCDEF") for _ in range(64)) + ":1", "qr"),
    "ean13": (_ean13, "ean13"),
    "his_slip": (lambda r: "RX" + _digits(r, 12), "code128"),
}


def scan_event(
    code: str,
    *,
    device: str = "window-1",
    role: str = "window",
    area: str = "outpatient",
    symbology: str = "qr",
    ts: str | None = None,
) -> ScanEvent:
    """A ScanEvent as the pipeline makes it, classified by the default rules."""
    return ScanEvent(
        id=new_event_id(),
        ts=ts or wall_clock_iso(),
        device=DeviceInfo(device, "serial", area, role),
        code=code,
        symbology=symbology,
        classification=_CLASSIFIER.classify(code, symbology),
        scan_ms=10.0,
        completed_ns=0,
        expires_ns=None,
    )


def unionpay_scan(rng: random.Random, **where: str) -> ScanEvent:
    return scan_event(unionpay_code(rng), **where)


def medical_scan(rng: random.Random, **where: str) -> ScanEvent:
    """A 医保码 (shaped like the 424 generation rule; the default rules see it as a candidate)."""
    event = scan_event(CODE_MAKERS["nhsa_424"][0](rng), **where)
    assert event.classification.kind == "medical_insurance", event.classification
    return event
