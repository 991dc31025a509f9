"""The interface every sink offers the pipeline."""

from __future__ import annotations

import abc
from typing import Any

from ..model import Event


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
