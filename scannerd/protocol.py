"""Protocol v1 encoding: events → JSON lines, client lines → commands. No I/O here.

The same encoding serves the Unix socket and MQTT, so an HIS reads one format everywhere.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import __version__
from .model import DeviceStateEvent, Event, RejectEvent, ScanEvent

PROTOCOL_VERSION = 1

COMMANDS = frozenset({"status", "devices", "metrics", "arm", "disarm", "ack", "subscribe", "inject", "shapes", "result"})


class ProtocolError(ValueError):
    """A client line that is not a valid command; answered with ok=false and this message."""


def hello(host: str) -> dict[str, Any]:
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "version": __version__, "host": host}


def encode_event(event: Event, delivered_ns: int | None = None) -> dict[str, Any]:
    """The wire form of an event. `delivered_ns` (monotonic) fills latency.pipeline_us."""
    if isinstance(event, ScanEvent):
        c = event.classification
        latency: dict[str, Any] = {"scan_ms": round(event.scan_ms, 3)}
        if delivered_ns is not None:
            latency["pipeline_us"] = max(0, (delivered_ns - event.completed_ns) // 1000)
        out: dict[str, Any] = {
            "type": "scan",
            "id": event.id,
            "ts": event.ts,
            "device": event.device.name,
            "area": event.device.area,
            "role": event.device.role,
            "channel": c.channel,
            "kind": c.kind,
            "code": event.code,
            "symbology": event.symbology,
            "rule": c.rule,
            "confidence": c.confidence,
            "latency": latency,
        }
        if event.injected:
            out["injected"] = True
        return out
    if isinstance(event, RejectEvent):
        return {"type": "reject", "ts": event.ts, "device": event.device, "reason": event.reason, "masked": event.masked}
    if isinstance(event, DeviceStateEvent):
        out = {"type": "device", "device": event.device, "state": event.state}
        if event.reason:
            out["reason"] = event.reason
        return out
    raise TypeError(f"not an event: {event!r}")


def dumps(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def reply(cmd: str, ok: bool, **fields: Any) -> dict[str, Any]:
    return {"type": "reply", "cmd": cmd, "ok": ok, **fields}


def parse_command(line: bytes) -> dict[str, Any]:
    """Parse one client line: `{"cmd": "status", ...}`. Raises ProtocolError with the reason."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"not a JSON object: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError('missing "cmd" (a string)')
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown cmd {cmd!r}; known: {', '.join(sorted(COMMANDS))}")
    return obj


def wall_clock_iso(ns: int | None = None) -> str:
    """Local wall-clock time, ISO 8601 with offset and microseconds (events only)."""
    t = time.time() if ns is None else ns / 1e9
    lt = time.localtime(t)
    off = lt.tm_gmtoff
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    frac = int((t % 1) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{frac:06d}{sign}{off // 3600:02d}:{(off % 3600) // 60:02d}"
