"""The station's acceptance ledger: counts scans and HIS results, writes them off the event loop.

The event loop only adds to in-memory tallies (a dict update under a lock: a scan's latency
includes no disk write). One writer thread takes what has accumulated every `flush_interval_s`
and commits it as one transaction, so a crash loses at most the last interval. A ledger that
cannot be written (corrupt, read-only, disk full) is logged once, shown in `status()`, and
retried; the counts wait in memory and scanning goes on.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ..config import AcceptanceConfig, SiteConfig
from ..model import ScanEvent
from ..protocol import wall_clock_iso
from .counts import (
    ResultKey,
    RunningTally,
    ScanKey,
    StationCounts,
    bump,
    frozen,
    merge_into,
)
from .results import (
    RecentScans,
    ResultError,
    ResultOutcome,
    ResultRequest,
    parse_result_command,
)
from .store import (
    LedgerFileError,
    RecentScan,
    connect,
    read_counts,
    read_recent,
    set_meta,
    write_batch,
)

log = structlog.get_logger("scannerd.acceptance")

Listener = Callable[[], None]


class Ledger:
    def __init__(
        self,
        path: str,
        *,
        station: str,
        site: SiteConfig,
        acceptance: AcceptanceConfig,
        flush_interval_s: float = 0.5,
        retry_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        pragmas: Mapping[str, str] | None = None,
    ) -> None:
        """`pragmas`: extra sqlite PRAGMAs on open (tests use max_page_count to fill the "disk")."""
        self.path = path
        self._station = station
        self._site = site
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._clock = clock
        self._pragmas = dict(pragmas or {})
        self._recent = RecentScans(acceptance.result_retention_h * 3600, acceptance.result_ids_max)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # Everything counted since start (plus the file's rows once read): what fleet publishes.
        self._scans: dict[ScanKey, RunningTally] = {}
        self._results: dict[ResultKey, RunningTally] = {}
        # Not yet committed.
        self._pending_scans: dict[ScanKey, RunningTally] = {}
        self._pending_results: dict[ResultKey, RunningTally] = {}
        self._pending_recent: dict[str, RecentScan] = {}

        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._state = "stopped"
        self._error: LedgerFileError | None = None
        self._counts = {"scans": 0, "injected_ignored": 0, "results": 0, "refused_results": 0, "batches": 0, "write_errors": 0}
        self._flushed_scans = 0
        self._in_flight = 0  # counts in the batch being written
        self._loaded = False  # the file's rows have joined the in-memory totals
        self._first_open = threading.Event()  # the writer has tried the file once

    # -- the event loop's side ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._state = "starting"
        self._thread = threading.Thread(target=self._writer, name="ledger-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is pending and close the file (bounded: a stuck disk does not hang stop)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify()
        thread.join(timeout)
        if thread.is_alive():
            log.error("ledger.stop_timeout", path=self.path, pending=self.pending())

    def wait_opened(self, timeout: float) -> bool:
        """Block until the writer has tried the file once (its rows are then in snapshot() if it
        opened). For a caller that must not publish counts without the file's; not on the loop."""
        return self._first_open.wait(timeout)

    def add_listener(self, listener: Listener) -> None:
        """Called (on the caller's thread) after every counted scan or result."""
        self._listeners.append(listener)

    def on_scan(self, event: ScanEvent) -> None:
        """Count one scan and remember its id for a later `result`.

        Injected test scans (`inject`) are not evidence: not counted, and a result naming one
        is refused as unknown."""
        if event.injected:
            with self._lock:
                self._counts["injected_ignored"] += 1
            return
        now = self._clock()
        c = event.classification
        ts = event.ts
        key = ScanKey(ts[:10], event.device.name, event.device.role, event.device.area, c.channel, c.kind)
        recent = RecentScan(event.id, now, key.day, key.device, key.role, key.area, key.channel, key.kind)
        with self._lock:
            bump(self._scans, key, ts)
            bump(self._pending_scans, key, ts)
            self._recent.remember(recent)
            self._pending_recent[recent.id] = recent
            self._counts["scans"] += 1
        self._notify()

    def on_result(self, scan_id: str, status: str, channel: str, medical_insurance: bool, amount_fen: int | None = None) -> ResultOutcome:
        """Count a HIS-reported result on a recent scan, or say why it is refused."""
        return self.record_result(ResultRequest(scan_id, status, channel, medical_insurance, amount_fen))

    def result_command(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The `result` command's reply fields: validation, then the recent-id check."""
        try:
            request = parse_result_command(msg)
        except ResultError as e:
            with self._lock:
                self._counts["refused_results"] += 1
            return {"ok": False, "error": str(e), "reason": "invalid"}
        return self.record_result(request).reply()

    def record_result(self, request: ResultRequest) -> ResultOutcome:
        now = self._clock()
        ts = wall_clock_iso(int(now * 1e9))  # the same form as a scan's ts
        with self._lock:
            outcome = self._recent.check(request, now)
            if not outcome.ok or outcome.scan is None:
                self._counts["refused_results"] += 1
            else:
                s = outcome.scan
                key = ResultKey(ts[:10], s.device, s.role, s.area, s.channel, s.kind, request.channel, request.medical_insurance, request.status)
                bump(self._results, key, ts)
                bump(self._pending_results, key, ts)
                self._pending_recent[s.id] = s
                self._counts["results"] += 1
        if outcome.ok:
            self._notify()
        else:
            log.info("ledger.result_refused", id=request.scan_id, reason=outcome.reason)
        return outcome

    def snapshot(self) -> StationCounts:
        """Every count this station holds (file and memory), as the fleet view publishes it."""
        with self._lock:
            return StationCounts(self._station, self._site.hospital, self._site.hospital_name, frozen(self._scans), frozen(self._results))

    def pending(self) -> int:
        with self._lock:
            return self._pending_locked()

    def _pending_locked(self) -> int:
        # Counted, not yet committed: waiting, plus the batch the writer holds right now.
        waiting = sum(t.count for t in self._pending_scans.values()) + sum(t.count for t in self._pending_results.values())
        return waiting + self._in_flight

    def status(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                "state": self._state,
                "path": self.path,
                "pending": self._pending_locked(),
                "recent_ids": len(self._recent),
                "flushed_scans": self._flushed_scans,
                **self._counts,
            }
            if self._error is not None:
                out["error"] = self._error.reason
        return out

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not cost a scan its count
                log.exception("ledger.listener_failed")

    # -- the writer thread -------------------------------------------------------------------

    def _writer(self) -> None:
        conn: sqlite3.Connection | None = None
        next_open = 0.0
        try:
            while True:
                with self._lock:
                    stopping = self._stopping  # read before the flush: a stop gets a last one
                if conn is None and time.monotonic() >= next_open:
                    conn = self._open()
                    self._first_open.set()
                    if conn is None:
                        next_open = time.monotonic() + self._retry_interval_s
                if conn is not None:
                    if self._flush(conn):
                        self._succeeded()
                    else:
                        conn.close()
                        conn = None
                        next_open = time.monotonic() + self._retry_interval_s
                if stopping:
                    break
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(self._flush_interval_s)
        finally:
            if conn is not None:
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a copied file is then complete
                except sqlite3.Error:
                    pass
                conn.close()
            with self._lock:
                self._state = "stopped" if self._error is None else self._state
            left = self.pending()
            if left:
                log.error("ledger.unwritten_at_stop", path=self.path, pending=left)

    def _open(self) -> sqlite3.Connection | None:
        try:
            conn = connect(self.path, create=True, pragmas=self._pragmas)
            try:
                set_meta(conn, {"station": self._station, "hospital": self._site.hospital, "hospital_name": self._site.hospital_name})
                stored = read_counts(conn, self.path, self._station)
                now = self._clock()
                recent = read_recent(conn, self.path, now - self._recent.retention_s, self._recent.limit)
            except BaseException:
                conn.close()
                raise
        except LedgerFileError as e:
            self._failed(e)
            return None
        with self._lock:
            if not self._loaded:
                self._loaded = True
                # The file's rows join what the loop counted meanwhile (none of that is written yet).
                for k, t in stored.scans.items():
                    merge_into(self._scans, k, t)
                for rk, rt in stored.results.items():
                    merge_into(self._results, rk, rt)
                self._recent.adopt(recent, now)
        return conn

    def _flush(self, conn: sqlite3.Connection) -> bool:
        with self._lock:
            running_scans, self._pending_scans = self._pending_scans, {}
            running_results, self._pending_results = self._pending_results, {}
            recent, self._pending_recent = self._pending_recent, {}
            self._in_flight = sum(t.count for t in running_scans.values()) + sum(t.count for t in running_results.values())
        # Taken out of the loop's reach above: nothing bumps these any more.
        scans, results = frozen(running_scans), frozen(running_results)
        if not scans and not results and not recent:
            return True
        try:
            write_batch(conn, self.path, scans, results, recent.values(), self._clock() - self._recent.retention_s)
        except LedgerFileError as e:
            with self._lock:
                # Put the batch back in front of what came meanwhile: nothing counted is lost.
                for k, t in scans.items():
                    merge_into(self._pending_scans, k, t)
                for rk, rt in results.items():
                    merge_into(self._pending_results, rk, rt)
                for scan_id, r in recent.items():
                    self._pending_recent.setdefault(scan_id, r)
                self._trim_pending_recent()
                self._in_flight = 0
                self._counts["write_errors"] += 1
            self._failed(e)
            return False
        with self._lock:
            self._in_flight = 0
            self._counts["batches"] += 1
            self._flushed_scans += sum(t.count for t in scans.values())
        return True

    def _trim_pending_recent(self) -> None:
        # While the disk is down, only the ids the registry still holds are worth writing.
        over = len(self._pending_recent) - self._recent.limit
        if over > 0:
            for scan_id in list(self._pending_recent)[:over]:
                del self._pending_recent[scan_id]

    def _succeeded(self) -> None:
        with self._lock:
            recovered = self._error is not None
            self._error = None
            self._state = "ok"
        if recovered:
            log.info("ledger.recovered", path=self.path)

    def _failed(self, error: LedgerFileError) -> None:
        with self._lock:
            first = self._error is None or self._error.reason != error.reason
            self._error = error
            self._state = "error"
        if first:
            # Logged once per reason; status() shows it until the file works again.
            log.error("ledger.unwritable", path=self.path, reason=error.reason, retry_s=self._retry_interval_s)
