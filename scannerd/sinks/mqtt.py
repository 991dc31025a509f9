"""MQTT sink: scans and scanner health on a broker, through aiomqtt.

Delivery rules (DESIGN.md "MQTT", issue 6):
- `<prefix>/scan/<device>`: the socket's JSON event, QoS from config (1), never retained.
- `<prefix>/reject/<device>`: a rejected read (masked), not retained, queued at most 60 s.
- `<prefix>/device/<device>/state`: retained; only the latest state per device is kept while
  disconnected (retained = last value, older ones are worthless).
- `<prefix>/status`: retained `online` after connect, `offline` on clean stop and as last will.
- `<prefix>/cmd` → on_command → `<prefix>/cmd/reply` (not retained), when subscribe_cmd is on.

Queue and "never twice": events wait in a bounded deque while disconnected and are published
on reconnect only while `now < expires_ns`. Each connection uses a fresh aiomqtt Client, so
paho's own offline queue (which would resend without a TTL check) is thrown away with it.
A scan whose PUBLISH went out but whose PUBACK never came is *not* resent: it is counted as
`unconfirmed`. The broker may still have it; the event id lets the HIS drop a QoS 1 repeat,
but scannerd itself never publishes an event twice.

aiomqtt facts this relies on (read from aiomqtt 2.5 client.py):
- `await client.publish(..., qos=1)` returns only when paho's on_publish fires, i.e. on PUBACK,
  or raises MqttError("Operation timed out") after `timeout`; it does not notice a dropped
  connection by itself. A raised MqttCodeError means paho refused it before sending (no conn).
- `client.messages` raises MqttError when the connection drops: the watcher task uses that to
  notice a lost broker and cancel a publish stuck waiting for its PUBACK.
- `async with client` wraps connect errors (OSError, ssl errors) in MqttError(str(exc)) and
  a refused CONNACK in MqttConnectError(rc); classify_error() turns those into typed reasons.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog
from aiomqtt import MqttCodeError, MqttError
from aiomqtt.exceptions import MqttConnectError  # not re-exported by aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..config import MqttConfig
from ..delivery.outcomes import DeliveryOutcome, Outcome, OutcomeMetrics, Outcomes
from ..metrics import Metrics
from ..model import DeviceStateEvent, Event, RejectEvent, ScanEvent
from ..protocol import ProtocolError
from .base import Sink, drop_expired
from .mqtt_topics import (
    REJECT_QUEUE_TTL_S,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    Topics,
    backoff_delay,
    command_reply_payload,
    default_client_id,
    default_prefix,
    error_reply,
    event_payload,
    parse_mqtt_command,
    try_request,
)

__all__ = [
    "SHUTDOWN_REST_S",
    "STOP_BUDGET_S",
    "MqttAuthError",
    "MqttConfigFileError",
    "MqttConnectionLostError",
    "MqttSink",
    "MqttSinkError",
    "MqttTimeoutError",
    "MqttTlsError",
    "MqttUnreachableError",
    "classify_error",
]

log = structlog.get_logger("scannerd.mqtt")

CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

SINK_LABELS = {"sink": "mqtt"}


# ---------------------------------------------------------------------------------------------
# Typed errors: what went wrong, in words a hospital IT admin can act on.


class MqttSinkError(Exception):
    """Why the sink is not connected. `kind` is a stable word for status and metrics."""

    kind = "error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MqttTlsError(MqttSinkError):
    kind = "tls"


class MqttAuthError(MqttSinkError):
    kind = "auth"


class MqttUnreachableError(MqttSinkError):
    kind = "unreachable"


class MqttTimeoutError(MqttSinkError):
    kind = "timeout"


class MqttConnectionLostError(MqttSinkError):
    kind = "connection_lost"


class MqttConfigFileError(MqttSinkError):
    """A password_file, CA or key that cannot be read: fix the file, the sink keeps retrying."""

    kind = "config"


_TLS_MARKERS = ("ssl", "certificate", "tls", "handshake", "wrong version number")


def classify_error(exc: BaseException, tls: bool = False) -> MqttSinkError:
    """Map whatever aiomqtt/paho/ssl raised to one typed reason (never containing a password)."""
    if isinstance(exc, MqttSinkError):
        return exc
    text = str(exc)
    low = text.lower()
    if tls and ("connection reset" in low or "eof" in low) and not isinstance(exc, MqttConnectError):
        # A plain (non-TLS) listener answers a TLS hello by closing: not a network problem.
        return MqttTlsError(f"TLS handshake failed: {exc} (is that port a TLS listener?)")
    if isinstance(exc, ssl.SSLError):
        return MqttTlsError(f"TLS handshake failed: {exc}")
    if isinstance(exc, MqttConnectError):
        rc = getattr(exc.rc, "value", exc.rc)
        # MQTT 3.1.1 CONNACK 4/5; paho 2 reports them as MQTT 5 reason codes 134/135.
        if rc in (4, 134):
            return MqttAuthError("broker refused the connection: bad username or password")
        if rc in (5, 135):
            # mosquitto answers 5, not 4, to a wrong password.
            return MqttAuthError("broker refused the connection: not authorised (check username and password)")
        return MqttSinkError(f"broker refused the connection: {exc}")
    if isinstance(exc, MqttError):
        if any(m in low for m in _TLS_MARKERS):
            return MqttTlsError(f"TLS handshake failed: {text}")
        if "timed out" in low:
            return MqttTimeoutError(f"broker did not answer in time: {text}")
        if "disconnect" in low or "connection lost" in low or isinstance(exc, MqttCodeError):
            return MqttConnectionLostError(f"connection to the broker lost: {text}")
        return MqttUnreachableError(f"cannot reach the broker: {text}")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return MqttTimeoutError("broker did not answer in time")
    if isinstance(exc, OSError):
        return MqttUnreachableError(f"cannot reach the broker: {text}")
    return MqttSinkError(f"{type(exc).__name__}: {text}")


# ---------------------------------------------------------------------------------------------


# Commands over MQTT handled at once; more are dropped (arm/disarm/status need no queue).
MAX_PENDING_COMMANDS = 16

# The longest stop() takes (drain, `offline`, DISCONNECT, or an abandoned connect attempt).
# systemd/scannerd.service's TimeoutStopSec= must cover this plus SHUTDOWN_REST_S, the rest of
# the shutdown (sources, socket, metrics): tests/test_mqtt_retained.py reads the unit to check.
STOP_BUDGET_S = 8.0
SHUTDOWN_REST_S = 5.0


def _abandon(client: aiomqtt.Client) -> None:
    """Close a client whose connect failed. aiomqtt 2.5 leaves paho's socket, its loop reader and
    misc task alive when CONNACK never comes (a broker that accepts TCP and then stalls); paho's
    own close fires on_socket_close, which unregisters both."""
    paho = getattr(client, "_client", None)
    if paho is not None:
        with contextlib.suppress(Exception):
            paho._sock_close()


@dataclass(slots=True)
class _Pending:
    event: ScanEvent | RejectEvent
    expires_ns: int | None


class MqttSink(Sink):
    name = "mqtt"

    def __init__(
        self,
        config: MqttConfig,
        *,
        hostname: str,
        metrics: Metrics,
        outcomes: Outcomes | None = None,
        on_command: CommandHandler | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 10.0,
        op_timeout_s: float = 10.0,
        drain_timeout_s: float = 2.0,
        stop_budget_s: float = STOP_BUDGET_S,
    ) -> None:
        """`backoff_*`: reconnect delays (tests shorten them). `stable_after_s`: a connection must
        last this long before the backoff resets, so a broker that accepts then kicks us is not
        hammered. `op_timeout_s`: CONNACK/PUBACK/SUBACK wait. `drain_timeout_s`: how long stop()
        keeps publishing the queue before it sends `offline` and disconnects (at most half the
        budget). `stop_budget_s`: stop() returns by then whatever the broker does.
        """
        self._cfg = config
        self._metrics = metrics
        # What became of each scan goes to the daemon's outcomes (metrics, the ledger); a sink
        # made on its own (tests, tools) counts into its metrics directly.
        if outcomes is None:
            outcomes = Outcomes()
            outcomes.subscribe(OutcomeMetrics(metrics))
        self._outcomes = outcomes
        self._on_command = on_command
        self._topics = Topics(config.topic_prefix or default_prefix(hostname))
        self._client_id = config.client_id or default_client_id(hostname)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stable_after_s = stable_after_s
        self._op_timeout_s = op_timeout_s
        self._stop_budget_s = stop_budget_s
        self._drain_timeout_s = min(drain_timeout_s, stop_budget_s / 2)

        self._queue: collections.deque[_Pending] = collections.deque()
        # Retained device state: only the latest per device matters. `_last_states` is what the
        # broker should hold; `_states` what is still to publish on this connection (all of
        # `_last_states` again after each connect: a restarted broker may have lost them).
        self._last_states: dict[str, DeviceStateEvent] = {}
        # Other retained messages (the station's acceptance counts): the latest payload per
        # topic, and those not yet published on this connection.
        self._retained: dict[str, bytes] = {}
        self._retained_due: dict[str, bytes] = {}
        self._states: dict[str, DeviceStateEvent] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stop_deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._cmd_tasks: set[asyncio.Task[None]] = set()

        self._state = "disconnected"
        self._last_error: MqttSinkError | None = None
        self._logged: tuple[str, str] | None = None  # the last state change logged, with its error kind
        self._connected_at: float | None = None
        self._counts = {"published": 0, "expired": 0, "unconfirmed": 0, "dropped": 0, "commands_dropped": 0}

    # -- public -------------------------------------------------------------------------------

    @property
    def topics(self) -> Topics:
        return self._topics

    async def start(self) -> None:
        if self._task is not None:
            return
        log.info(
            "mqtt.starting",
            broker=f"{self._cfg.host}:{self._cfg.port}",
            tls=self._cfg.tls,
            client_id=self._client_id,
            prefix=self._topics.prefix,
            username=self._cfg.username or None,
        )
        self._state = "connecting"
        self._task = asyncio.create_task(self._run(), name="mqtt-sink")

    async def stop(self) -> None:
        """Drain what the broker will take within drain_timeout_s, publish `offline`, disconnect;
        all within stop_budget_s, after which the connection is abandoned."""
        if self._task is None:
            return
        self._stop_deadline = time.monotonic() + self._drain_timeout_s
        self._stopping.set()
        self._wake.set()
        task, self._task = self._task, None
        try:
            await asyncio.wait_for(asyncio.shield(task), self._stop_budget_s)
        except TimeoutError:
            task.cancel()
        # _run turns every failure into a logged reason; only cancellation can end it abruptly.
        await asyncio.gather(task, return_exceptions=True)
        left = len(self._queue)
        if left:
            self._counts["dropped"] += left
            for item in self._queue:
                self._gave_up(item.event, "stopped")
            self._queue.clear()
        self._state = "disconnected"
        log.info("mqtt.stopped", undelivered=left)

    def take_pending(self) -> list[Event]:
        """Hand the not-yet-sent events to a successor sink (MQTT settings changed on reload),
        with the last state of every device (the successor's broker or prefix may not have it).
        The scan in flight, if any, is not among them: it is never sent twice."""
        pending: list[Event] = [*self._last_states.values(), *(p.event for p in self._queue)]
        self._queue.clear()
        return pending

    def adopt_pending(self, events: Sequence[Event]) -> None:
        for event in events:
            self.deliver(event)  # TTL is checked again on the way in

    @property
    def prefix(self) -> str:
        return self._topics.prefix

    def retain(self, topic: str, payload: bytes) -> None:
        """Keep `payload` as the retained message of `topic` (latest wins), published now if
        connected and again after every reconnect. For counts, never for scans."""
        self._retained[topic] = payload
        self._retained_due[topic] = payload
        self._wake.set()

    def retained_items(self) -> list[tuple[str, bytes]]:
        """What retain() was given, for a successor sink (reload)."""
        return list(self._retained.items())

    def deliver(self, event: Event) -> None:
        if isinstance(event, DeviceStateEvent):
            self._last_states[event.device] = event
            self._states[event.device] = event
            self._wake.set()
            return
        now = time.monotonic_ns()
        if isinstance(event, ScanEvent):
            expires = event.expires_ns
        elif isinstance(event, RejectEvent):
            expires = now + int(REJECT_QUEUE_TTL_S * 1e9)
        else:
            raise TypeError(f"not an event: {event!r}")
        if expires is not None and now >= expires:
            self._expire(event, now)
            return
        self._purge_expired(now)
        if len(self._queue) >= self._cfg.queue_limit:
            # Drop the oldest: it is the one closest to its TTL and the least likely still wanted.
            old = self._queue.popleft()
            self._counts["dropped"] += 1
            self._gave_up(old.event, "queue_full")
            log.warning("mqtt.queue_full_dropped", **_describe(old.event), limit=self._cfg.queue_limit)
        self._queue.append(_Pending(event, expires))
        self._wake.set()

    def status(self) -> dict[str, Any]:
        self._purge_expired(time.monotonic_ns())
        out: dict[str, Any] = {
            "state": self._state,
            "queued": len(self._queue) + len(self._states),
            "broker": f"{self._cfg.host}:{self._cfg.port}",
            "tls": self._cfg.tls,
            "prefix": self._topics.prefix,
            **self._counts,
        }
        if self._last_error is not None and self._state != "connected":
            out["error"] = self._last_error.kind
            out["reason"] = self._last_error.reason
        return out

    # -- connection loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._state = "connecting"
            log.debug("mqtt.connect_attempt", attempt=attempt)
            self._purge_expired(time.monotonic_ns())
            self._connected_at = None
            try:
                client = self._make_client()
                try:
                    async with client:
                        self._connected_at = time.monotonic()
                        await self._session(client)
                except BaseException:
                    if self._connected_at is None:
                        _abandon(client)
                    raise
                self._state = "disconnected"
                return  # the session only returns normally when stopping
            except asyncio.CancelledError:
                self._state = "disconnected"
                raise
            except Exception as exc:
                # A reset before CONNACK on a TLS connection is a TLS problem, not the network.
                err = classify_error(exc, tls=self._cfg.tls and self._connected_at is None)
                self._on_down(err, exc, was_connected=self._state == "connected")
            if self._connected_at is not None and time.monotonic() - self._connected_at >= self._stable_after_s:
                attempt = 0
            delay = backoff_delay(attempt, self._backoff_initial_s, self._backoff_max_s)
            attempt += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass
        self._state = "disconnected"

    def _make_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            hostname=self._cfg.host,
            port=self._cfg.port,
            identifier=self._client_id,
            username=self._cfg.username or None,
            password=self._password(),
            will=aiomqtt.Will(self._topics.status, STATUS_OFFLINE, qos=1, retain=True),
            keepalive=self._cfg.keepalive_s,
            tls_context=self._tls_context(),
            timeout=self._op_timeout_s,
            # MQTT 5 for retain-as-published: the only way to tell a retained `cmd` published
            # while we are subscribed (3.1.1 brokers clear its retain flag) from a live one.
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            # Only `<prefix>/cmd` arrives here; a flood of commands must not grow memory unbounded.
            max_queued_incoming_messages=100,
            # paho's own debug lines (no payloads, no password) under our logger's name.
            logger=logging.getLogger("scannerd.mqtt.paho"),
        )

    def _password(self) -> str | None:
        if self._cfg.password_file:
            try:
                with open(self._cfg.password_file, encoding="utf-8") as f:
                    # Re-read on every connect so a rotated password needs no restart.
                    return f.read().rstrip("\r\n")
            except OSError as e:
                raise MqttConfigFileError(f"cannot read password_file {self._cfg.password_file}: {e.strerror}") from None
        return self._cfg.password or None

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self._cfg.tls:
            return None
        try:
            # Verifies the chain and the host name (CERT_REQUIRED, check_hostname) by default.
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self._cfg.ca_file or None)
        except (OSError, ssl.SSLError) as e:
            raise MqttConfigFileError(f"cannot load ca_file {self._cfg.ca_file}: {e}") from None
        if self._cfg.cert_file:
            try:
                ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file or None)
            except (OSError, ssl.SSLError) as e:
                raise MqttConfigFileError(f"cannot load cert_file/key_file {self._cfg.cert_file}: {e}") from None
        return ctx

    async def _session(self, client: aiomqtt.Client) -> None:
        # Every connect re-publishes every device's last state: the broker may be a restarted
        # one without persistence, or a new one after a reload.
        self._states = {**self._last_states, **self._states}
        self._retained_due = dict(self._retained)
        if self._cfg.subscribe_cmd and self._on_command is not None:
            # Retained commands are never obeyed: do not even ask for the ones already stored,
            # and keep the retain flag on those published later, so _watch can refuse them.
            options = SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            granted = await client.subscribe(self._topics.cmd, options=options)
            if any(getattr(rc, "is_failure", rc == 0x80) for rc in granted):
                # A broker ACL without read on <prefix>/cmd: scans still flow, commands cannot.
                log.warning("mqtt.cmd_subscribe_refused", topic=self._topics.cmd)
        # `online` only once commands are heard: a kiosk page that sends `arm` as soon as it
        # sees us online must not have it fall between our connect and our SUBSCRIBE.
        await client.publish(self._topics.status, STATUS_ONLINE, qos=1, retain=True)
        self._on_up()
        watch = asyncio.create_task(self._watch(client), name="mqtt-watch")
        pub = asyncio.create_task(self._publisher(client), name="mqtt-publish")
        try:
            done, _ = await asyncio.wait({watch, pub}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (watch, pub, *self._cmd_tasks):
                t.cancel()
            await asyncio.gather(watch, pub, *self._cmd_tasks, return_exceptions=True)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc
        # Clean stop: say so ourselves, since a clean DISCONNECT makes the broker drop the will.
        await client.publish(self._topics.status, STATUS_OFFLINE, qos=1, retain=True)

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Serve `<prefix>/cmd`; raises MqttError when the connection drops (that is its job too)."""
        async for message in client.messages:
            if not message.topic.matches(self._topics.cmd):
                continue
            if message.retain:
                # A retained `arm` would re-arm the kiosk now and on every reconnect: refuse it.
                log.warning("mqtt.cmd_retained_ignored", topic=str(message.topic))
                continue
            payload = message.payload
            data = payload if isinstance(payload, (bytes, bytearray)) else str(payload or "").encode()
            if len(self._cmd_tasks) >= MAX_PENDING_COMMANDS:
                # A flood on <prefix>/cmd must not grow tasks and replies without bound.
                self._counts["commands_dropped"] += 1
                if self._counts["commands_dropped"] == 1 or self._counts["commands_dropped"] % 100 == 0:
                    log.warning("mqtt.cmd_dropped_busy", pending=len(self._cmd_tasks), dropped=self._counts["commands_dropped"])
                continue
            task = asyncio.create_task(self._command(client, bytes(data)))
            self._cmd_tasks.add(task)
            task.add_done_callback(self._cmd_tasks.discard)

    async def _command(self, client: aiomqtt.Client, payload: bytes) -> None:
        assert self._on_command is not None
        request: dict[str, Any] | None = None
        try:
            request = parse_mqtt_command(payload)
            answer = await self._on_command(request)
            out = command_reply_payload(request, answer)
            log.info("mqtt.cmd", cmd=request["cmd"], ok=answer.get("ok"))
        except ProtocolError as e:
            out = error_reply(try_request(payload), str(e))
            log.warning("mqtt.cmd_refused", reason=str(e))
        except Exception as e:
            out = error_reply(request, f"internal error: {type(e).__name__}")
            log.exception("mqtt.cmd_failed", cmd=request.get("cmd") if request else None)
        try:
            await client.publish(self._topics.cmd_reply, out, qos=1, retain=False)
        except aiomqtt.MqttError as e:
            # The connection dropped under the reply: the session loop reconnects; say so here,
            # through structlog, instead of an unretrieved task exception on stderr.
            log.warning("mqtt.cmd_reply_lost", error=str(e))

    # -- publishing ---------------------------------------------------------------------------

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            if self._states:
                device = next(iter(self._states))
                await self._publish_state(client, self._states.pop(device))
                continue
            if self._retained_due:
                topic = next(iter(self._retained_due))
                payload = self._retained_due.pop(topic)
                try:
                    await client.publish(topic, payload, qos=1, retain=True)
                except BaseException:
                    self._retained_due.setdefault(topic, payload)  # idempotent: try again later
                    raise
                self._metrics.inc("scannerd_mqtt_published_total", {"type": "retained"})
                continue
            item = self._next_pending()
            if item is not None:
                await self._publish_pending(client, item)
                continue
            if self._stopping.is_set():
                return
            self._wake.clear()
            await self._wake.wait()
            if self._drain_over():
                return

    def _drain_over(self) -> bool:
        """Stopping, and the time stop() allows for publishing the queue has run out."""
        return self._stopping.is_set() and self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    def _next_pending(self) -> _Pending | None:
        if self._drain_over():
            return None
        now = time.monotonic_ns()
        while self._queue:
            item = self._queue.popleft()
            if item.expires_ns is not None and now >= item.expires_ns:
                self._expire(item.event, now)
                continue
            return item
        return None

    async def _publish_state(self, client: aiomqtt.Client, event: DeviceStateEvent) -> None:
        msg = event_payload(event, self._topics, self._cfg.qos)
        try:
            await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        except BaseException:
            # Retained state is idempotent: put it back unless a newer state arrived meanwhile.
            self._states.setdefault(event.device, event)
            raise
        self._counts["published"] += 1
        self._metrics.inc("scannerd_mqtt_published_total", {"type": "device"})

    async def _publish_pending(self, client: aiomqtt.Client, item: _Pending) -> None:
        msg = event_payload(item.event, self._topics, self._cfg.qos, delivered_ns=time.monotonic_ns())
        try:
            await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        except MqttCodeError:
            # paho refused before writing anything (no connection): safe to keep for the next one.
            self._queue.appendleft(item)
            raise
        except BaseException:
            # Written to the connection, but no PUBACK (timeout, connection lost, cancelled).
            # The broker may have it: resending could deliver it twice, so we do not.
            self._counts["unconfirmed"] += 1
            self._gave_up(item.event, "unconfirmed")
            log.warning("mqtt.unconfirmed", **_describe(item.event))
            raise
        done_ns = time.monotonic_ns()
        self._counts["published"] += 1
        if isinstance(item.event, ScanEvent):
            e = item.event
            self._outcomes.report(DeliveryOutcome(self.name, Outcome.DELIVERED, e.id, e.device.name, "puback",
                                                  (done_ns - e.completed_ns) / 1e9))
        else:
            self._metrics.inc("scannerd_mqtt_published_total", {"type": "reject"})

    # -- queue hygiene and state logging --------------------------------------------------------

    def _purge_expired(self, now: int) -> None:
        self._queue = drop_expired(self._queue, now, lambda p: p.expires_ns, lambda p: self._expire(p.event, now))

    def _expire(self, event: ScanEvent | RejectEvent, now: int) -> None:
        self._counts["expired"] += 1
        if isinstance(event, ScanEvent):
            self._outcomes.report(DeliveryOutcome(self.name, Outcome.EXPIRED, event.id, event.device.name, "ttl_waiting_for_broker"))
            log.warning("mqtt.scan_expired", **_describe(event), age_ms=round((now - event.completed_ns) / 1e6, 1))
        else:
            self._metrics.inc("scannerd_undelivered_total", {**SINK_LABELS, "reason": "reject_expired"})
            log.info("mqtt.reject_expired", device=event.device)

    def _gave_up(self, event: ScanEvent | RejectEvent, reason: str) -> None:
        if isinstance(event, ScanEvent):
            self._outcomes.report(DeliveryOutcome(self.name, Outcome.UNDELIVERED, event.id, event.device.name, reason))
        else:  # a reject is a diagnostic, not a delivery: counted apart
            self._metrics.inc("scannerd_undelivered_total", {**SINK_LABELS, "reason": f"reject_{reason}"})

    def _on_up(self) -> None:
        self._state = "connected"
        self._last_error = None
        self._logged = ("connected", "")
        log.info("mqtt.connected", broker=f"{self._cfg.host}:{self._cfg.port}", queued=len(self._queue) + len(self._states))

    def _on_down(self, err: MqttSinkError, exc: BaseException, *, was_connected: bool) -> None:
        """Log a lost connection once, then each *kind* of failed attempt once until connected."""
        self._state = "disconnected"
        self._last_error = err
        fields: dict[str, Any] = {"error": err.kind, "reason": err.reason, "queued": len(self._queue)}
        if err.kind == "error":
            # Unexpected: keep the traceback, for the bug report.
            fields["exc_info"] = exc
        if was_connected:
            self._logged = ("lost", "")
            log.warning("mqtt.connection_lost", **fields)
            return
        key = ("failed", err.kind)
        if key == self._logged:
            log.debug("mqtt.retry_failed", error=err.kind)
            return  # the same failure as last time: one line per change, not one per retry
        self._logged = key
        level = log.error if err.kind in ("tls", "auth", "config") else log.warning
        level("mqtt.connect_failed", **fields)


def _describe(event: ScanEvent | RejectEvent) -> dict[str, Any]:
    """Log fields for an event: id, device, kind. Never the code."""
    if isinstance(event, ScanEvent):
        return {"id": event.id, "device": event.device.name, "kind": event.classification.kind}
    return {"device": event.device, "type": "reject"}
