"""The oracle: knows every scan the scenario made and judges every event the HIS side received.

Verdicts (each must be 0):
- lost: a complete scan neither delivered to an HIS nor counted expired by the daemon;
- duplicated: a scan settled twice (two receipts that count, or one code under two ids);
- late: a scan handed to an HIS older than its TTL;
- leaked: a full sensitive code in a monitor's event, the daemon's log or any file it wrote;
- wrong: an event the scenario cannot explain (a code never scanned, a partial read that came
  out as a scan, a reject without a reason, a kind other than the rules give).

Codes are held in memory only: nothing here writes one to disk or prints one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codes import Code


@dataclass
class Made:
    code: Code
    device: str
    done_at: float  # time.monotonic() after the terminator was written
    ttl_s: float
    ids: set[str] = field(default_factory=set)
    settled: int = 0  # receipts that count as delivery


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    leaked: int = 0
    wrong: int = 0
    notes: list[str] = field(default_factory=list)
    partials: tuple[int, int] = (0, 0)  # unplugged mid-scan: (rejected, never read by the daemon)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.late or self.leaked or self.wrong)

    def note(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.notes) < 30:
            self.notes.append(f"{kind}: {text}")


class Oracle:
    def __init__(self) -> None:
        self.made: dict[str, Made] = {}
        self.partials: dict[str, str] = {}  # partial text → device (unplugged mid-scan)
        self.expected_rejects: list[tuple[str, str]] = []  # (device, why) in order made
        self.rejects: list[dict[str, Any]] = []
        self.device_states: list[dict[str, Any]] = []
        self.partials_rejected = 0
        self.partials_unread = 0
        self.verdict = Verdict()
        self.by_id: dict[str, Made] = {}

    # --- what the scenario did -------------------------------------------------------------

    def scanned(self, code: Code, device: str, ttl_s: float) -> None:
        assert code.text not in self.made, "the generator never repeats a code (the daemon would suppress it)"
        self.made[code.text] = Made(code, device, time.monotonic(), ttl_s)

    def partial(self, text: str, device: str) -> None:
        self.partials[text] = device

    def partial_outcome(self, device: str, rejected: bool) -> None:
        """A scan cut by an unplug: rejected as device_removed, or (rarely, when the unplug beat
        the pty's hand-over of the bytes) never read at all. Never a scan: receipt() checks."""
        if rejected:
            self.partials_rejected += 1
            self.expected_rejects.append((device, "device_removed"))
        else:
            self.partials_unread += 1

    def garbage(self, device: str, why: str) -> None:
        self.expected_rejects.append((device, why))

    # --- what the HIS side received ------------------------------------------------------------

    def receipt(self, client: str, event: dict[str, Any], counts: bool) -> None:
        """A scan event read by an HIS connection; `counts` when it settles the scan (no acks,
        or acked). A receipt by an acking HIS that went away unacked does not count."""
        code = event.get("code", "")
        made = self.made.get(code)
        if made is None:
            why = "a partial read delivered as a scan" if code in self.partials else "a code never scanned"
            self.verdict.note("wrong", f"{client}: {why} (id {event.get('id')}, device {event.get('device')})")
            return
        made.ids.add(event["id"])
        self.by_id[event["id"]] = made
        if len(made.ids) > 1:
            self.verdict.note("duplicated", f"{client}: one scan under two ids {sorted(made.ids)}")
        if event.get("kind") != made.code.kind:
            self.verdict.note("wrong", f"{client}: id {event['id']} kind {event.get('kind')}, expected {made.code.kind}")
        if event.get("device") != made.device:
            self.verdict.note("wrong", f"{client}: id {event['id']} from {event.get('device')}, scanned on {made.device}")
        age_ms = event.get("age_ms")
        if isinstance(age_ms, (int, float)) and age_ms > made.ttl_s * 1000:
            self.verdict.note("late", f"{client}: id {event['id']} handed over {age_ms:.0f} ms old, TTL {made.ttl_s:g} s")
        if counts:
            self.settle(client, event["id"])

    def settle(self, client: str, event_id: str) -> None:
        """The scan `event_id` is the HIS's now (read without acks, or its ack accepted)."""
        made = self.by_id[event_id]
        made.settled += 1
        if made.settled > 1:
            self.verdict.note("duplicated", f"{client}: id {event_id} settled {made.settled} times")

    def monitor_event(self, client: str, event: dict[str, Any]) -> None:
        """A monitor's scan event: its code must be masked (monitors never see a full code)."""
        if event.get("type") != "scan":
            return
        made = self.made.get(event.get("code", ""))
        if made is not None and made.code.sensitive:
            self.verdict.note("leaked", f"{client}: a monitor received a full {made.code.kind} code (id {event.get('id')})")

    def reject(self, event: dict[str, Any]) -> None:
        self.rejects.append(event)
        if not event.get("reason"):
            self.verdict.note("wrong", f"reject without a reason on {event.get('device')}")

    # --- the end -------------------------------------------------------------------------------

    def settled(self) -> int:
        return sum(1 for m in self.made.values() if m.settled)

    def unsettled(self) -> list[Made]:
        return [m for m in self.made.values() if not m.settled]

    def finish(self, expired_by_daemon: int, log_text: str, files: list[Path]) -> Verdict:
        v = self.verdict
        missing = len(self.unsettled())
        if missing != expired_by_daemon:
            # Expired scans are counted, not named: the numbers must agree exactly.
            v.lost += abs(missing - expired_by_daemon)
            v.notes.append(f"lost: {missing} scans never settled, the daemon counted {expired_by_daemon} expired")
        self._check_rejects()
        secrets = [m.code.text for m in self.made.values() if m.code.sensitive]
        secrets += [p for p in self.partials if len(p) >= 12]
        for text in secrets:
            if text in log_text:
                v.note("leaked", "a full sensitive code in the daemon's log")
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            for text in secrets:
                if text.encode() in data:
                    v.note("leaked", f"a full sensitive code in {path.name}")
        return v

    def _check_rejects(self) -> None:
        # Every partial read and garbage burst came out as a reject with its reason, per device
        # in order (a monitor that never left saw them all).
        seen: dict[str, list[str]] = {}
        for r in self.rejects:
            seen.setdefault(r.get("device", ""), []).append(r.get("reason", ""))
        for device, why in self.expected_rejects:
            reasons = seen.get(device, [])
            if why in reasons:
                reasons.remove(why)
            else:
                self.verdict.note("wrong", f"expected a {why} reject on {device}, got {reasons[:5]}")

