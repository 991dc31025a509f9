"""The HIS's `result` command: its arguments, and the recent scan ids it may name.

`{"cmd":"result","id":"<scan id>","status":"paid"|"refunded"|"failed","channel":"unionpay",
"medical_insurance":true,"amount_fen":1234}`. The id must be a scan this station delivered
within the retention time; each status is taken once per scan (paid, then refunded, is two
results; paid twice is a repeat). Ids only: no code is kept here.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from typing import Any

from ..config import RESULT_STATUSES
from ..model import Channel
from .store import RecentScan

_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_CHANNELS = frozenset(c.value for c in Channel)
MAX_AMOUNT_FEN = 10**12  # ten billion yuan: anything above is a unit mistake, not a payment


class ResultError(ValueError):
    """A `result` command that is not well formed; the message is the reply's reason."""


@dataclass(frozen=True, slots=True)
class ResultRequest:
    scan_id: str
    status: str
    channel: str
    medical_insurance: bool
    amount_fen: int | None


def parse_result_command(msg: dict[str, Any]) -> ResultRequest:
    """Validate a `result` command's arguments (for the command table); raises ResultError."""
    scan_id = msg.get("id")
    if not isinstance(scan_id, str) or not _ID.fullmatch(scan_id):
        raise ResultError("id: expected the scan's id (the `id` of the scan event)")
    status = msg.get("status")
    if status not in RESULT_STATUSES:
        raise ResultError(f"status: expected one of {' | '.join(RESULT_STATUSES)}, got {_show(status)}")
    channel = msg.get("channel")
    if not isinstance(channel, str) or channel not in _CHANNELS:
        raise ResultError(f"channel: expected the channel that settled it (e.g. \"unionpay\"), got {_show(channel)}")
    medical = msg.get("medical_insurance", False)
    if not isinstance(medical, bool):
        raise ResultError(f"medical_insurance: expected true or false, got {_show(medical)}")
    amount = msg.get("amount_fen")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_AMOUNT_FEN):
        raise ResultError(f"amount_fen: expected a whole number of fen from 0 to {MAX_AMOUNT_FEN}, got {_show(amount)}")
    return ResultRequest(scan_id, str(status), channel, medical, amount)


def _show(v: Any) -> str:
    if isinstance(v, str):
        return f'"{v[:40]}"'
    return "nothing" if v is None else type(v).__name__


@dataclass(frozen=True, slots=True)
class ResultOutcome:
    ok: bool
    reason: str = ""  # unknown | expired | repeated | invalid, for a refused result
    message: str = ""
    scan: RecentScan | None = None

    def reply(self) -> dict[str, Any]:
        """The fields of the command's reply."""
        if self.ok:
            return {"ok": True}
        return {"ok": False, "error": self.message, "reason": self.reason}


class RecentScans:
    """Scan ids a result may name: at most `limit`, for `retention_s` (oldest forgotten first).

    Ids forgotten for room are told apart from ids never seen as long as memory allows: a
    smaller set of the last forgotten ids answers `expired` rather than `unknown`.
    """

    def __init__(self, retention_s: float, limit: int) -> None:
        self.retention_s = retention_s
        self.limit = limit
        self._scans: collections.OrderedDict[str, RecentScan] = collections.OrderedDict()
        self._forgotten: collections.OrderedDict[str, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._scans)

    def remember(self, scan: RecentScan) -> None:
        self._scans[scan.id] = scan
        self._scans.move_to_end(scan.id)
        while len(self._scans) > self.limit:
            old, _ = self._scans.popitem(last=False)
            self._forget(old)

    def adopt(self, scans: list[RecentScan], now: float) -> None:
        """Ids read back from the ledger at start; ones seen since then win."""
        for scan in scans:
            if scan.id not in self._scans and now - scan.seen <= self.retention_s:
                self._scans[scan.id] = scan
        ordered = sorted(self._scans.values(), key=lambda s: s.seen)
        self._scans = collections.OrderedDict((s.id, s) for s in ordered)
        while len(self._scans) > self.limit:
            old, _ = self._scans.popitem(last=False)
            self._forget(old)

    def check(self, request: ResultRequest, now: float) -> ResultOutcome:
        """Accept the result (and remember its status) or say why not."""
        self.expire(now)
        scan = self._scans.get(request.scan_id)
        if scan is None:
            if request.scan_id in self._forgotten:
                return ResultOutcome(False, "expired", f"scan {request.scan_id} is older than the result retention ({self.retention_s / 3600:g} h)")
            return ResultOutcome(False, "unknown", f"no scan {request.scan_id} on this station (or it is older than the retention)")
        if request.status in scan.statuses:
            return ResultOutcome(False, "repeated", f"scan {request.scan_id} already has a {request.status} result", scan)
        updated = scan._replace(statuses=scan.statuses | {request.status})
        self._scans[scan.id] = updated
        return ResultOutcome(True, scan=updated)

    def expire(self, now: float) -> None:
        cutoff = now - self.retention_s
        while self._scans:
            first = next(iter(self._scans.values()))
            if first.seen >= cutoff:
                break
            self._scans.popitem(last=False)
            self._forget(first.id)

    def _forget(self, scan_id: str) -> None:
        self._forgotten[scan_id] = None
        while len(self._forgotten) > max(1024, self.limit // 4):
            self._forgotten.popitem(last=False)
