"""From count rows to verdicts: which windows and kiosks in which areas still lack which kind.

Pure. A device (station + scanner name, in one role and area) is complete when every kind its
role requires has at least one HIS result of a counting status (paid or refunded by default)
on a scan of that kind. An area is complete when all its devices are; the hospital when every
area is (and every area the config requires has stations at all).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import AREAS, ROLES, AcceptanceConfig, AcceptanceKind, SiteConfig
from .counts import ResultKey, ScanKey, StationCounts


class EvidenceError(ValueError):
    """Evidence that cannot be put together (the same station twice, say)."""


@dataclass(frozen=True, slots=True)
class KindCell:
    scans: int = 0
    paid: int = 0
    refunded: int = 0
    failed: int = 0
    counted: int = 0  # results of a status that counts for this kind

    @property
    def done(self) -> bool:
        return self.counted > 0


@dataclass(frozen=True, slots=True)
class DeviceRow:
    station: str
    device: str
    role: str
    area: str
    required: tuple[str, ...]
    cells: dict[str, KindCell]
    first_ts: str
    last_ts: str

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(k for k in self.required if not self.cells[k].done)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True, slots=True)
class RoleSummary:
    role: str
    devices: int
    complete: int
    done_by_kind: dict[str, int]  # devices of this role with the kind done
    required: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AreaSummary:
    area: str
    rows: tuple[DeviceRow, ...]
    roles: tuple[RoleSummary, ...]

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.rows)


@dataclass(frozen=True, slots=True)
class Evidence:
    hospital: str
    hospital_name: str
    since: str
    until: str
    kinds: tuple[str, ...]  # the columns: every kind some role requires
    areas: tuple[AreaSummary, ...]
    stations: tuple[str, ...]
    missing_areas: tuple[str, ...] = ()  # required by [acceptance] areas, but no station there
    generated: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> tuple[DeviceRow, ...]:
        return tuple(r for a in self.areas for r in a.rows)

    @property
    def complete(self) -> bool:
        return bool(self.areas) and not self.missing_areas and all(a.complete for a in self.areas)

    def to_json(self) -> dict[str, Any]:
        return {
            "hospital": self.hospital,
            "hospital_name": self.hospital_name,
            "since": self.since or None,
            "until": self.until or None,
            "generated": self.generated,
            "stations": list(self.stations),
            "kinds": list(self.kinds),
            "complete": self.complete,
            "missing_areas": list(self.missing_areas),
            "areas": [
                {
                    "area": a.area,
                    "complete": a.complete,
                    "roles": [
                        {"role": r.role, "devices": r.devices, "complete": r.complete, "required": list(r.required), "done_by_kind": r.done_by_kind}
                        for r in a.roles
                    ],
                    "devices": [
                        {
                            "station": d.station,
                            "device": d.device,
                            "role": d.role,
                            "area": d.area,
                            "complete": d.complete,
                            "missing": list(d.missing),
                            "first_ts": d.first_ts,
                            "last_ts": d.last_ts,
                            "kinds": {
                                k: {"required": k in d.required, "scans": c.scans, "paid": c.paid, "refunded": c.refunded, "failed": c.failed, "done": c.done}
                                for k, c in d.cells.items()
                            },
                        }
                        for d in a.rows
                    ],
                }
                for a in self.areas
            ],
        }


def _scan_matches(kind: AcceptanceKind, scan_kind: str, scan_channel: str) -> bool:
    return scan_kind == kind.scan_kind and (not kind.scan_channel or scan_channel == kind.scan_channel)


def _result_matches(kind: AcceptanceKind, key: ResultKey) -> bool:
    return (
        _scan_matches(kind, key.scan_kind, key.scan_channel)
        and (not kind.result_channel or key.channel == kind.result_channel)
        and (kind.result_medical_insurance is None or key.medical_insurance == kind.result_medical_insurance)
    )


def _cell(kind: AcceptanceKind, scans: Iterable[tuple[ScanKey, int]], results: Iterable[tuple[ResultKey, int]]) -> KindCell:
    n_scans = sum(n for k, n in scans if _scan_matches(kind, k.kind, k.channel))
    by_status: collections.Counter[str] = collections.Counter()
    for k, n in results:
        if _result_matches(kind, k):
            by_status[k.status] += n
    counted = sum(by_status[s] for s in kind.result_statuses)
    return KindCell(n_scans, by_status["paid"], by_status["refunded"], by_status["failed"], counted)


def _unique_stations(stations: list[StationCounts]) -> None:
    seen: dict[str, int] = collections.Counter(s.station for s in stations)
    twice = sorted(name for name, n in seen.items() if n > 1)
    if twice:
        raise EvidenceError(f"station {twice[0]} appears more than once (the same ledger copied twice?): each station's counts must come from one source")


def _hospital(site: SiteConfig, stations: list[StationCounts]) -> tuple[str, str, tuple[str, ...]]:
    """The config's [site] wins; else what the stations say (and a note if they disagree)."""
    codes = collections.Counter(s.hospital for s in stations if s.hospital)
    names = collections.Counter(s.hospital_name for s in stations if s.hospital_name)
    notes = []
    if not site.hospital and len(codes) > 1:
        notes.append(f"stations name different hospitals: {', '.join(sorted(codes))}")
    hospital = site.hospital or (codes.most_common(1)[0][0] if codes else "")
    name = site.hospital_name or (names.most_common(1)[0][0] if names else "")
    return hospital, name, tuple(notes)


