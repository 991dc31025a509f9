"""The interface every sink offers the pipeline."""

from __future__ import annotations

import abc
import collections
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..model import Event

T = TypeVar("T")


def drop_expired(
    queue: collections.deque[T], now_ns: int, expires_ns: Callable[[T], int | None], on_expired: Callable[[T], None]
) -> collections.deque[T]:
    """The items of `queue` still within their TTL at now_ns, in order; each expired one goes to
    on_expired (which counts and logs it). Sinks queue scans for a peer that is away; none may
    hand one out past its TTL."""
    keep: collections.deque[T] = collections.deque()
    for item in queue:
        deadline = expires_ns(item)
        if deadline is not None and now_ns >= deadline:
            on_expired(item)
        else:
            keep.append(item)
    return keep


class Sink(abc.ABC):
    name: str = "sink"

    @abc.abstractmethod
    async def start(self) -> None:
        """Bring the sink up; must not block on a peer that is down (MQTT reconnects later)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush what can be flushed and release resources."""

    @abc.abstractmethod
    def deliver(self, event: Event) -> None:
        """Take an event without blocking; the sink owns queueing, TTL and retries from here."""

    def status(self) -> dict[str, Any]:
        """A small dict for `status` replies and the systemd STATUS line."""
        return {}

    def take_pending(self) -> Sequence[Event]:
        """Reload: hand the scans still waiting here to this sink's successor."""
        return []

    def adopt_pending(self, events: Sequence[Event]) -> None:
        """Reload: take over a predecessor's waiting scans (each still only within its TTL)."""
        for event in events:
            self.deliver(event)
