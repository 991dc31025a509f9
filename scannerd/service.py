"""Wiring: config → classifier, pipeline, sinks, sources; signals, reload, sd_notify.

This is the only room that knows every other room. It owns no policy of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket as _socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from . import __version__
from .acceptance.command import RESULT_COMMAND
from .acceptance.station import StationAcceptance
from .census import Census
from .command_table import COMMANDS, CommandContext, CommandError, CommandTable
from .config import Config, ConfigError, ScannerConfig, load_config, with_secrets
from .control.device_controllers import ControlParamError, DeviceControllers
from .daycounts import DayCounts, DayCountSink, default_state_dir
from .delivery.http_listener import HttpListener, metrics_only
from .delivery.hub import Hub
from .delivery.outcomes import OutcomeMetrics, Outcomes
from .delivery.unix_socket import SocketInUse, UnixSocketServer
from .delivery.websocket import WebSocketServer
from .framing import TERMINATORS, FramingSpec
from .hints import NoScannerHint
from .latency_window import LatencyWindow
from .loop_errors import LoopErrorHandler
from .looplag import LoopLagMonitor
from .metrics import Metrics
from .model import DeviceInfo, DeviceStateEvent, Frame, Rejected, ScanEvent, mask
from .pipeline import Pipeline
from .protocol import encode_event, wall_clock_iso
from .sdnotify import Notifier, watchdog_loop
from .sinks.base import Sink
from .sinks.mqtt_topics import default_prefix
from .sources import registry
from .sources.base import Source, SourceRequest

if TYPE_CHECKING:  # imported lazily at run time: aiomqtt only loads when [mqtt] is configured
    from .sinks.mqtt import MqttSink

log = structlog.get_logger("scannerd.service")


def framing_spec(s: ScannerConfig) -> FramingSpec:
    return FramingSpec(
        terminator=TERMINATORS[s.terminator],
        idle_gap_ms=s.idle_gap_ms,
        prefix=s.prefix,
        suffix=s.suffix,
        max_length=s.max_length,
        aim=s.aim,
        vendor_ids=dict(s.vendor_ids),
    )


@dataclasses.dataclass
class _Running:
    scanner: ScannerConfig
    source: Source
    task: asyncio.Task[None]


def _node(path: str) -> str:
    """The kernel node behind a configured path (often a /dev/serial/by-id or /dev/scanner link)."""
    return os.path.realpath(path) if path else ""


def _source_settings(scanner: ScannerConfig) -> ScannerConfig:
    """What a running source depends on: everything but the labels its events carry."""
    return dataclasses.replace(scanner, role="window", area="")


class Daemon:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.hostname = _socket.gethostname()
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.census = Census.from_options(config.classify)
        self.classifier = config.classifier()
        self.pipeline = Pipeline(config.policy, self.classifier, [], self.metrics, self.census)
        self.notifier = Notifier()
        self.no_scanner_hint = NoScannerHint()
        # Delivery: outcomes are counted by whoever subscribes (metrics now, the ledger later).
        self.outcomes = Outcomes()
        self.outcomes.subscribe(OutcomeMetrics(self.metrics))
        # For `status`: today's counts per device (kept across restarts, counts only) and recent latency.
        self.day_counts = DayCountSink(DayCounts.open(default_state_dir()))
        self.latency = LatencyWindow()
        self.outcomes.subscribe(self.latency.on_outcome)
        self.last_reload: dict[str, Any] | None = None
        self.hub = Hub(self.outcomes, client_buffer_bytes=config.socket.client_buffer_bytes,
                       queue_limit=config.policy.queue_limit)
        # Acceptance evidence: counts of scans and HIS results (issue 15); the ledger's file
        # is written by its own thread, never on this loop.
        # With [mqtt], each station's counts are kept retained on the broker for the fleet report.
        mqtt_prefix = (config.mqtt.topic_prefix or default_prefix(self.hostname)) if config.mqtt is not None else ""
        self.acceptance = StationAcceptance(config, self.hostname, publish_retained=self._publish_retained,
                                            topic_prefix=mqtt_prefix)
        self.commands = CommandTable(self, (*COMMANDS, RESULT_COMMAND))
        self.controllers = DeviceControllers(config.control, self.pipeline.device_state)
        self._grant_websocket(config)
        self.sinks: list[Sink] = [self.hub]
        self.socket_server: UnixSocketServer | None = None
        self.mqtt_sink: MqttSink | None = None
        self.running: dict[str, _Running] = {}
        self.discovery: Any = None
        self.metrics_server: HttpListener | None = None
        self.websocket_server: WebSocketServer | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retries: dict[str, int] = {}  # devnode → restarts of a discovered source, for backoff
        self._switch_timers: dict[str, asyncio.TimerHandle] = {}  # device → switch off at the arm's TTL
        # A stall of the one loop (reload, a slow disk, a hostile input) shows in metrics.
        self.loop_lag = LoopLagMonitor(self._record_loop_lag, interval_s=1.0)

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        LoopErrorHandler().install(loop)  # one line per kind of loop error, not one per retry
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        self.socket_server = self._make_socket_server(self.config)
        await self.socket_server.start()
        await self.day_counts.start()
        await self._start_mqtt(self.config)
        self._sync_sinks()
        await self._start_metrics(self.config)
        await self.acceptance.start()
        await self._start_websocket(self.config)
        for scanner in self.config.scanners:
            if scanner.path:  # the rest (usb, by_id, match_name) are found by discovery
                self._start_source(scanner, scanner.path)
        await self._start_discovery()
        log.info("ready", version=__version__, config=self.config.source, scanners=len(self.running), socket=self.config.socket.path)
        self.notifier.ready(self.status_line())
        self._hint_if_no_scanner()
        self.loop_lag.start()
        watchdog = self._spawn(watchdog_loop(self.notifier))
        status = self._spawn(self._status_loop())
        await self._stop.wait()
        log.info("stopping")
        self.notifier.stopping()
        watchdog.cancel()
        status.cancel()
        self.loop_lag.stop()
        await self._shutdown()
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    async def _shutdown(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
        for name in list(self.running):
            await self._stop_source(name)
        await self.controllers.close()
        await self.acceptance.stop()  # after the sources: every scan read is counted and written
        if self.socket_server is not None:
            await self.socket_server.stop()
        if self.websocket_server is not None:
            await self.websocket_server.stop()
        for sink in list(self.sinks):
            await sink.stop()  # what still waits is counted undelivered ("stopped") and logged
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Through structlog (masked), never asyncio's "exception was never retrieved".
            log.error("task_failed", task=task.get_name(), error=repr(task.exception()))

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(10)
            self.notifier.status(self.status_line())
            self._hint_if_no_scanner()
            self.day_counts.flush()

    def _hint_if_no_scanner(self) -> None:
        hint = self.no_scanner_hint.tick(len(self.running), time.monotonic())
        if hint is not None:
            log.warning("no_scanner", hint=hint)

    async def _publish_retained(self, topic: str, payload: bytes) -> None:
        if self.mqtt_sink is not None:
            self.mqtt_sink.retain(topic, payload)

    def _record_loop_lag(self, lag_s: float) -> None:
        self.metrics.observe("scannerd_loop_lag_seconds", lag_s)
        self.metrics.set("scannerd_loop_lag_last_seconds", lag_s)

    def status_line(self) -> str:
        present = sum(1 for r in self.running.values() if r.source.present)
        parts = [f"{present}/{len(self.running)} scanners present", f"{self.day_counts.counts.scans} scans today"]
        counts = self.hub.counts()
        parts.append(f"socket {counts['his']} his, {counts['monitors']} monitors")
        if self.mqtt_sink is not None:
            parts.append(f"mqtt {self.mqtt_sink.status().get('state', '?')}")
        return ", ".join(parts)

    # --- sinks ----------------------------------------------------------------------------

    def _make_socket_server(self, config: Config) -> UnixSocketServer:
        return UnixSocketServer(config.socket, self.hub, self.commands.handle, hostname=self.hostname,
                                commands=self.commands.allowed("socket"))

    async def _mqtt_command(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.commands.dispatch(CommandContext("mqtt"), obj)

    async def _start_mqtt(self, config: Config) -> None:
        if config.mqtt is None:
            self.mqtt_sink = None
            return
        from .sinks.mqtt import MqttSink

        self.mqtt_sink = MqttSink(config.mqtt, hostname=self.hostname, metrics=self.metrics, outcomes=self.outcomes,
                                  on_command=self._mqtt_command)
        await self.mqtt_sink.start()

    async def _start_metrics(self, config: Config) -> None:
        """`[metrics] listen`: /metrics only. A busy port is retried, never fatal (http_listener.py)."""
        self.metrics_server = None
        if config.metrics.listen:
            host, _, port = config.metrics.listen.rpartition(":")
            host = host.strip("[]")
            self.metrics_server = HttpListener("metrics", host, int(port), metrics_only(self.metrics.render, host))
            await self.metrics_server.start()

    def _grant_websocket(self, config: Config) -> None:
        # The command table decides what inject may ever reach; the config decides whether.
        self.commands.grant("websocket", {"inject"} if config.websocket and config.websocket.allow_inject else set())

    async def _start_websocket(self, config: Config) -> None:
        self.websocket_server = None
        if config.websocket is not None:
            self.websocket_server = WebSocketServer(
                config.websocket, self.hub, self.commands.handle, hostname=self.hostname,
                commands=lambda: self.commands.allowed("websocket"), metrics_text=self.metrics.render)
            await self.websocket_server.start()

    async def _reload_websocket(self, old: Config, new: Config) -> None:
        self._grant_websocket(new)
        if new.websocket == old.websocket:
            return
        same_address = old.websocket is not None and new.websocket is not None and new.websocket.listen == old.websocket.listen
        if self.websocket_server is not None and new.websocket is not None and same_address:
            self.websocket_server.reconfigure(new.websocket)  # browsers stay connected
            return
        if self.websocket_server is not None:
            await self.websocket_server.stop()
        await self._start_websocket(new)

    def _sync_sinks(self) -> None:
        self.sinks = [self.hub, self.day_counts] + ([self.mqtt_sink] if self.mqtt_sink is not None else [])
        self.pipeline.set_sinks(self.sinks)

    # --- sources --------------------------------------------------------------------------

    def device_info(self, scanner: ScannerConfig, path: str) -> DeviceInfo:
        return DeviceInfo(
            name=scanner.name,
            transport=scanner.transport,
            area=self.config.scanner_area(scanner),
            role=scanner.role,
            path=path,
        )

    def _start_source(self, scanner: ScannerConfig, path: str) -> None:
        if scanner.name in self.running:
            return
        device = self.device_info(scanner, path)
        self.pipeline.register_device(device)

        emit = self._emitter(device)
        spec = framing_spec(scanner)
        request = SourceRequest(device, scanner, spec, emit, self.pipeline.device_state,
                                reopen=self._polls_its_path(scanner),
                                control=self.controllers.channel_for(scanner, spec, emit))
        source_class: type[Source] = registry.get(scanner.transport).source_class()
        source = source_class.from_request(request)
        task = self._spawn(self._run_source(scanner.name, source))
        self.running[scanner.name] = _Running(scanner, source, task)
        log.info("source_started", device=scanner.name, transport=scanner.transport, path=path)

    def _emitter(self, device: DeviceInfo) -> Callable[[Frame | Rejected], None]:
        """Where a source's reads go: the pipeline, then what follows from its answer (the
        acceptance ledger counts a scan; the scanner gets its good / bad feedback)."""

        def emit(item: Frame | Rejected) -> None:
            event = self.pipeline.submit(self.pipeline.devices.get(device.name, device), item)
            if isinstance(event, ScanEvent):
                self.acceptance.on_scan(event)
            self.controllers.outcome(device.name, event)  # a scanner with a control profile
            running = self.running.get(device.name)
            if event is not None and running is not None:
                running.source.feedback(isinstance(event, ScanEvent))  # HID-POS beep, where asked for

        return emit

    def _polls_its_path(self, scanner: ScannerConfig) -> bool:
        """A configured serial entry with an explicit path: its source waits for that path itself.
        (An evdev source ends on unplug or a refused grab; discovery brings it back.)"""
        polls = registry.get(scanner.transport).polls_own_path
        return polls and bool(scanner.path) and scanner in self.config.scanners

    async def _run_source(self, name: str, source: Source) -> None:
        started = time.monotonic()
        try:
            await source.run()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("source_failed", device=name)
            self.pipeline.device_state(DeviceStateEvent(name, "error", f"{type(e).__name__}: {e}"))
        finally:
            current = self.running.get(name)
            # A source that ended by itself (unplug, grab refused) leaves room for discovery.
            if current is not None and current.source is source:
                del self.running[name]
                if self.discovery is not None and not self._polls_its_path(current.scanner):
                    # A source that ran a while was healthy: start the backoff over.
                    # Discovery keys devices by kernel node; a configured path may be a by-id link.
                    node = os.path.realpath(source.device.path)  # noqa: ASYNC240 - a /dev link, resolved in memory by devtmpfs
                    tries = 0 if time.monotonic() - started > 30 else self._retries.get(node, 0)
                    self._retries[node] = tries + 1
                    self.discovery.forget(node, retry_after_s=min(60.0, 2.0 * 2**tries))

    async def _reap(self, running: _Running) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task

    async def _stop_source(self, name: str) -> None:
        running = self.running.pop(name, None)
        if running is None:
            return
        running.source.abort("stopped")  # a partial scan is reported, not silently lost
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task
        log.info("source_stopped", device=name)

    async def _start_discovery(self) -> None:
        try:
            from .sources.discovery import Discovery
        except ImportError:
            return
        try:
            self.discovery = Discovery(self.config, self._on_device_added, self._on_device_removed)
            await self.discovery.start()
        except Exception as e:  # no udev (containers, CI): configured paths still work
            log.warning("discovery_unavailable", error=f"{type(e).__name__}: {e}")
            self.discovery = None

    def _on_device_added(self, found: Any) -> None:
        scanner: ScannerConfig = found.scanner
        running = self.running.get(scanner.name)
        if running is None:
            self._start_source(scanner, found.devnode)
            return
        if running.source.present:
            return
        if running.source.reopens:
            running.source.poke()  # a configured path: reopen it now
        elif os.path.realpath(running.source.device.path) != found.devnode:
            # Back under another node (ttyACM0 → ttyACM1) while the old source still waits on
            # the old one: replace it. (Same node: it is starting, or ending and retried.)
            self._spawn(self._restart_source(scanner, found.devnode))

    async def _restart_source(self, scanner: ScannerConfig, devnode: str) -> None:
        await self._stop_source(scanner.name)
        self._start_source(scanner, devnode)

    def _on_device_removed(self, devnode: str) -> None:
        # Sources normally see their own device vanish first (ENODEV / EIO). A discovered source
        # still holding a removed node is stopped here so its name is free for the replug, and
        # so it never reopens whatever device gets that node name next.
        self._retries.pop(devnode, None)
        for name, running in list(self.running.items()):
            if not self._polls_its_path(running.scanner) and os.path.realpath(running.source.device.path) == devnode:
                # Out of the table now, not after the task ends: an `add` for the same scanner
                # may follow in the same udev batch (a USB reset) and must start a fresh source.
                del self.running[name]
                running.source.abort("device_removed")
                running.source.set_state("absent", "removed")
                running.task.cancel()
                self._spawn(self._reap(running))

    # --- reload ---------------------------------------------------------------------------

    async def reload(self) -> bool:
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                ok = await self._reload()
            except Exception:
                log.exception("reload_failed", kept=self.config.source)
                ok = False
            finally:
                self.notifier.ready(self.status_line())
            self.last_reload = {"ok": ok, "at": wall_clock_iso()}
            return ok

    async def _reload(self) -> bool:
        try:
            # Off the loop: reading the file and compiling the site rules takes milliseconds to
            # seconds, and a scanner sending meanwhile must not have its read cut by the idle gap.
            new = await asyncio.to_thread(lambda: with_secrets(load_config(self.config_path)))
            classifier = new.classifier()
        except ConfigError as e:
            log.error("reload_refused", error=str(e), kept=self.config.source)
            return False
        old = self.config
        # The socket first, while nothing else has changed: if the new one cannot be served,
        # the whole reload is refused and the old socket keeps serving its clients.
        try:
            await self._reload_socket(old, new)
        except (OSError, SocketInUse) as e:
            log.error("reload_refused", error=f"socket: {e}", kept=old.source)
            return False
        self.config = new
        self.classifier = classifier
        self.pipeline.reconfigure(new.policy, classifier)
        await self.controllers.reconfigure(new.control, new.scanners)
        if new.mqtt != old.mqtt:
            old_mqtt, self.mqtt_sink = self.mqtt_sink, None
            await self._start_mqtt(new)
            self._sync_sinks()  # new scans go to the new sink from here on
            if old_mqtt is not None:
                waiting = old_mqtt.take_pending()
                await old_mqtt.stop()
                if self.mqtt_sink is not None:
                    # Scans queued for a broker that refused us (the reason for this reload,
                    # often) are still worth sending while within their TTL.
                    self.mqtt_sink.adopt_pending(waiting)
                    for topic, payload in old_mqtt.retained_items():  # the station's counts too
                        self.mqtt_sink.retain(topic, payload)
        self._sync_sinks()
        if new.metrics != old.metrics:
            if self.metrics_server is not None:
                await self.metrics_server.stop()
            await self._start_metrics(new)
        await self._reload_websocket(old, new)
        wanted = {s.name: s for s in new.scanners}
        # Sources are reconciled by the device they hold, not only by name: an entry that now
        # names a device an auto-detected (or renamed) source holds must get that device.
        claimed = {_node(s.path): s.name for s in new.scanners if s.path}
        auto_detects = new.discovery.auto and not new.scanners
        for name, running in list(self.running.items()):
            keep = wanted.get(name)
            configured = running.scanner in old.scanners
            # An auto-detected source stays while the new config still auto-detects.
            removed = keep is None and (configured or not auto_detects)
            changed = keep is not None and _source_settings(keep) != _source_settings(running.scanner)
            taken = claimed.get(_node(running.source.device.path), name) != name
            # An unchanged scanner keeps its source, its open port and any scan in flight;
            # a new area or role is only a new label on its events.
            if removed or changed or taken:
                await self._stop_source(name)
            elif keep is not None:
                running.scanner = keep
                self.pipeline.register_device(self.device_info(keep, running.source.device.path))
        for scanner in new.scanners:
            if scanner.name not in self.running and scanner.path:
                self._start_source(scanner, scanner.path)
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
        await self._start_discovery()
        log.info("reloaded", config=new.source, scanners=sorted(self.running))
        return True

    async def _reload_socket(self, old: Config, new: Config) -> None:
        server = self.socket_server
        assert server is not None
        if new.socket.path != old.socket.path:
            successor = self._make_socket_server(new)
            await successor.start()  # raises: the caller refuses the reload, nothing has changed
            self.socket_server = successor
            # Connections on the old path close; the hub keeps every waiting scan, and what a
            # closing HIS had not acked goes to the next HIS (on either path) within its TTL.
            await server.stop()
        elif new.socket != old.socket:
            server.reconfigure(new.socket)  # clients stay connected
        self.hub.reconfigure(client_buffer_bytes=new.socket.client_buffer_bytes, queue_limit=new.policy.queue_limit)

    # Services for the command table (command_table.py holds the commands themselves).

    def known_device(self, name: str) -> bool:
        return name in self.pipeline.devices or any(s.name == name for s in self.config.scanners)

    def device_names(self) -> list[str]:
        return sorted(set(self.pipeline.devices) | {s.name for s in self.config.scanners})

    def metrics_json(self) -> dict[str, Any]:
        return self.metrics.snapshot()

    def metrics_text(self) -> str:
        return self.metrics.render()

    def shapes(self) -> dict[str, Any]:
        return {"shapes": self.census.snapshot(), "overflow": self.census.overflow}

    def subscribe(self, ctx: CommandContext, role: str, devices: list[str] | None, ack: bool, show_codes: bool) -> dict[str, Any]:
        assert ctx.subscriber is not None  # the table only sends subscribe from a connection
        return self.hub.subscribe(ctx.subscriber, role, devices, ack, show_codes)

    def ack(self, ctx: CommandContext, event_id: str) -> dict[str, Any]:
        assert ctx.subscriber is not None
        return self.hub.ack(ctx.subscriber, event_id)

    async def arm(self, device: str, ttl_s: float | None, amount_fen: int | None, voice: str | None) -> dict[str, Any]:
        try:
            self.controllers.check(device, amount_fen, voice)  # refused before anything changes
        except ControlParamError as e:
            raise CommandError(str(e)) from None
        self.pipeline.arm(device, ttl_s)  # scans count from now, while the device switches on
        result = await self.controllers.arm(device, amount_fen, voice, ttl_s)
        if result.get("scanner") == "not_controllable":
            result["scanner"] = self._switch(device, True, ttl_s)  # a HID-POS trigger, if it has one
        return {"device": device, "ttl_s": ttl_s, **result}

    async def disarm(self, device: str) -> dict[str, Any]:
        self.pipeline.disarm(device)
        result = await self.controllers.disarm(device)
        if result.get("scanner") == "not_controllable":
            result["scanner"] = self._switch(device, False, None)
        return {"device": device, **result}

    def _switch(self, device: str, on: bool, ttl_s: float | None) -> str:
        """A scanner whose transport can switch it (HID-POS trigger) without a control profile;
        with a TTL it is switched off again when the arming runs out."""
        timer = self._switch_timers.pop(device, None)
        if timer is not None:
            timer.cancel()
        running = self.running.get(device)
        if running is None:
            return "not_controllable"
        answer = running.source.switch(on)
        if on and ttl_s is not None and answer != "not_controllable":
            self._switch_timers[device] = asyncio.get_running_loop().call_later(
                ttl_s, lambda: self._switch(device, False, None))
        return answer

    async def display(self, device: str, amount_fen: int | None, voice: str | None) -> dict[str, Any]:
        try:
            return {"device": device, **await self.controllers.display(device, amount_fen, voice)}
        except ControlParamError as e:
            raise CommandError(str(e)) from None

    def _device_for(self, name: str) -> DeviceInfo:
        known = self.pipeline.devices.get(name)
        if known is not None:
            return known
        scanner = next(s for s in self.config.scanners if s.name == name)
        return self.device_info(scanner, scanner.path)

    def inject(self, device_name: str, code: str, symbology: str | None) -> dict[str, Any]:
        from .framing import rejection_reason

        device = self._device_for(device_name)
        now = time.monotonic_ns()
        why = rejection_reason(code, 65536)
        if why is not None:
            event = self.pipeline.submit(device, Rejected(device_name, why, code, now))
        else:
            frame = Frame(device=device_name, text=code, symbology=symbology, first_ns=now, last_ns=now,
                          completed_ns=now, injected=True)
            event = self.pipeline.submit(device, frame)
        if event is None:
            raise CommandError("suppressed as a duplicate")
        wire = encode_event(event)
        wire.pop("code", None)
        if isinstance(event, ScanEvent):
            wire["masked"] = mask(event.code)
        return {"event": wire}

    def result(self, args: dict[str, Any]) -> dict[str, Any]:
        """The HIS's `result` command (acceptance ledger)."""
        return self.acceptance.result_command(args)

    def status(self, ctx: CommandContext | None = None) -> dict[str, Any]:
        counts = self.hub.counts()
        if ctx is not None and ctx.subscriber is not None and ctx.subscriber.role is None:
            counts["unsubscribed"] -= 1  # the connection asking is not a client of interest
        sinks: dict[str, Any] = {"socket": {**(self.socket_server.status() if self.socket_server else {}), **counts}}
        if self.mqtt_sink is not None:
            sinks["mqtt"] = self.mqtt_sink.status()
        listeners = {name: server.status() for name, server in
                     (("websocket", self.websocket_server), ("metrics", self.metrics_server)) if server is not None}
        return {
            "version": __version__,
            "host": self.hostname,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "config": self.config.source,
            "site": dataclasses.asdict(self.config.site),
            "scans_today": self.day_counts.counts.scans,
            "today": self.day_counts.counts.snapshot(),
            "latency": self.latency.snapshot(),
            "last_reload": self.last_reload,
            "devices": self.devices(),
            "sinks": sinks,
            "armed": self.pipeline.arming_state(),
            "control": self.controllers.states(),
            "acceptance": self.acceptance.status(),
            "listeners": listeners,
        }

    def devices(self) -> list[dict[str, Any]]:
        now = time.monotonic_ns()
        out = []
        for name, r in sorted(self.running.items()):
            last = self.pipeline.last_scan_ns.get(name)
            out.append(
                {
                    "name": name,
                    "transport": r.scanner.transport,
                    "path": r.source.device.path,
                    "present": r.source.present,
                    "area": self.config.scanner_area(r.scanner),
                    "role": r.scanner.role,
                    "last_scan_s_ago": None if last is None else round((now - last) / 1e9, 1),
                }
            )
        return out


def run_daemon(config_path: str | None) -> int:
    try:
        config = with_secrets(load_config(config_path))
    except ConfigError as e:
        log.error("config_invalid", error=str(e))
        return 2
    try:
        return asyncio.run(Daemon(config, config_path).run())
    except (OSError, SocketInUse) as e:
        log.error("startup_failed", error=str(e))
        return 1