def build_evidence(
    stations: list[StationCounts],
    acceptance: AcceptanceConfig,
    site: SiteConfig,
    *,
    since: str = "",
    until: str = "",
    generated: str = "",
) -> Evidence:
    _unique_stations(stations)
    kinds_by_name = {k.name: k for k in acceptance.kinds}
    columns = tuple(dict.fromkeys(name for role in ROLES for name in acceptance.required.get(role, ())))
    devices: dict[tuple[str, str, str, str], tuple[list[tuple[ScanKey, int]], list[tuple[ResultKey, int]], list[str]]] = {}
    for station in stations:
        counts = station.between(since, until)
        for sk, t in counts.scans.items():
            entry = devices.setdefault((station.station, sk.device, sk.role, sk.area), ([], [], []))
            entry[0].append((sk, t.count))
            entry[2].extend((t.first_ts, t.last_ts))
        for rk, rt in counts.results.items():
            entry = devices.setdefault((station.station, rk.device, rk.role, rk.area), ([], [], []))
            entry[1].append((rk, rt.count))
    rows = []
    for (station_name, device, role, area), (scans, results, times) in devices.items():
        required = tuple(acceptance.required.get(role, ()))
        cells = {name: _cell(kinds_by_name[name], scans, results) for name in columns}
        rows.append(DeviceRow(station_name, device, role, area, required, cells, min(times, default=""), max(times, default="")))

    def area_order(area: str) -> tuple[int, str]:
        return (AREAS.index(area) if area in AREAS else len(AREAS), area)

    def row_order(r: DeviceRow) -> tuple[int, str, str]:
        return (ROLES.index(r.role) if r.role in ROLES else len(ROLES), r.station, r.device)

    areas = []
    for area in sorted({r.area for r in rows}, key=area_order):
        in_area = tuple(sorted((r for r in rows if r.area == area), key=row_order))
        summaries = []
        for role in sorted({r.role for r in in_area}, key=lambda x: (ROLES.index(x) if x in ROLES else len(ROLES), x)):
            of_role = [r for r in in_area if r.role == role]
            required = tuple(acceptance.required.get(role, ()))
            summaries.append(
                RoleSummary(role, len(of_role), sum(r.complete for r in of_role), {k: sum(r.cells[k].done for r in of_role) for k in required}, required)
            )
        areas.append(AreaSummary(area, in_area, tuple(summaries)))
    hospital, name, notes = _hospital(site, stations)
    present = {a.area for a in areas}
    return Evidence(
        hospital=hospital,
        hospital_name=name,
        since=since,
        until=until,
        kinds=columns,
        areas=tuple(areas),
        stations=tuple(sorted(s.station for s in stations)),
        missing_areas=tuple(a for a in acceptance.areas if a not in present),
        generated=generated,
        notes=notes,
    )
