"""The ledger file: sqlite3 in WAL mode, counts and recent scan ids, nothing else.

Synchronous on purpose: the daemon calls it from its one writer thread, the report from the
command line. Each batch is one transaction, so a crash leaves the file as it was after the
last committed batch (WAL: readers never see half a batch).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from .counts import ResultKey, ScanKey, StationCounts, Tally

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scans (
    day TEXT NOT NULL, device TEXT NOT NULL, role TEXT NOT NULL, area TEXT NOT NULL,
    channel TEXT NOT NULL, kind TEXT NOT NULL,
    count INTEGER NOT NULL, first_ts TEXT NOT NULL, last_ts TEXT NOT NULL,
    PRIMARY KEY (day, device, role, area, channel, kind)
);
CREATE TABLE IF NOT EXISTS results (
    day TEXT NOT NULL, device TEXT NOT NULL, role TEXT NOT NULL, area TEXT NOT NULL,
    scan_channel TEXT NOT NULL, scan_kind TEXT NOT NULL,
    channel TEXT NOT NULL, medical_insurance INTEGER NOT NULL, status TEXT NOT NULL,
    count INTEGER NOT NULL, first_ts TEXT NOT NULL, last_ts TEXT NOT NULL,
    PRIMARY KEY (day, device, role, area, scan_channel, scan_kind, channel, medical_insurance, status)
);
-- Scan ids (never codes) a HIS `result` may still name, with what the scan was and which
-- statuses it has had, so a repeat is refused across a restart too.
CREATE TABLE IF NOT EXISTS recent_scans (
    id TEXT PRIMARY KEY, seen REAL NOT NULL,
    day TEXT NOT NULL, device TEXT NOT NULL, role TEXT NOT NULL, area TEXT NOT NULL,
    channel TEXT NOT NULL, kind TEXT NOT NULL, statuses TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recent_scans_seen ON recent_scans (seen);
"""

SCHEMA_VERSION = "1"


class LedgerFileError(Exception):
    """The ledger file cannot be opened, read or written; `reason` says why in plain words."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class RecentScan(NamedTuple):
    id: str
    seen: float  # wall clock (time.time()): it must mean the same after a restart
    day: str
    device: str
    role: str
    area: str
    channel: str
    kind: str
    statuses: frozenset[str] = frozenset()


def _describe(path: str, e: Exception) -> str:
    text = str(e)
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return f"cannot open: {e.filename} is not a directory"
    if isinstance(e, OSError):
        return f"cannot open: {e.strerror} ({e.filename})"
    if isinstance(e, sqlite3.DatabaseError) and "not a database" in text:
        return "corrupt: not an sqlite database (move it aside; a new ledger starts empty)"
    if "disk is full" in text or "database or disk is full" in text:
        return "disk full"
    if "readonly" in text or "read-only" in text:
        return "read-only"
    if "unable to open" in text:
        parent = os.path.dirname(path) or "."
        return f"cannot open (is {parent} a writable directory?)"
    return text


def connect(path: str, *, create: bool, pragmas: Mapping[str, str] | None = None) -> sqlite3.Connection:
    """Open (and with `create`, make) a ledger file. Raises LedgerFileError with the reason."""
    try:
        if create:
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        else:
            if not os.path.isfile(path):
                raise LedgerFileError(path, "not found")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            for name, value in (pragmas or {}).items():
                conn.execute(f"PRAGMA {name}={value}")
            if create:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise LedgerFileError(path, f"cannot use WAL mode (journal_mode is {mode})")
                # NORMAL in WAL: a power cut may lose the last commits, never corrupt the file.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            else:
                conn.execute("SELECT count(*) FROM scans").fetchone()
        except BaseException:
            conn.close()
            raise
    except (sqlite3.Error, OSError) as e:
        raise LedgerFileError(path, _describe(path, e)) from None
    return conn


def set_meta(conn: sqlite3.Connection, values: Mapping[str, str]) -> None:
    conn.executemany("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", list(values.items()))


def write_batch(
    conn: sqlite3.Connection,
    path: str,
    scans: Mapping[ScanKey, Tally],
    results: Mapping[ResultKey, Tally],
    recent: Iterable[RecentScan],
    forget_before: float,
) -> None:
    """Add one batch of counts and recent ids in one transaction (all or nothing)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO scans VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET count = count + excluded.count,"
                " first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)",
                [(k.day, k.device, k.role, k.area, k.channel, k.kind, t.count, t.first_ts, t.last_ts) for k, t in scans.items()],
            )
            conn.executemany(
                "INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET count = count + excluded.count,"
                " first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)",
                [
                    (k.day, k.device, k.role, k.area, k.scan_channel, k.scan_kind, k.channel, int(k.medical_insurance), k.status, t.count, t.first_ts, t.last_ts)
                    for k, t in results.items()
                ],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO recent_scans VALUES (?,?,?,?,?,?,?,?,?)",
                [(r.id, r.seen, r.day, r.device, r.role, r.area, r.channel, r.kind, ",".join(sorted(r.statuses))) for r in recent],
            )
            conn.execute("DELETE FROM recent_scans WHERE seen < ?", (forget_before,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLITE_FULL and friends roll back by themselves
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        raise LedgerFileError(path, _describe(path, e)) from None


def read_counts(conn: sqlite3.Connection, path: str, station: str = "") -> StationCounts:
    """Every count row in the file, with the station and hospital it says it belongs to."""
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        scans = {
            ScanKey(*row[:6]): Tally(*row[6:])
            for row in conn.execute("SELECT day, device, role, area, channel, kind, count, first_ts, last_ts FROM scans")
        }
        results = {
            ResultKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), row[8]): Tally(*row[9:])
            for row in conn.execute(
                "SELECT day, device, role, area, scan_channel, scan_kind, channel, medical_insurance, status, count, first_ts, last_ts FROM results"
            )
        }
    except sqlite3.Error as e:
        raise LedgerFileError(path, _describe(path, e)) from None
    return StationCounts(
        station=meta.get("station") or station or Path(path).stem,
        hospital=meta.get("hospital", ""),
        hospital_name=meta.get("hospital_name", ""),
        scans=scans,
        results=results,
    )


def read_recent(conn: sqlite3.Connection, path: str, since: float, limit: int) -> list[RecentScan]:
    """The newest `limit` scan ids seen at or after `since`, oldest first."""
    try:
        rows = conn.execute(
            "SELECT id, seen, day, device, role, area, channel, kind, statuses FROM recent_scans WHERE seen >= ? ORDER BY seen DESC LIMIT ?",
            (since, limit),
        ).fetchall()
    except sqlite3.Error as e:
        raise LedgerFileError(path, _describe(path, e)) from None
    return [
        RecentScan(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], frozenset(s for s in r[8].split(",") if s))
        for r in reversed(rows)
    ]


def read_ledger_file(path: str) -> StationCounts:
    """A ledger file read-only, as the report reads copies from stations."""
    conn = connect(path, create=False)
    try:
        return read_counts(conn, path)
    finally:
        conn.close()
