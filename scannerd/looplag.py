"""Event-loop lag: a periodic timer that measures how late it fires.

scannerd has one asyncio event loop; anything that blocks it (a slow callback, a blocking call,
a CPU-heavy burst) delays every scan behind it. A timer due at T that runs at T + x shows a stall
of at least x, so the lateness of each tick is recorded through a callback (the daemon sends it
to a histogram, e.g. ``scannerd_loop_lag_seconds``) and a stall becomes visible in metrics.

It is a chain of ``loop.call_at`` handles, not a task: one cheap callback per interval, nothing
scheduled between ticks, so an idle daemon stays idle.

    monitor = LoopLagMonitor(lambda s: metrics.observe("scannerd_loop_lag_seconds", s))
    monitor.start()          # inside the running loop
    ...
    monitor.stop()

A stall of length D is seen when a tick falls inside it, so with interval I a stall is caught
with probability about min(1, D / I) and then reported with its remaining length; the default
interval (0.5 s) catches every stall long enough to hurt a scan at a cashier window (≥ 0.5 s)
and costs two wake-ups a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["DEFAULT_INTERVAL_S", "LoopLagMonitor"]

DEFAULT_INTERVAL_S = 0.5

log = logging.getLogger(__name__)


class LoopLagMonitor:
    """Calls ``record(lag_seconds)`` once per ``interval_s`` with how late the tick ran (≥ 0)."""

    def __init__(self, record: Callable[[float], None], interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected a positive number of seconds, got {interval_s!r}")
        self._record = record
        self._interval = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.ticks = 0
        self.max_lag_s = 0.0
        self._callback_failed = False

    @property
    def interval_s(self) -> float:
        return self._interval

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Begin ticking on `loop` (default: the running loop). Starting twice is a no-op."""
        if self._handle is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        self._due = self._loop.time() + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        # The loop may run a timer up to its clock resolution early: that is no lag.
        lag = max(0.0, now - self._due)
        self.ticks += 1
        self.max_lag_s = max(self.max_lag_s, lag)
        # Next tick one interval after this one was due; after a stall longer than the interval,
        # one interval from now (a stall is reported once, not once per missed tick).
        self._due = self._due + self._interval if lag < self._interval else now + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)
        try:
            self._record(lag)
        except Exception:  # a broken metrics callback must not stop the monitor or the loop
            if not self._callback_failed:  # say it once, not twice a second
                log.exception("loop lag callback failed; the monitor keeps measuring")
                self._callback_failed = True
