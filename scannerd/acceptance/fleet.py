"""The fleet view: each station publishes its counts, retained, to `<prefix>/acceptance`; the
report collects every station's message from the broker.

The publisher knows no transport: it is given a coroutine that publishes a retained message
(QoS 1) on whatever connection the daemon has. It publishes at start and then after changes,
at most once per `min_interval_s`: counts, never a code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from ..config import MqttConfig
from .counts import CountsFormatError, StationCounts, from_json

log = structlog.get_logger("scannerd.acceptance.fleet")

# (topic, payload) → published retained with QoS 1; raises on failure.
PublishRetained = Callable[[str, bytes], Awaitable[None]]

DEFAULT_TOPIC_FILTER = "scannerd/+/acceptance"


def acceptance_topic(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/acceptance"


def payload(counts: StationCounts) -> bytes:
    return json.dumps(counts.to_json(), ensure_ascii=False, separators=(",", ":")).encode()


class FleetPublisher:
    def __init__(self, snapshot: Callable[[], StationCounts], publish: PublishRetained, topic: str, min_interval_s: float = 5.0) -> None:
        self._snapshot = snapshot
        self._publish = publish
        self.topic = topic
        self._min_interval_s = min_interval_s
        self._dirty = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.last_payload = b""  # what the broker holds for this station, once published
        self.last_error = ""

    def notify(self) -> None:
        """The counts changed (call on the event loop's thread, e.g. as a ledger listener)."""
        self._dirty.set()

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._dirty.set()  # the current counts go out once at start
            self._task = asyncio.create_task(self._run(), name="acceptance-fleet")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._dirty.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # The counts at shutdown are the ones the fleet report must see (the debounce may have
        # held back the last change).
        try:
            body = payload(self._snapshot())
            if body != self.last_payload:
                await self._publish(self.topic, body)
                self.last_payload = body
                self.published += 1
        except Exception as e:  # evidence on the broker is a convenience: never a failed stop
            log.warning("acceptance.fleet_final_publish_failed", error=str(e))

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._dirty.wait()
            if self._stopping.is_set():
                break
            self._dirty.clear()
            started = time.monotonic()
            try:
                body = payload(self._snapshot())
                await self._publish(self.topic, body)
                self.published += 1
                self.last_payload = body
                self.last_error = ""
            except Exception as e:  # any transport's failure: the next change or interval tries again
                self._dirty.set()
                if str(e) != self.last_error:
                    log.warning("fleet.publish_failed", topic=self.topic, error=str(e))
                self.last_error = str(e)
            # Debounce: changes during the pause are folded into the next message.
            pause = self._min_interval_s - (time.monotonic() - started)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)


# -- collecting ---------------------------------------------------------------------------------


class FleetCollectError(RuntimeError):
    """The broker could not be asked (unreachable, refused, TLS)."""


@dataclass(frozen=True, slots=True)
class Collected:
    stations: list[StationCounts]
    skipped: list[str]  # topics whose message was not station counts, with the reason


def _tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    if not cfg.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.ca_file or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return ctx


def _password(cfg: MqttConfig) -> str | None:
    if cfg.password_file:
        with open(cfg.password_file, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    return cfg.password or None


async def collect_from_broker(cfg: MqttConfig, topic_filter: str = DEFAULT_TOPIC_FILTER, quiet_s: float = 1.0, timeout_s: float = 30.0) -> Collected:
    """Every retained station message under `topic_filter`: the broker sends them right after
    the subscription; we stop when none came for `quiet_s` (or at `timeout_s`)."""
    import aiomqtt  # here: the report from ledger files needs no MQTT library loaded

    by_topic: dict[str, StationCounts] = {}
    skipped: list[str] = []
    try:
        client = aiomqtt.Client(
            hostname=cfg.host,
            port=cfg.port,
            identifier=cfg.client_id or None,
            username=cfg.username or None,
            password=_password(cfg),
            tls_context=_tls_context(cfg),
            timeout=timeout_s,
            clean_session=True,
        )
        async with client:
            await client.subscribe(topic_filter, qos=1)
            deadline = time.monotonic() + timeout_s
            messages = client.messages
            while True:
                left = min(quiet_s, deadline - time.monotonic())
                if left <= 0:
                    break
                try:
                    message = await asyncio.wait_for(anext(messages), left)
                except TimeoutError:
                    break
                topic = str(message.topic)
                body = message.payload
                if not body:
                    continue  # a cleared retained message: that station was retired
                try:
                    text = body.decode() if isinstance(body, bytes | bytearray) else str(body)
                    by_topic[topic] = from_json(json.loads(text))
                except (UnicodeDecodeError, json.JSONDecodeError, CountsFormatError) as e:
                    skipped.append(f"{topic}: {e}")
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as e:
        raise FleetCollectError(f"cannot read {topic_filter} from {cfg.host}:{cfg.port}: {e}") from None
    return Collected(sorted(by_topic.values(), key=lambda s: s.station), skipped)
