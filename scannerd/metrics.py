"""Counters and histograms in memory, exposed as Prometheus text and as a JSON snapshot.

Single event loop, so no locks. Label values are device names, channels, kinds, reasons:
never codes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

LabelKey = tuple[tuple[str, str], ...]

# Seconds. Scanner-to-HIS latency lives between a few µs (socket) and a few hundred ms (MQTT
# over a congested hospital network).
DEFAULT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HELP: dict[str, str] = {
    "scannerd_scans_total": "Scans classified, by device, channel and kind",
    "scannerd_rejects_total": "Reads rejected, by device and reason",
    "scannerd_duplicates_total": "Double reads suppressed, by device",
    "scannerd_expired_total": "Scans dropped undelivered because their TTL passed, by sink and where they waited",
    "scannerd_redelivered_total": "Scans an HIS closed without acknowledging, handed to the next HIS within their TTL, by sink",
    "scannerd_classify_errors_total": "Rules that raised while classifying a code (the rule then counts as not matching), by rule",
    "scannerd_undelivered_total": "Events a sink gave up on, by sink and reason (queue_full, unconfirmed, stopped, reject_expired)",
    "scannerd_mqtt_published_total": "Rejects and device states published to MQTT (scans count in scannerd_delivered_total)",
    "scannerd_loop_lag_seconds": "How late the event loop ran a timer (a stall shows here: reload, a slow disk, a hostile input)",
    "scannerd_loop_lag_last_seconds": "The event loop's lateness at its latest check (a gauge)",
    "scannerd_acks_total": "Scans the HIS acknowledged with the ack command",
    "scannerd_delivered_total": "Scans delivered to the HIS side (written, or acknowledged when acks are on), by sink",
    "scannerd_client_disconnects_total": "Socket clients dropped for not reading",
    "scannerd_scan_duration_seconds": "First to last character of a scan, by device",
    "scannerd_delivery_latency_seconds": "Frame complete to delivered (socket write / MQTT PUBACK), by sink",
}


def _key(labels: dict[str, str] | None) -> LabelKey:
    return tuple(sorted((labels or {}).items()))


class Histogram:
    def __init__(self, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile q (what Prometheus would estimate)."""
        if self.count == 0:
            return math.nan
        target = q * self.count
        running = 0
        for i, c in enumerate(self.counts):
            running += c
            if running >= target:
                return self.buckets[i] if i < len(self.buckets) else math.inf
        return math.inf


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[LabelKey, float]] = {}
        self.histograms: dict[str, dict[LabelKey, Histogram]] = {}
        self.gauges: dict[str, dict[LabelKey, float]] = {}

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """A gauge: the latest value (loop lag now, not a count)."""
        self.gauges.setdefault(name, {})[_key(labels)] = value

    def inc(self, name: str, labels: dict[str, str] | None = None, by: float = 1) -> None:
        series = self.counters.setdefault(name, {})
        k = _key(labels)
        series[k] = series.get(k, 0) + by

    def observe(self, name: str, seconds: float, labels: dict[str, str] | None = None) -> None:
        series = self.histograms.setdefault(name, {})
        k = _key(labels)
        h = series.get(k)
        if h is None:
            h = series[k] = Histogram()
        h.observe(seconds)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        if name in self.gauges:
            return self.gauges[name].get(_key(labels), 0)
        return self.counters.get(name, {}).get(_key(labels), 0)

    def total(self, name: str) -> float:
        return sum(self.counters.get(name, {}).values())

    def histogram(self, name: str, labels: dict[str, str] | None = None) -> Histogram | None:
        return self.histograms.get(name, {}).get(_key(labels))

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, series in (*self.counters.items(), *self.gauges.items()):
            out[name] = [{"labels": dict(k), "value": v} for k, v in series.items()]
        for name, hseries in self.histograms.items():
            out[name] = [
                {"labels": dict(k), "count": h.count, "sum": h.sum, "p50": h.quantile(0.5), "p99": h.quantile(0.99)}
                for k, h in hseries.items()
            ]
        return out

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines: list[str] = []
        for name, series in sorted(self.counters.items()):
            lines.append(f"# HELP {name} {HELP.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for k, v in sorted(series.items()):
                lines.append(f"{name}{_labels(k)} {_fmt(v)}")
        for name, series in sorted(self.gauges.items()):
            lines.append(f"# HELP {name} {HELP.get(name, name)}")
            lines.append(f"# TYPE {name} gauge")
            for k, v in sorted(series.items()):
                lines.append(f"{name}{_labels(k)} {_fmt(v)}")
        for name, hseries in sorted(self.histograms.items()):
            lines.append(f"# HELP {name} {HELP.get(name, name)}")
            lines.append(f"# TYPE {name} histogram")
            for k, h in sorted(hseries.items()):
                # counts has one more slot than buckets: the +Inf bucket, written below.
                running = 0
                for bound, c in zip(h.buckets, h.counts, strict=False):
                    running += c
                    lines.append(f"{name}_bucket{_labels(k + (('le', _fmt(bound)),))} {running}")
                lines.append(f"{name}_bucket{_labels(k + (('le', '+Inf'),))} {h.count}")
                lines.append(f"{name}_sum{_labels(k)} {_fmt(h.sum)}")
                lines.append(f"{name}_count{_labels(k)} {h.count}")
        return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _labels(k: LabelKey) -> str:
    if not k:
        return ""
    esc = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in k)
    return "{" + ",".join(f'{n}="{v}"' for (n, _), v in zip(k, esc, strict=True)) + "}"
