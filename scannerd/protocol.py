"""Protocol encoding: events → JSON lines, client lines → commands. No I/O here.

The same encoding serves the Unix socket and MQTT, so an HIS reads one format everywhere.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import __version__
from .model import DeviceStateEvent, Event, RejectEvent, ScanEvent

# 2: explicit subscription with roles (his / monitor), ordered hand-over, opt-in acks.
PROTOCOL_VERSION = 2

# Integers longer than this are refused before Python parses them (a 5000-digit number costs
# quadratic time and is never a valid argument).
MAX_INT_DIGITS = 20

class Refused(ValueError):
    """A well-formed command that cannot be carried out; the message becomes the reply's `error`.
    Raised by the command table and the rooms it calls (the hub, the daemon)."""


class ProtocolError(ValueError):
    """A client line that is not a valid command; answered with ok=false and this message."""


def hello(host: str, commands: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "version": __version__, "host": host,
                           # Nothing but replies until the client subscribes (role his or monitor).
                           "subscribe": "required"}
    if commands is not None:
        out["commands"] = commands
    return out


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


# One encoder for every line: json.dumps with options builds a new JSONEncoder each call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: dict[str, Any]) -> bytes:
    return (_ENCODER.encode(obj) + "\n").encode("utf-8")


def reply(cmd: str, ok: bool, **fields: Any) -> dict[str, Any]:
    return {"type": "reply", "cmd": cmd, "ok": ok, **fields}


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a number this protocol accepts")


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ProtocolError(f"an integer of {digits} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ProtocolError(f"{text[:24]} is out of range")
    return value


def decode_command(line: bytes) -> dict[str, Any]:
    """One client line → a JSON object. Raises ProtocolError with the reason.

    Only the shape is checked here; which commands exist and what they take is the command
    table's business (command_table.py).
    """
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant, parse_int=_parse_int,
                         parse_float=_parse_float)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("not a JSON object: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"not a JSON object: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not a JSON object")
    try:  # a lone surrogate (\ud800) decodes, but could never be echoed back in a reply
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("not a JSON object: a string holds a lone surrogate (not Unicode text)") from None
    if not isinstance(obj.get("cmd"), str):
        raise ProtocolError('missing "cmd" (a string)')
    return obj


# The last second rendered: (epoch second, "YYYY-MM-DDTHH:MM:SS", "+HH:MM"). Scans within one
# second share it, so most timestamps cost one division and one format.
_last_second: tuple[int, str, str] = (-1, "", "")


def _second(sec: int) -> tuple[int, str, str]:
    global _last_second
    cached = _last_second
    if cached[0] != sec:
        lt = time.localtime(sec)
        off = lt.tm_gmtoff
        sign = "+" if off >= 0 else "-"
        off = abs(off)
        cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", lt), f"{sign}{off // 3600:02d}:{(off % 3600) // 60:02d}")
        _last_second = cached
    return cached


def wall_clock_iso(ns: int | None = None) -> str:
    """Local wall-clock time, ISO 8601 with offset and microseconds (events only)."""
    ns = time.time_ns() if ns is None else ns
    sec, us = divmod(ns // 1000, 1_000_000)
    _, prefix, offset = _second(sec)
    return f"{prefix}.{us:06d}{offset}"
