"""Recent delivery latencies per device, for `status` (p50/p99). In memory only, bounded."""

from __future__ import annotations

import math
from collections import deque

from .delivery.outcomes import DeliveryOutcome, Outcome

__all__ = ["LatencyWindow", "percentile"]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class LatencyWindow:
    """The last `size` latencies of each device (frame complete → delivered to the HIS)."""

    def __init__(self, size: int = 1000, max_devices: int = 256) -> None:
        self.size = size
        self.max_devices = max_devices
        self._seen: dict[str, deque[float]] = {}

    def add(self, device: str, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            return
        window = self._seen.get(device)
        if window is None:
            if len(self._seen) >= self.max_devices:
                return
            window = self._seen[device] = deque(maxlen=self.size)
        window.append(seconds)

    def on_outcome(self, outcome: DeliveryOutcome) -> None:
        """An Outcomes listener: what reached an HIS, and how long it took."""
        if outcome.outcome is Outcome.DELIVERED and outcome.latency_s is not None:
            self.add(outcome.device, outcome.latency_s)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """{device: {"p50_ms": …, "p99_ms": …, "n": …}} for devices with at least one value."""
        out: dict[str, dict[str, float | int]] = {}
        for device, window in sorted(self._seen.items()):
            values = list(window)
            p50, p99 = percentile(values, 50), percentile(values, 99)
            if p50 is not None and p99 is not None:
                out[device] = {"p50_ms": round(p50 * 1000, 3), "p99_ms": round(p99 * 1000, 3), "n": len(values)}
        return out
