"""The oracle can fail: each verdict is produced by the situation it names (no check that
cannot fail). The rig's own run is tests/chaos/test_chaos.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .codes import Code
from .oracle import Oracle

PAY = Code("134567890123132345", "payment", True)
SLIP = Code("处方:RX0123456789", "other", False)


def scan_event(code: Code, event_id: str, device: str = "s0", **extra: Any) -> dict[str, Any]:
    return {"type": "scan", "id": event_id, "code": code.text, "kind": code.kind, "device": device, **extra}


def made(*codes: Code, ttl_s: float = 60.0) -> Oracle:
    o = Oracle()
    for c in codes:
        o.scanned(c, "s0", ttl_s)
    return o


def test_all_settled_is_clean(tmp_path: Path) -> None:
    o = made(PAY, SLIP)
    o.receipt("his-1", scan_event(PAY, "A"), counts=True)
    o.receipt("his-1-ack", scan_event(SLIP, "B"), counts=False)
    o.settle("his-1-ack", "B")
    v = o.finish(0, "masked 1345**********2345 only", [])
    assert v.ok, v.notes


def test_a_scan_nobody_got_and_nobody_counted_is_lost() -> None:
    o = made(PAY, SLIP)
    o.receipt("his-1", scan_event(PAY, "A"), counts=True)
    assert o.finish(0, "", []).lost == 1
    o2 = made(PAY, SLIP)
    o2.receipt("his-1", scan_event(PAY, "A"), counts=True)
    assert o2.finish(1, "", []).ok  # counted expired by the daemon: not lost


def test_an_unacked_receipt_does_not_count() -> None:
    o = made(PAY)
    o.receipt("his-1-ack", scan_event(PAY, "A"), counts=False)  # the HIS vanished before acking
    assert o.finish(0, "", []).lost == 1


def test_settled_twice_or_under_two_ids_is_duplicated() -> None:
    o = made(PAY)
    o.receipt("his-1", scan_event(PAY, "A"), counts=True)
    o.receipt("his-2", scan_event(PAY, "A", redelivered=True), counts=True)
    assert o.finish(0, "", []).duplicated == 1
    o2 = made(PAY)
    o2.receipt("his-1", scan_event(PAY, "A"), counts=True)
    o2.receipt("his-2", scan_event(PAY, "B"), counts=False)
    assert o2.verdict.duplicated == 1


def test_handed_over_past_its_ttl_is_late() -> None:
    o = made(PAY, ttl_s=3)
    o.receipt("his-1", scan_event(PAY, "A", queued=True, age_ms=3001), counts=True)
    assert o.finish(0, "", []).late == 1


def test_a_full_code_at_a_monitor_in_the_log_or_in_a_file_is_leaked(tmp_path: Path) -> None:
    o = made(PAY)
    o.receipt("his-1", scan_event(PAY, "A"), counts=True)
    o.monitor_event("monitor-1", scan_event(PAY, "A"))
    f = tmp_path / "ledger.db"
    f.write_bytes(b"\x00" + PAY.text.encode() + b"\x00")
    v = o.finish(0, f"oops {PAY.text}", [f])
    assert v.leaked == 3


def test_phantoms_partials_and_missing_rejects_are_wrong() -> None:
    o = made(PAY)
    o.partial("13456789", "s1")
    o.partial_outcome("s1", rejected=True)
    o.garbage("s0", "undecodable")
    o.receipt("his-1", scan_event(PAY, "A"), counts=True)
    o.receipt("his-1", scan_event(Code("13456789", "payment", True), "P", device="s1"), counts=True)  # a partial as a scan
    o.receipt("his-1", scan_event(Code("999999999999", "other", False), "Q"), counts=True)  # never scanned
    o.reject({"type": "reject", "device": "s0", "reason": ""})  # no reason
    v = o.finish(0, "", [])
    # partial delivered, phantom, reject without reason, device_removed missing on s1, undecodable missing on s0
    assert v.wrong == 5, v.notes
