"""MQTT topic names, payloads and command handling rules for the MQTT sink. No I/O here.

Kept apart from sinks/mqtt.py so the wire contract (what an HIS subscribes to and parses) is
table-testable without a broker, as aiomqtt keeps protocol encoding out of its I/O code.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from ..model import DeviceStateEvent, Event, RejectEvent, ScanEvent
from ..protocol import decode_command, dumps, encode_event, reply

__all__ = [
    "REJECT_QUEUE_TTL_S",
    "Outgoing",
    "Topics",
    "backoff_delay",
    "command_reply_payload",
    "default_client_id",
    "default_prefix",
    "error_reply",
    "event_payload",
    "parse_mqtt_command",
    "topic_level",
    "try_request",
]

# A reject is a diagnostic, not a transaction: when the broker is down it waits at most this
# long in the queue, so a reconnect does not flood consumers with old noise.
REJECT_QUEUE_TTL_S = 60.0

STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"

# MQTT reserves + and # as wildcards and / as the level separator; NUL is forbidden outright.
_UNSAFE = re.compile(r"[/+#\x00]")


def topic_level(name: str) -> str:
    """A device name made safe as one topic level (never empty, never a wildcard)."""
    return _UNSAFE.sub("_", name) or "_"


def default_prefix(hostname: str) -> str:
    return f"scannerd/{topic_level(hostname)}"


def default_client_id(hostname: str) -> str:
    return f"scannerd-{hostname}"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def cmd(self) -> str:
        return f"{self.prefix}/cmd"

    @property
    def cmd_reply(self) -> str:
        return f"{self.prefix}/cmd/reply"

    def scan(self, device: str) -> str:
        return f"{self.prefix}/scan/{topic_level(device)}"

    def reject(self, device: str) -> str:
        return f"{self.prefix}/reject/{topic_level(device)}"

    def device_state(self, device: str) -> str:
        return f"{self.prefix}/device/{topic_level(device)}/state"


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


def _json(obj: dict[str, Any]) -> bytes:
    # Same encoding as the socket line, without the line terminator: an MQTT message is framed.
    return dumps(obj).rstrip(b"\n")


def event_payload(event: Event, topics: Topics, qos: int, delivered_ns: int | None = None) -> Outgoing:
    """The MQTT message for an event: the socket's JSON object, on the event's topic.

    Scans and rejects are never retained (a retained payment code would be replayed to every new
    subscriber); device state is retained so a dashboard sees the current state on subscribe.
    """
    obj = encode_event(event, delivered_ns)
    if isinstance(event, ScanEvent):
        return Outgoing(topics.scan(event.device.name), _json(obj), qos, False)
    if isinstance(event, RejectEvent):
        return Outgoing(topics.reject(event.device), _json(obj), qos, False)
    if isinstance(event, DeviceStateEvent):
        # Retained state must survive a QoS 0 config: a lost retained message stays wrong forever.
        return Outgoing(topics.device_state(event.device), _json(obj), max(qos, 1), True)
    raise TypeError(f"not an event: {event!r}")


def parse_mqtt_command(payload: bytes) -> dict[str, Any]:
    """Decode a `<prefix>/cmd` payload; raises ProtocolError with a reason for the reply. Which
    commands MQTT may send is the command table's decision (`inject` never)."""
    return decode_command(payload)


def command_reply_payload(request: dict[str, Any] | None, answer: dict[str, Any]) -> bytes:
    """The reply JSON; echoes the request's `req` field so a requester can match its answer."""
    out = dict(answer)
    out.setdefault("type", "reply")
    if request is not None:
        out.setdefault("cmd", request.get("cmd"))
        if "req" in request:
            out.setdefault("req", request["req"])
    return _json(out)


def error_reply(request: dict[str, Any] | None, message: str) -> bytes:
    cmd = request.get("cmd") if request else None
    return command_reply_payload(request, reply(cmd if isinstance(cmd, str) else "", False, error=message))


def try_request(payload: bytes) -> dict[str, Any] | None:
    """Best-effort JSON object from a bad command, only to echo `cmd`/`req` in the error reply."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def backoff_delay(attempt: int, initial_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter in [50 %, 100 %] of the step.

    Jitter keeps a ward's kiosks from reconnecting in lock-step when the broker comes back.
    """
    step: float = min(cap_s, initial_s * 2.0 ** min(attempt, 30))
    return step * (0.5 + 0.5 * (rng or random).random())
