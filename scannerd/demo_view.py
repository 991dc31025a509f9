"""What `scannerd demo` prints: a live table of what the HIS receives, and a one-line summary.

Pure: events (as decoded from the socket) in, text out. Codes are shown masked only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .i18n import _, ljust
from .latency_window import percentile
from .model import mask

# Column widths, in terminal columns (Chinese headings are two columns a character).
_WIDTHS = (12, 13, 10, 26, 24)


def _row(*cells: str) -> str:
    *fixed, last = cells
    return ("".join(ljust(c, w) + " " for c, w in zip(fixed, _WIDTHS, strict=False)) + last).rstrip()


def header() -> str:
    return _row(_("time"), _("device"), _("channel"), _("kind"), _("code (masked)"), _("latency"))


def _clock(event: dict[str, Any]) -> str:
    ts = event.get("ts")
    if isinstance(ts, str) and len(ts) >= 23:
        return ts[11:23]
    return time.strftime("%H:%M:%S") + ".000"


def shown_code(event: dict[str, Any]) -> str:
    """The code as the table shows it: masked, whatever form the daemon sent (a monitor
    subscription gets `masked`; an older daemon sends `code`)."""
    masked = event.get("masked")
    if isinstance(masked, str):
        return masked
    code = event.get("code")
    return mask(code) if isinstance(code, str) else ""


def latency_ms(event: dict[str, Any]) -> float | None:
    """Frame complete → written to the HIS socket, in ms (the daemon's `pipeline_us`)."""
    latency = event.get("latency")
    if not isinstance(latency, dict):
        return None
    us = latency.get("pipeline_us")
    return us / 1000 if isinstance(us, (int, float)) and not isinstance(us, bool) else None


def format_event(event: dict[str, Any]) -> str | None:
    """One table line for a scan, reject or device event; None for what the table does not show."""
    kind = event.get("type")
    device = str(event.get("device", ""))
    if kind == "scan":
        ms = latency_ms(event)
        lat = "" if ms is None else f"{ms:.2f} ms"
        if event.get("injected"):
            lat += " " + _("(injected)")
        return _row(_clock(event), device, str(event.get("channel", "")), str(event.get("kind", "")), shown_code(event), lat.strip())
    if kind == "reject":
        reason = _("reject: {reason}").format(reason=event.get("reason", "?"))
        return _row(_clock(event), device, "-", reason, shown_code(event), "")
    if kind == "device":
        state = str(event.get("state", ""))
        text = _("scanner {state}").format(state=state)
        if event.get("reason"):
            text += f" ({event['reason']})"
        return _row(time.strftime("%H:%M:%S.000")[:12], device, "", text, "", "")
    return None


def format_action(device: str, text: str) -> str:
    """A line for something the demo itself does (arming the kiosk, as an HIS payment page would)."""
    now = time.time()
    clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    return _row(clock, device, "", "» " + text, "", "")


@dataclass
class Tally:
    """What the HIS side saw during the demo, for the closing summary."""

    scans: int = 0
    rejects: int = 0
    injected: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        if event.get("type") == "scan":
            self.scans += 1
            self.injected += 1 if event.get("injected") else 0
            ms = latency_ms(event)
            if ms is not None:
                self.latencies_ms.append(ms)
        elif event.get("type") == "reject":
            self.rejects += 1

    def summary(self, log_path: str) -> str:
        p50, p99 = percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)
        if p50 is None or p99 is None:
            latency = _("latency: none measured")
        else:
            latency = _("latency p50 {p50:.2f} ms, p99 {p99:.2f} ms").format(p50=p50, p99=p99)
        return _("demo: {scans} scans ({injected} injected), {rejects} rejects, {latency}; daemon log: {log}").format(
            scans=self.scans, injected=self.injected, rejects=self.rejects, latency=latency, log=log_path
        )
