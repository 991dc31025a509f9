"""The acceptance ledger: batched writes off the caller's thread, restart, results, bad files."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest
from acceptance_data import medical_scan, scan_event, unionpay_scan

from scannerd.acceptance import (
    Ledger,
    ResultError,
    parse_result_command,
    read_ledger_file,
)
from scannerd.config import AcceptanceConfig, SiteConfig

from helpers import wait_for

SITE = SiteConfig(hospital="H37020201175", hospital_name="青岛市市立医院", area="outpatient")


def make_ledger(path: Path, clock: list[float] | None = None, **kw: object) -> Ledger:
    accept = AcceptanceConfig(ledger=str(path), result_retention_h=kw.pop("retention_h", 24.0), result_ids_max=kw.pop("ids_max", 1000))  # type: ignore[arg-type]
    if clock is not None:
        kw["clock"] = lambda: clock[0]
    kw.setdefault("retry_interval_s", 0.05)
    return Ledger(str(path), station="station-a", site=SITE, acceptance=accept, flush_interval_s=0.05, **kw)  # type: ignore[arg-type]


def db_scans(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT coalesce(sum(count), 0) FROM scans").fetchone()[0])


def test_scans_are_written_in_batches_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.sqlite"
    ledger = make_ledger(path)
    ledger.start()
    rng = random.Random(7)
    for _ in range(500):
        ledger.on_scan(unionpay_scan(rng, device="window-1"))
    for _ in range(200):
        ledger.on_scan(medical_scan(rng, device="kiosk-1", role="kiosk", area="emergency"))
    wait_for(lambda: ledger.status()["flushed_scans"] == 700, timeout=30)
    status = ledger.status()
    # Hundreds of scans, a handful of transactions: the writer batches.
    assert 1 <= status["batches"] < 100, status
    assert status["state"] == "ok" and status["pending"] == 0
    ledger.stop()

    counts = read_ledger_file(str(path))
    assert counts.station == "station-a" and counts.hospital == "H37020201175" and counts.hospital_name == "青岛市市立医院"
    by_device = {(k.device, k.role, k.area, k.channel, k.kind): t.count for k, t in counts.scans.items()}
    assert by_device == {
        ("window-1", "window", "outpatient", "unionpay", "payment"): 500,
        ("kiosk-1", "kiosk", "emergency", "nhsa", "medical_insurance"): 200,
    }
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_first_and_last_time_per_day(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = make_ledger(path)
    ledger.start()
    rng = random.Random(1)
    for ts in ("2026-11-23T10:00:00.000000+08:00", "2026-11-23T08:30:00.000000+08:00", "2026-11-23T17:45:00.000000+08:00", "2026-11-24T09:00:00.000000+08:00"):
        ledger.on_scan(unionpay_scan(rng, ts=ts))
    ledger.stop()
    rows = {k.day: t for k, t in read_ledger_file(str(path)).scans.items()}
    assert rows["2026-11-23"].count == 3
    assert rows["2026-11-23"].first_ts.startswith("2026-11-23T08:30") and rows["2026-11-23"].last_ts.startswith("2026-11-23T17:45")
    assert rows["2026-11-24"].count == 1


def test_restart_keeps_counts_and_recent_ids(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    rng = random.Random(2)
    first = make_ledger(path)
    first.start()
    paid = unionpay_scan(rng)
    later = medical_scan(rng)
    first.on_scan(paid)
    first.on_scan(later)
    assert first.on_result(paid.id, "paid", "unionpay", False, 100).ok
    first.stop()

    second = make_ledger(path)
    second.start()
    wait_for(lambda: second.status()["state"] == "ok")
    snapshot = second.snapshot()
    assert sum(t.count for t in snapshot.scans.values()) == 2
    assert sum(t.count for t in snapshot.results.values()) == 1
    # The ids outlive the process: a result after a restart is accepted, a repeat refused.
    assert second.on_result(later.id, "paid", "unionpay", True, 5000).ok
    again = second.on_result(paid.id, "paid", "unionpay", False, 100)
    assert not again.ok and again.reason == "repeated"
    assert second.on_result(paid.id, "refunded", "unionpay", False, 100).ok  # refunds count
    second.on_scan(unionpay_scan(rng))
    second.stop()

    counts = read_ledger_file(str(path))
    assert sum(t.count for t in counts.scans.values()) == 3
    statuses = sorted((k.status, k.medical_insurance, k.scan_kind, t.count) for k, t in counts.results.items())
    assert statuses == [("paid", False, "payment", 1), ("paid", True, "medical_insurance", 1), ("refunded", False, "payment", 1)]


def test_result_for_unknown_expired_and_repeated_ids(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    ledger = make_ledger(tmp_path / "ledger.sqlite", clock=clock, retention_h=1.0)
    ledger.start()
    rng = random.Random(3)
    scan = unionpay_scan(rng)
    ledger.on_scan(scan)

    unknown = ledger.on_result("01JUNKNOWN0000000000000000", "paid", "unionpay", False, 1)
    assert (unknown.ok, unknown.reason) == (False, "unknown")
    assert unknown.reply()["ok"] is False and "no scan" in unknown.reply()["error"]

    assert ledger.on_result(scan.id, "paid", "unionpay", False, 1).reply() == {"ok": True}
    repeated = ledger.on_result(scan.id, "paid", "unionpay", False, 1)
    assert (repeated.ok, repeated.reason) == (False, "repeated")

    old = unionpay_scan(rng)
    ledger.on_scan(old)
    clock[0] += 3601
    expired = ledger.on_result(old.id, "paid", "unionpay", False, 1)
    assert (expired.ok, expired.reason) == (False, "expired")
    assert ledger.status()["refused_results"] == 3 and ledger.status()["results"] == 1
    ledger.stop()


def test_recent_ids_are_bounded_in_count(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "ledger.sqlite", ids_max=10)
    rng = random.Random(4)
    scans = [unionpay_scan(rng) for _ in range(25)]
    for s in scans:
        ledger.on_scan(s)
    assert ledger.status()["recent_ids"] == 10
    assert ledger.on_result(scans[0].id, "paid", "unionpay", False, None).reason == "expired"
    assert ledger.on_result(scans[-1].id, "paid", "unionpay", False, None).ok


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        ({"id": 5, "status": "paid", "channel": "unionpay"}, "id:"),
        ({"id": "a b", "status": "paid", "channel": "unionpay"}, "id:"),
        ({"id": "01J", "status": "ok", "channel": "unionpay"}, "status: expected one of paid | refunded | failed"),
        ({"id": "01J", "status": "paid", "channel": "visa"}, "channel:"),
        ({"id": "01J", "status": "paid", "channel": "unionpay", "medical_insurance": "yes"}, "medical_insurance: expected true or false"),
        ({"id": "01J", "status": "paid", "channel": "unionpay", "amount_fen": -1}, "amount_fen:"),
        ({"id": "01J", "status": "paid", "channel": "unionpay", "amount_fen": 12.5}, "amount_fen:"),
        ({"id": "01J", "status": "paid", "channel": "unionpay", "amount_fen": True}, "amount_fen:"),
    ],
)
def test_result_arguments_are_validated(msg: dict[str, object], error: str) -> None:
    with pytest.raises(ResultError, match=error.replace("|", r"\|")):
        parse_result_command({"cmd": "result", **msg})


def test_result_arguments_parse() -> None:
    r = parse_result_command({"cmd": "result", "id": "01JABC", "status": "refunded", "channel": "unionpay", "medical_insurance": True, "amount_fen": 1234})
    assert (r.scan_id, r.status, r.channel, r.medical_insurance, r.amount_fen) == ("01JABC", "refunded", "unionpay", True, 1234)


def _keeps_scanning_while_broken(ledger: Ledger, expect: str) -> None:
    rng = random.Random(5)
    ledger.start()
    wait_for(lambda: ledger.status()["state"] == "error", timeout=20)
    status = ledger.status()
    assert expect in status["error"], status
    scan = unionpay_scan(rng)
    ledger.on_scan(scan)  # returns at once: the loop never waits on the broken file
    assert ledger.on_result(scan.id, "paid", "unionpay", False, 1).ok
    assert sum(t.count for t in ledger.snapshot().scans.values()) == 1
    assert ledger.status()["pending"] == 2


def test_unwritable_path_is_reported_and_counts_wait_in_memory(tmp_path: Path) -> None:
    # A path whose parent is a regular file cannot be created, even by root.
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    path = blocker / "ledger.sqlite"
    ledger = make_ledger(path)
    _keeps_scanning_while_broken(ledger, "cannot open")
    # The technician fixes the directory: the waiting counts are written, nothing lost.
    blocker.unlink()
    blocker.mkdir()
    wait_for(lambda: ledger.status()["state"] == "ok" and ledger.status()["pending"] == 0, timeout=20)
    ledger.stop()
    counts = read_ledger_file(str(path))
    assert sum(t.count for t in counts.scans.values()) == 1 and sum(t.count for t in counts.results.values()) == 1


def test_path_under_proc_is_reported(tmp_path: Path) -> None:
    ledger = make_ledger(Path("/proc/self/scannerd-ledger.sqlite"))
    _keeps_scanning_while_broken(ledger, "cannot open")
    ledger.stop(timeout=10)


def test_full_disk_is_reported_and_scanning_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    # sqlite's own page cap: writes past it fail with SQLITE_FULL, exactly as on a full disk.
    # Retry at every flush: the most chances to catch a torn read of `pending`.
    ledger = make_ledger(path, pragmas={"max_page_count": "12"}, retry_interval_s=0.0)
    ledger.start()
    wait_for(lambda: ledger.status()["state"] == "ok")
    rng = random.Random(6)
    for i in range(3000):
        ledger.on_scan(unionpay_scan(rng, device=f"window-{i % 300}", ts=f"2026-11-{1 + i % 28:02d}T10:00:00.000000+08:00"))
    wait_for(lambda: ledger.status()["state"] == "error", timeout=20)
    assert ledger.status()["error"] == "disk full"
    assert ledger.status()["write_errors"] >= 1
    ledger.on_scan(unionpay_scan(rng))
    assert sum(t.count for t in ledger.snapshot().scans.values()) == 3001
    # The failed batch goes back, nothing dropped — and while the writer retries, the batch it
    # holds still counts as pending (it once read as 1 mid-retry).
    seen = {ledger.status()["pending"] for _ in range(3000)}
    assert seen == {3001}, seen
    ledger.stop(timeout=10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_corrupt_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(os.urandom(8192))
    ledger = make_ledger(path)
    _keeps_scanning_while_broken(ledger, "corrupt")
    ledger.stop(timeout=10)


def test_stop_flushes_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(str(path), station="s", site=SITE, acceptance=AcceptanceConfig(ledger=str(path)), flush_interval_s=3600)
    ledger.start()
    rng = random.Random(8)
    for _ in range(5):
        ledger.on_scan(scan_event(rng.choice(["6212345678901234567", "6298765432109876543"])))
    ledger.stop()
    assert db_scans(path) == 5
    # The WAL was checkpointed into the main file: a copy of ledger.sqlite alone is complete.
    wal = Path(str(path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_result_command_replies(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "ledger.sqlite")
    scan = unionpay_scan(random.Random(9))
    ledger.on_scan(scan)
    cmd = {"cmd": "result", "id": scan.id, "status": "paid", "channel": "unionpay", "medical_insurance": False, "amount_fen": 1234}
    assert ledger.result_command(cmd) == {"ok": True}
    assert ledger.result_command(cmd) == {"ok": False, "error": f"scan {scan.id} already has a paid result", "reason": "repeated"}
    bad = ledger.result_command({**cmd, "status": "done"})
    assert bad["ok"] is False and bad["reason"] == "invalid" and bad["error"].startswith("status: expected one of")
    assert ledger.status()["refused_results"] == 2


def test_injected_test_scans_are_not_evidence(tmp_path: Path) -> None:
    import dataclasses

    ledger = make_ledger(tmp_path / "ledger.sqlite")
    injected = dataclasses.replace(unionpay_scan(random.Random(10)), injected=True)
    ledger.on_scan(injected)
    assert ledger.snapshot().scans == {} and ledger.status()["injected_ignored"] == 1
    refused = ledger.on_result(injected.id, "paid", "unionpay", False, 1)
    assert (refused.ok, refused.reason) == (False, "unknown")
