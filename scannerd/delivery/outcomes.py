"""What became of each scan a sink took: one interface every counter subscribes to.

Sinks and the hub report outcomes here instead of calling metrics themselves; metrics (and the
acceptance ledger) subscribe. An outcome names the sink, the event id and the device, never
the code.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ..metrics import Metrics

log = structlog.get_logger("scannerd.outcomes")


class Outcome(str, enum.Enum):
    DELIVERED = "delivered"  # written to an HIS (no acks) / confirmed by the HIS (acks) / PUBACKed
    SENT = "sent"  # written to an HIS that acknowledges; delivered once it does
    REDELIVERED = "redelivered"  # its HIS closed without acking: handed on within its TTL
    EXPIRED = "expired"  # its TTL passed before any HIS took it (reason says where it waited)
    UNDELIVERED = "undelivered"  # given up for another reason (stopped, queue_full, unconfirmed…)


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    sink: str
    outcome: Outcome
    event_id: str
    device: str
    reason: str = ""
    latency_s: float | None = None  # frame complete → delivered, for DELIVERED


Listener = Callable[[DeliveryOutcome], None]


class Outcomes:
    """A tiny synchronous fan-out: every listener sees every outcome, in order."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def report(self, outcome: DeliveryOutcome) -> None:
        for listener in self._listeners:
            try:
                listener(outcome)
            except Exception:  # a broken counter must not break delivery
                log.exception("outcome_listener_failed", outcome=outcome.outcome.value, sink=outcome.sink)


class OutcomeMetrics:
    """The Prometheus side of outcomes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, o: DeliveryOutcome) -> None:
        m = self.metrics
        if o.outcome is Outcome.DELIVERED:
            m.inc("scannerd_delivered_total", {"sink": o.sink})
            if o.latency_s is not None:
                m.observe("scannerd_delivery_latency_seconds", o.latency_s, {"sink": o.sink})
            if o.reason == "acked":
                m.inc("scannerd_acks_total", {"sink": o.sink})
        elif o.outcome is Outcome.REDELIVERED:
            m.inc("scannerd_redelivered_total", {"sink": o.sink})
        elif o.outcome is Outcome.EXPIRED:
            m.inc("scannerd_expired_total", {"sink": o.sink, "reason": o.reason or "ttl"})
        elif o.outcome is Outcome.UNDELIVERED:
            m.inc("scannerd_undelivered_total", {"sink": o.sink, "reason": o.reason or "unknown"})
