"""What a daemon with nothing to read tells the person who started it.

A pure rate limiter around one message: the daemon calls `tick()` at start and from its status
loop, and logs whatever comes back.
"""

from __future__ import annotations

from .i18n import _

__all__ = ["REPEAT_S", "NoScannerHint"]

REPEAT_S = 300.0  # "again every few minutes while still none"


def no_scanner_message() -> str:
    return _(
        "no scanner to read. Plug one in (it starts within a second); `scannerd devices` shows every "
        "device and why one was skipped; `scannerd demo` shows the whole path working with a simulated scanner"
    )


class NoScannerHint:
    """`tick(scanners, now)` returns the hint the first time there are no scanners, then at most
    once every `repeat_s` while there are still none; None otherwise. A scanner appearing resets
    it, so the next time all are gone the hint comes at once."""

    def __init__(self, repeat_s: float = REPEAT_S) -> None:
        self.repeat_s = repeat_s
        self._last: float | None = None

    def tick(self, scanners_present: int, now: float) -> str | None:
        if scanners_present > 0:
            self._last = None
            return None
        if self._last is not None and now - self._last < self.repeat_s:
            return None
        self._last = now
        return no_scanner_message()
