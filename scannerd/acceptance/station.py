"""One daemon's acceptance side: its ledger and, with MQTT, its fleet publisher, behind the few
calls the service makes (start/stop, a scan, a `result` command, status)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import Config
from ..model import ScanEvent
from .fleet import FleetPublisher, PublishRetained, acceptance_topic
from .ledger import Ledger


class StationAcceptance:
    def __init__(
        self,
        config: Config,
        hostname: str,
        *,
        publish_retained: PublishRetained | None = None,
        topic_prefix: str = "",
        publish_interval_s: float = 5.0,
        flush_interval_s: float = 0.5,
    ) -> None:
        """`publish_retained` and `topic_prefix` (the MQTT sink's prefix): the fleet view; without
        them only the ledger runs."""
        self.ledger = Ledger(
            config.acceptance.ledger,
            station=hostname,
            site=config.site,
            acceptance=config.acceptance,
            flush_interval_s=flush_interval_s,
        )
        self.publisher: FleetPublisher | None = None
        if publish_retained is not None and topic_prefix:
            self.publisher = FleetPublisher(self.ledger.snapshot, publish_retained, acceptance_topic(topic_prefix), publish_interval_s)
            self.ledger.add_listener(self.publisher.notify)

    async def start(self) -> None:
        self.ledger.start()
        if self.publisher is not None:
            # The first retained message must carry the file's counts, not only today's: wait
            # (off the loop, bounded) until the writer has read the file.
            await asyncio.to_thread(self.ledger.wait_opened, 10.0)
            await self.publisher.start()

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
        # The last flush may wait on a slow disk: not on the event loop.
        await asyncio.to_thread(self.ledger.stop)

    def on_scan(self, event: ScanEvent) -> None:
        self.ledger.on_scan(event)

    def result_command(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.ledger.result_command(msg)

    def status(self) -> dict[str, Any]:
        out = self.ledger.status()
        if self.publisher is not None:
            out["fleet"] = {"topic": self.publisher.topic, "published": self.publisher.published, "error": self.publisher.last_error or None}
        return out
