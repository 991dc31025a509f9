"""Scan events and random codes of every kind for the acceptance tests (ledger, report, fleet)."""

from __future__ import annotations

import random
from collections.abc import Callable

from scannerd.config import Config
from scannerd.model import DeviceInfo, ScanEvent
from scannerd.pipeline import new_event_id
from scannerd.protocol import wall_clock_iso

from helpers import alipay_code, unionpay_code, wechat_code

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


# What a device did, for building ledgers: "<kind>:<what>", kind medical|standard, what
# scan (no result) | paid | refunded | failed | wechat (a 医保码 settled by WeChat, not UnionPay).
Plan = list[tuple[str, str, str, list[str]]]  # (device, role, area, actions)


def feed(ledger: object, plan: Plan, rng: random.Random) -> None:
    """Scans and HIS results into a started Ledger, as a day at these devices would."""
    from scannerd.acceptance import Ledger

    assert isinstance(ledger, Ledger)
    for device, role, area, actions in plan:
        for action in actions:
            kind, what = action.split(":")
            make = medical_scan if kind == "medical" else unionpay_scan
            event = make(rng, device=device, role=role, area=area)
            ledger.on_scan(event)
            if what == "scan":
                continue
            channel = "wechat" if what == "wechat" else "unionpay"
            status = "paid" if what == "wechat" else what
            assert ledger.on_result(event.id, status, channel, kind == "medical", 1000).ok


def write_station(path: str, station: str, plan: Plan, rng: random.Random, hospital: str = "H37020201175", name: str = "青岛市市立医院") -> None:
    """A ledger file as station `station` would leave it after `plan`."""
    from scannerd.acceptance import Ledger
    from scannerd.config import AcceptanceConfig, SiteConfig

    ledger = Ledger(path, station=station, site=SiteConfig(hospital=hospital, hospital_name=name), acceptance=AcceptanceConfig(ledger=path))
    ledger.start()
    feed(ledger, plan, rng)
    ledger.stop()


# Three stations across three areas and both roles: some complete, some missing.
MIXED: dict[str, Plan] = {
    "station-a": [
        ("window-1", "window", "outpatient", ["medical:paid", "standard:paid", "standard:scan"]),
        ("kiosk-1", "kiosk", "outpatient", ["medical:paid", "standard:failed"]),
    ],
    "station-b": [
        ("window-2", "window", "emergency", ["medical:refunded", "standard:paid"]),
    ],
    "station-c": [
        ("kiosk-9", "kiosk", "inpatient", ["medical:scan", "standard:scan"]),
        ("window-5", "window", "emergency", ["medical:wechat", "standard:refunded"]),
    ],
}
