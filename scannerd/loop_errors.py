"""The event loop's own error reports, through structlog and rate-limited.

asyncio reports what it cannot raise anywhere (an accept() failing with EMFILE at the
open-files limit, a callback that raised) to the loop's exception handler, whose default
writes a traceback through stdlib logging each time. At the open-files limit that is one
traceback per accept retry, hundreds of kilobytes a second. Here each kind of report is logged
once when it starts, counted while it repeats, and logged once more when it has stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("scannerd.loop")

# A kind of report that has not come back for this long is over ("recovered").
QUIET_S = 10.0


@dataclass
class _Episode:
    first: float
    last: float
    count: int = 1


class LoopErrorHandler:
    def __init__(self, clock: Callable[[], float] = time.monotonic, quiet_s: float = QUIET_S) -> None:
        self.clock = clock
        self.quiet_s = quiet_s
        self.episodes: dict[str, _Episode] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "unhandled error in the event loop")
        exc = context.get("exception")
        key = f"{message}|{type(exc).__name__ if exc is not None else ''}"
        now = self.clock()
        episode = self.episodes.get(key)
        if episode is not None:
            episode.count += 1
            episode.last = now
            return
        self.episodes[key] = _Episode(now, now)
        # repr of the exception only (no traceback, no locals): it passes the masking processor.
        log.error("loop_error", message=message, error=repr(exc) if exc is not None else None)
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is None and not loop.is_closed():
            self._sweeper = loop.call_later(self.quiet_s, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        now = self.clock()
        for key, episode in list(self.episodes.items()):
            if now - episode.last >= self.quiet_s:
                del self.episodes[key]
                log.warning("loop_error_ended", message=key.split("|", 1)[0], repeats=episode.count,
                            lasted_s=round(episode.last - episode.first, 1))
        if self.episodes:
            self._arm(loop)
