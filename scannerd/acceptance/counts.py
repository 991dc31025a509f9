"""The acceptance evidence as data: counts of scans and of HIS-reported results, never a code.

Every room that carries evidence (the sqlite ledger, the retained MQTT message, the report)
speaks these rows, so a report from ledger files and one from the broker are built from the
same thing. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

SCHEMA_VERSION = 1


# Keys are NamedTuples, not frozen dataclasses: one is made per scan on the event loop, and a
# tuple is several times cheaper to build.


class ScanKey(NamedTuple):
    day: str  # local date of the scan, YYYY-MM-DD
    device: str
    role: str
    area: str
    channel: str
    kind: str


class ResultKey(NamedTuple):
    day: str  # local date the HIS reported the result
    device: str
    role: str
    area: str
    scan_channel: str  # what the classifier said about the scanned code
    scan_kind: str
    channel: str  # what the HIS said settled it
    medical_insurance: bool
    status: str  # paid | refunded | failed


@dataclass(frozen=True, slots=True)
class Tally:
    count: int
    first_ts: str
    last_ts: str

    def merge(self, other: Tally) -> Tally:
        return Tally(self.count + other.count, min(self.first_ts, other.first_ts), max(self.last_ts, other.last_ts))


class RunningTally:
    """A Tally updated in place: the event loop bumps one per scan without allocating."""

    __slots__ = ("count", "first_ts", "last_ts")

    def __init__(self, count: int, first_ts: str, last_ts: str) -> None:
        self.count, self.first_ts, self.last_ts = count, first_ts, last_ts

    def bump(self, ts: str) -> None:
        self.count += 1
        self.first_ts = min(self.first_ts, ts)
        self.last_ts = max(self.last_ts, ts)

    def merge(self, t: Tally) -> None:
        self.count += t.count
        self.first_ts = min(self.first_ts, t.first_ts)
        self.last_ts = max(self.last_ts, t.last_ts)

    def frozen(self) -> Tally:
        return Tally(self.count, self.first_ts, self.last_ts)


def bump(table: dict[Any, RunningTally], key: Any, ts: str) -> None:
    running = table.get(key)
    if running is None:
        table[key] = RunningTally(1, ts, ts)
    else:
        running.bump(ts)


def merge_into(table: dict[Any, RunningTally], key: Any, tally: Tally) -> None:
    running = table.get(key)
    if running is None:
        table[key] = RunningTally(tally.count, tally.first_ts, tally.last_ts)
    else:
        running.merge(tally)


def frozen(table: dict[Any, RunningTally]) -> dict[Any, Tally]:
    return {k: v.frozen() for k, v in table.items()}


def add(table: dict[Any, Tally], key: Any, tally: Tally) -> None:
    old = table.get(key)
    table[key] = tally if old is None else old.merge(tally)


@dataclass(frozen=True, slots=True)
class StationCounts:
    """One station's evidence: who it is, and its count rows."""

    station: str
    hospital: str = ""
    hospital_name: str = ""
    scans: Mapping[ScanKey, Tally] = field(default_factory=dict)
    results: Mapping[ResultKey, Tally] = field(default_factory=dict)

    def between(self, since: str = "", until: str = "") -> StationCounts:
        """Only the days from `since` to `until` (inclusive, YYYY-MM-DD; empty: open)."""

        def keep(day: str) -> bool:
            return (not since or day >= since) and (not until or day <= until)

        return replace(
            self,
            scans={k: v for k, v in self.scans.items() if keep(k.day)},
            results={k: v for k, v in self.results.items() if keep(k.day)},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "station": self.station,
            "hospital": self.hospital,
            "hospital_name": self.hospital_name,
            "scans": [
                [k.day, k.device, k.role, k.area, k.channel, k.kind, t.count, t.first_ts, t.last_ts]
                for k, t in sorted(self.scans.items(), key=lambda kv: _order(kv[0]))
            ],
            "results": [
                [k.day, k.device, k.role, k.area, k.scan_channel, k.scan_kind, k.channel, k.medical_insurance, k.status, t.count, t.first_ts, t.last_ts]
                for k, t in sorted(self.results.items(), key=lambda kv: _order(kv[0]))
            ],
        }


def _order(key: ScanKey | ResultKey) -> tuple[str, ...]:
    return tuple(str(v) for v in key)


class CountsFormatError(ValueError):
    """Evidence that does not parse (a stranger's retained message, a damaged file)."""


def from_json(data: Any) -> StationCounts:
    """Parse `StationCounts.to_json()` output; raises CountsFormatError with the reason."""
    if not isinstance(data, dict):
        raise CountsFormatError("expected a JSON object")
    if data.get("schema") != SCHEMA_VERSION:
        raise CountsFormatError(f"expected schema {SCHEMA_VERSION}, got {data.get('schema')!r}")
    station = data.get("station")
    if not isinstance(station, str) or not station:
        raise CountsFormatError("expected a station name")
    scans: dict[ScanKey, Tally] = {}
    results: dict[ResultKey, Tally] = {}
    try:
        for row in _rows(data, "scans", 9):
            add(scans, ScanKey(*(_text(v) for v in row[:6])), _tally(row[6:]))
        for row in _rows(data, "results", 12):
            day, device, role, area, scan_channel, scan_kind, channel = (_text(v) for v in row[:7])
            key = ResultKey(day, device, role, area, scan_channel, scan_kind, channel, _flag(row[7]), _text(row[8]))
            add(results, key, _tally(row[9:]))
    except (TypeError, ValueError) as e:
        raise CountsFormatError(str(e)) from None
    return StationCounts(
        station=station,
        hospital=_text(data.get("hospital", "")),
        hospital_name=_text(data.get("hospital_name", "")),
        scans=scans,
        results=results,
    )


def _rows(data: dict[str, Any], name: str, width: int) -> Iterable[list[Any]]:
    rows = data.get(name, [])
    if not isinstance(rows, list):
        raise CountsFormatError(f"{name}: expected a list")
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise CountsFormatError(f"{name}: expected rows of {width} values")
        yield row


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {type(v).__name__}")
    return v


def _tally(row: list[Any]) -> Tally:
    count, first, last = row
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"expected a count, got {count!r}")
    return Tally(count, _text(first), _text(last))
