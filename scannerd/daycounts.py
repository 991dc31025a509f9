"""Today's counts per device (scans, rejects by reason), kept across restarts in the state directory.

Counts only: never a code, a masked code or an event id. The daemon counts in memory and calls
`flush()` from its status loop and at shutdown; each write is atomic (a temporary file, fsync,
rename), so a crash loses at most the last few seconds of counts and never leaves half a file.
A new local day starts from zero.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import structlog

from .model import Event, RejectEvent, ScanEvent
from .sinks.base import Sink

__all__ = ["FILE_NAME", "FORMAT", "DayCountSink", "DayCounts", "default_state_dir"]

log = structlog.get_logger("scannerd.daycounts")

FORMAT = "scannerd-daycounts/1"
FILE_NAME = "daycounts.json"
MAX_FILE_BYTES = 1 << 20
# Names and reasons come from the config and the rules, but an `inject` for invented device
# names must not grow the file without bound.
MAX_DEVICES = 256
MAX_REASONS = 64
OTHER = "(other)"
_LABEL = re.compile(r"^[\w.:@()-]{1,64}$")


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """systemd's StateDirectory= ($STATE_DIRECTORY, /var/lib/scannerd under the unit); root:
    /var/lib/scannerd; anyone else: $XDG_STATE_HOME/scannerd (~/.local/state/scannerd)."""
    env = dict(os.environ) if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    if os.geteuid() == 0:
        return Path("/var/lib/scannerd")
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return Path(base) / "scannerd"


class DayCounts:
    """scan(device) / reject(device, reason) while the daemon runs; snapshot() for `status`."""

    def __init__(self, path: Path, today: Callable[[], date] = date.today) -> None:
        self.path = path
        self._today = today
        self.day = today()
        self.devices: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.load_problem: str | None = None  # why the file on disk was not used, for one log line

    @classmethod
    def open(cls, directory: Path, today: Callable[[], date] = date.today) -> DayCounts:
        counts = cls(directory / FILE_NAME, today)
        counts.load_problem = counts._load()
        return counts

    # --- counting ------------------------------------------------------------------------

    def scan(self, device: str) -> None:
        self._device(device)["scans"] += 1
        self.dirty = True

    def reject(self, device: str, reason: str) -> None:
        rejects: dict[str, int] = self._device(device)["rejects"]
        key = reason if _LABEL.match(reason) and (reason in rejects or len(rejects) < MAX_REASONS) else OTHER
        rejects[key] = rejects.get(key, 0) + 1
        self.dirty = True

    def _device(self, device: str) -> dict[str, Any]:
        self._roll()
        if device not in self.devices:
            if not _LABEL.match(device) or len(self.devices) >= MAX_DEVICES:
                device = OTHER
            self.devices.setdefault(device, {"scans": 0, "rejects": {}})
        return self.devices[device]

    def _roll(self) -> None:
        today = self._today()
        if today != self.day:
            self.day, self.devices, self.dirty = today, {}, True

    # --- reading ---------------------------------------------------------------------------

    @property
    def scans(self) -> int:
        self._roll()
        return sum(int(d["scans"]) for d in self.devices.values())

    def snapshot(self) -> dict[str, Any]:
        """{"date": "2026-12-01", "scans": 57, "rejects": 3, "devices": {name: {"scans": n, "rejects": {reason: n}}}}"""
        self._roll()
        devices = {name: {"scans": d["scans"], "rejects": dict(sorted(d["rejects"].items()))} for name, d in sorted(self.devices.items())}
        return {
            "date": self.day.isoformat(),
            "scans": sum(d["scans"] for d in devices.values()),
            "rejects": sum(sum(d["rejects"].values()) for d in devices.values()),
            "devices": devices,
        }

    # --- the file ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the counts if they changed since the last write. Raises OSError (the caller logs
        it once; counting goes on in memory)."""
        self._roll()
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        body = json.dumps({"format": FORMAT, **self.snapshot()}, ensure_ascii=False, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".daycounts.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.dirty = False

    def _load(self) -> str | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"{self.path}: cannot read: {e.strerror}"
        if len(raw) > MAX_FILE_BYTES:
            return f"{self.path}: larger than {MAX_FILE_BYTES} bytes, not a day's counts"
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"{self.path}: not JSON ({e}); starting today's counts from zero"
        problem = _check(data)
        if problem:
            return f"{self.path}: {problem}; starting today's counts from zero"
        if data["date"] != self.day.isoformat():
            return None  # yesterday's counts: today starts from zero, as it should
        for name, d in data["devices"].items():
            self.devices[name] = {"scans": d["scans"], "rejects": dict(d["rejects"])}
        return None


def _check(data: Any) -> str | None:
    """Why `data` is not a day-counts file, or None."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f'expected {{"format": "{FORMAT}", …}}'
    if not isinstance(data.get("date"), str):
        return 'expected "date" as YYYY-MM-DD'
    devices = data.get("devices")
    if not isinstance(devices, dict) or len(devices) > MAX_DEVICES + 1:
        return 'expected "devices" as an object of device counts'
    for name, d in devices.items():
        if not _LABEL.match(name) and name != OTHER:
            return f"device name {name[:40]!r} is not a scanner name"
        if not isinstance(d, dict) or not _count(d.get("scans")) or not isinstance(d.get("rejects"), dict):
            return f'device {name!r}: expected {{"scans": n, "rejects": {{reason: n}}}}'
        for reason, n in d["rejects"].items():
            if not (_LABEL.match(reason) or reason == OTHER) or not _count(n):
                return f"device {name!r}: reject counts must be reason → non-negative integer"
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0



class DayCountSink(Sink):
    """Counts what the pipeline emits (scans, rejects by reason) into DayCounts. It holds no
    event: a scan is counted once, when the pipeline emits it, whoever then receives it."""

    name = "daycounts"

    def __init__(self, counts: DayCounts) -> None:
        self.counts = counts
        self._write_failed = False

    async def start(self) -> None:
        if self.counts.load_problem:
            log.warning("daycounts_reset", problem=self.counts.load_problem)

    async def stop(self) -> None:
        self.flush()

    def deliver(self, event: Event) -> None:
        if isinstance(event, ScanEvent):
            self.counts.scan(event.device.name)
        elif isinstance(event, RejectEvent):
            self.counts.reject(event.device, event.reason)

    def flush(self) -> None:
        """Write the counts if they changed; one log line when writing starts or stops failing."""
        try:
            self.counts.flush()
        except OSError as e:
            if not self._write_failed:
                log.error("daycounts_unwritable", path=str(self.counts.path), error=e.strerror or str(e))
            self._write_failed = True
            return
        if self._write_failed:
            log.info("daycounts_writable", path=str(self.counts.path))
        self._write_failed = False
