"""The MQTT sink against a real mosquitto (tests/mqtt_broker.py starts it; no mocks).

Waits are on conditions with deadlines; nothing sleeps to assert.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from scannerd.config import MqttConfig
from scannerd.metrics import Metrics
from scannerd.model import Classification, DeviceInfo, DeviceStateEvent, ScanEvent
from scannerd.protocol import encode_event
from scannerd.sinks.mqtt import MqttSink

from mqtt_broker import Broker, make_ca, make_tls_files

HERE = Path(__file__).resolve().parent
MQTT = {"sink": "mqtt"}
USER, PASSWORD = "kiosk", "Sup3r-s3cret-pw"
# Reconnect fast in tests; production defaults are 0.5 s → 30 s.
FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "op_timeout_s": 5.0}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "test-ca")
    other = make_ca(d, "other-ca")
    return {"tls": make_tls_files(d, ca), "ca": ca.path, "wrong_ca": other.path}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Any]) -> Iterator[Broker]:
    """One mosquitto per session: anonymous, password-file and TLS listeners."""
    b = Broker(tmp_path_factory.mktemp("mosquitto"), users={USER: PASSWORD}, tls=pki["tls"])
    with b:
        yield b


def make_scan(id: str, ttl_s: float = 60.0, device: str = "window-3") -> ScanEvent:
    now = time.monotonic_ns()
    return ScanEvent(
        id=id,
        ts="2026-11-25T10:15:02.123456+08:00",
        device=DeviceInfo(device, "inject", "outpatient", "window"),
        code="134567890123456789",
        symbology="qr",
        classification=Classification("wechat", "payment", "wechat.v1", "high"),
        scan_ms=31.2,
        completed_ns=now,
        expires_ns=now + int(ttl_s * 1e9),
    )


async def eventually(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class Subscriber:
    """A test-side MQTT client collecting messages from the topics it subscribed to."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

    async def pump(self) -> None:
        async for m in self.client.messages:
            self.queue.put_nowait(m)

    async def get(self, timeout: float = 5.0) -> aiomqtt.Message:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no MQTT message within {timeout}s") from None

    async def get_on(self, topic: str, timeout: float = 5.0) -> aiomqtt.Message:
        deadline = time.monotonic() + timeout
        while True:
            m = await self.get(max(0.01, deadline - time.monotonic()))
            if m.topic.matches(topic):
                return m


@asynccontextmanager
async def subscriber(port: int, *topics: str, **kw: Any) -> AsyncIterator[Subscriber]:
    async with aiomqtt.Client("127.0.0.1", port, **kw) as client:
        sub = Subscriber(client)
        for t in topics:
            await client.subscribe(t, qos=1)
        task = asyncio.create_task(sub.pump())
        try:
            yield sub
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[MqttSink]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


def new_sink(port: int, prefix: str, metrics: Metrics | None = None, **kw: Any) -> MqttSink:
    extra = {k: kw.pop(k) for k in list(kw) if k in ("on_command", "backoff_initial_s", "backoff_max_s", "op_timeout_s", "drain_timeout_s")}
    cfg = MqttConfig(host="127.0.0.1", port=port, topic_prefix=prefix, keepalive_s=5, **kw)
    return MqttSink(cfg, hostname="testhost", metrics=metrics or Metrics(), **{**FAST, **extra})


def payload(m: aiomqtt.Message) -> Any:
    assert isinstance(m.payload, bytes)
    return json.loads(m.payload) if m.payload.startswith(b"{") else m.payload.decode()


# -- delivery ------------------------------------------------------------------------------------


async def test_scan_arrives_on_its_topic_with_the_socket_payload(broker: Broker) -> None:
    metrics = Metrics()
    prefix = "t/scan"
    async with subscriber(broker.port, f"{prefix}/#") as sub, running(new_sink(broker.port, prefix, metrics)) as sink:
        status = await sub.get_on(f"{prefix}/status")
        assert status.payload == b"online"
        assert status.retain is False  # live delivery; the retained copy is checked below
        await eventually(lambda: sink.status()["state"] == "connected", what="connected")

        ev = make_scan("01JSCAN")
        sink.deliver(ev)
        m = await sub.get_on(f"{prefix}/scan/window-3")
        assert m.qos == 1 and m.retain is False
        got = payload(m)
        want = encode_event(ev)
        assert got["latency"].pop("pipeline_us") >= 0
        assert got == want
        await eventually(lambda: metrics.value("scannerd_delivered_total", MQTT) >= 1, what="delivered metric")
        h = metrics.histogram("scannerd_delivery_latency_seconds", MQTT)
        assert h is not None and h.count == 1

    # After a clean stop the retained status is `offline` (the broker drops the will on DISCONNECT).
    async with subscriber(broker.port, f"{prefix}/status") as late:
        m = await late.get()
        assert (m.payload, m.retain) == (b"offline", True)


async def test_device_state_is_retained_for_late_subscribers(broker: Broker) -> None:
    prefix = "t/state"
    async with running(new_sink(broker.port, prefix)) as sink:
        sink.deliver(DeviceStateEvent("window-3", "error", "EIO reading /dev/ttyACM0"))
        await eventually(lambda: sink.status()["published"] >= 1, what="state published")
        async with subscriber(broker.port, f"{prefix}/device/+/state") as late:
            m = await late.get()
    assert m.retain is True
    assert str(m.topic) == f"{prefix}/device/window-3/state"
    assert payload(m) == {"type": "device", "device": "window-3", "state": "error", "reason": "EIO reading /dev/ttyACM0"}


async def test_commands_over_mqtt(broker: Broker) -> None:
    prefix = "t/cmd"
    calls: list[dict[str, Any]] = []

    async def on_command(req: dict[str, Any]) -> dict[str, Any]:
        calls.append(req)
        return {"type": "reply", "cmd": req["cmd"], "ok": True}

    async with subscriber(broker.port, f"{prefix}/cmd/reply") as sub:
        pub = sub.client
        # A retained command (left on the broker before we subscribe) would re-arm a kiosk on
        # every reconnect: the broker hands it over with the retain flag and it must be ignored.
        await pub.publish(f"{prefix}/cmd", b'{"cmd":"arm","device":"kiosk-1","ttl_s":999}', qos=1, retain=True)
        async with running(new_sink(broker.port, prefix, on_command=on_command)) as sink:
            await eventually(lambda: sink.status()["state"] == "connected", what="connected")
            await pub.publish(f"{prefix}/cmd", b'{"cmd":"arm","device":"kiosk-1","ttl_s":30,"req":"r1"}', qos=1)
            assert payload(await sub.get()) == {"type": "reply", "cmd": "arm", "ok": True, "req": "r1"}
            # Not JSON with a "cmd": refused by the decoder before any handler (which commands
            # MQTT may send is the command table's decision: tests/test_command_table.py).
            await pub.publish(f"{prefix}/cmd", b'{"cmd":NaN}', qos=1)
            refused = payload(await sub.get())
            assert refused["ok"] is False and "NaN" in refused["error"]
            assert calls == [{"cmd": "arm", "device": "kiosk-1", "ttl_s": 30, "req": "r1"}]
        await pub.publish(f"{prefix}/cmd", b"", qos=1, retain=True)  # clear the retained message


async def test_broker_down_at_start_does_not_block(tmp_path: Path) -> None:
    port = Broker(tmp_path).port  # a free port nobody listens on
    sink = new_sink(port, "t/down")
    t0 = time.monotonic()
    await sink.start()
    assert time.monotonic() - t0 < 0.5
    sink.deliver(make_scan("q1"))
    await eventually(lambda: sink.status().get("error") == "unreachable", what="unreachable status")
    assert sink.status()["state"] in ("connecting", "disconnected")
    assert sink.status()["queued"] == 1
    t0 = time.monotonic()
    await sink.stop()
    assert time.monotonic() - t0 < 2


# -- last will -----------------------------------------------------------------------------------


async def test_last_will_offline_when_the_process_is_killed(broker: Broker) -> None:
    prefix = "t/lwt"
    async with subscriber(broker.port, f"{prefix}/status", f"{prefix}/scan/#") as sub:
        child = subprocess.Popen(
            [sys.executable, str(HERE / "mqtt_sink_child.py"), "127.0.0.1", str(broker.port), prefix],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert (await sub.get_on(f"{prefix}/status", timeout=10)).payload == b"online"
            assert payload(await sub.get_on(f"{prefix}/scan/kiosk-1"))["id"] == "child-1"
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 10)  # type: ignore[union-attr]
            assert line.startswith("ready"), (line, child.stderr.read() if child.poll() is not None else "")  # type: ignore[union-attr]
            child.send_signal(signal.SIGKILL)
            m = await sub.get_on(f"{prefix}/status", timeout=10)
            assert m.payload == b"offline"
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(5)
            for f in (child.stdout, child.stderr):
                if f:
                    f.close()


# -- reconnect, TTL, exactly once ----------------------------------------------------------------


async def test_broker_restart_delivers_in_ttl_scans_once_and_stale_never(tmp_path: Path) -> None:
    b = Broker(tmp_path / "restart", persistent=True)
    prefix = "t/restart"
    metrics = Metrics()
    sub_kw = {"identifier": "his-test", "clean_session": False}
    with b:
        # A persistent HIS session: the broker queues QoS 1 scans for it while it is away.
        async with subscriber(b.port, f"{prefix}/scan/#", **sub_kw):
            pass
        async with running(new_sink(b.port, prefix, metrics)) as sink:
            await eventually(lambda: sink.status()["state"] == "connected", what="connected")
            with capture_logs() as logs:
                b.stop()
                await eventually(lambda: sink.status()["state"] != "connected", what="sink notices the broker is gone")
                sink.deliver(make_scan("stale", ttl_s=0.3))
                sink.deliver(make_scan("fresh-1"))
                sink.deliver(make_scan("fresh-2"))
                await eventually(lambda: sink.status()["expired"] == 1, what="stale scan expiring in the queue")
                assert sink.status()["queued"] == 2
                b.start()
                await eventually(lambda: sink.status()["state"] == "connected" and sink.status()["queued"] == 0, timeout=10, what="reconnect and flush")
            async with subscriber(b.port, f"{prefix}/scan/#", **sub_kw) as his:
                # A sentinel published after the flush: anything sent twice would arrive before it.
                sink.deliver(make_scan("sentinel"))
                ids: list[str] = []
                while not ids or ids[-1] != "sentinel":
                    ids.append(payload(await his.get(timeout=10))["id"])
    assert ids == ["fresh-1", "fresh-2", "sentinel"]
    assert metrics.value("scannerd_expired_total", {**MQTT, "reason": "ttl_waiting_for_broker"}) == 1
    assert metrics.value("scannerd_delivered_total", MQTT) >= 3
    events = [e["event"] for e in logs]
    assert events.count("mqtt.scan_expired") == 1
    # One line for the loss, one for the refused retries (however many), one for the return.
    assert events.count("mqtt.connection_lost") == 1, events
    assert events.count("mqtt.connect_failed") == 1, events
    assert events.count("mqtt.retry_failed") >= 1, events
    assert events.count("mqtt.connected") == 1


# -- authentication ------------------------------------------------------------------------------


async def test_password_file_authenticates_and_never_reaches_the_logs(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert broker.auth_port is not None
    pw = tmp_path / "mqtt.pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    prefix = "t/auth"
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with subscriber(broker.port, f"{prefix}/scan/#") as sub:
            async with running(new_sink(broker.auth_port, prefix, username=USER, password_file=str(pw))) as sink:
                sink.deliver(make_scan("auth-1"))
                assert payload(await sub.get())["id"] == "auth-1"
                assert sink.status()["state"] == "connected"
    text = repr(logs) + caplog.text
    assert "mqtt.connected" in text
    assert PASSWORD not in text


async def test_wrong_password_is_an_auth_error_logged_once(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    assert broker.auth_port is not None
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        sink = new_sink(broker.auth_port, "t/badauth", username=USER, password="wrong-" + PASSWORD)
        async with running(sink):
            await eventually(lambda: sum(e["event"] == "mqtt.retry_failed" for e in logs) >= 2, what="several refused retries")
            st = sink.status()
    assert st["state"] != "connected"
    assert st["error"] == "auth" and "not authorised (check username and password)" in st["reason"]
    refused = [e for e in logs if e["event"] == "mqtt.connect_failed"]
    assert len(refused) == 1 and refused[0]["log_level"] == "error"
    assert PASSWORD not in repr(logs) + caplog.text


# -- TLS -----------------------------------------------------------------------------------------


async def test_tls_with_the_right_ca(broker: Broker, pki: dict[str, Any]) -> None:
    assert broker.tls_port is not None
    prefix = "t/tls"
    async with subscriber(broker.port, f"{prefix}/scan/#") as sub:
        async with running(new_sink(broker.tls_port, prefix, tls=True, ca_file=str(pki["ca"]))) as sink:
            sink.deliver(make_scan("tls-1"))
            assert payload(await sub.get())["id"] == "tls-1"
            assert sink.status()["tls"] is True


async def test_tls_with_a_wrong_ca_is_refused_with_a_clear_error(broker: Broker, pki: dict[str, Any]) -> None:
    assert broker.tls_port is not None
    with capture_logs() as logs:
        sink = new_sink(broker.tls_port, "t/badtls", tls=True, ca_file=str(pki["wrong_ca"]))
        async with running(sink):
            await eventually(lambda: sink.status().get("error") == "tls", what="TLS error status")
            st = sink.status()
    assert st["state"] != "connected"
    assert "TLS handshake failed" in st["reason"] and "certificate verify failed" in st["reason"]
    errors = [e for e in logs if e["event"] == "mqtt.connect_failed"]
    assert len(errors) == 1 and errors[0]["log_level"] == "error" and errors[0]["error"] == "tls"


async def test_tls_against_a_plain_listener_is_reported_as_tls(broker: Broker, pki: dict[str, Any]) -> None:
    # A technician points tls = true at port 1883: the broker drops the TLS hello. That is a
    # configuration problem to report as such, not "cannot reach the broker".
    sink = new_sink(broker.port, "t/tlsplain", tls=True, ca_file=str(pki["ca"]))
    async with running(sink):
        await eventually(lambda: sink.status().get("error") is not None, what="an error status")
        st = sink.status()
    assert st["error"] == "tls", st


# -- latency -------------------------------------------------------------------------------------


class RecordingMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__()
        self.samples: list[float] = []

    def observe(self, name: str, seconds: float, labels: dict[str, str] | None = None) -> None:
        super().observe(name, seconds, labels)
        if name == "scannerd_delivery_latency_seconds":
            self.samples.append(seconds)


async def test_frame_to_puback_latency_is_recorded(broker: Broker) -> None:
    """Frame complete → PUBACK for scans one at a time, as a cashier makes them.

    Run with -s to see the numbers: pytest tests/test_mqtt.py -k latency -s
    """
    metrics = RecordingMetrics()
    n = int(os.environ.get("MQTT_LATENCY_N", "200"))
    async with running(new_sink(broker.port, "t/latency", metrics)) as sink:
        await eventually(lambda: sink.status()["state"] == "connected", what="connected")
        for i in range(n):
            sink.deliver(make_scan(f"lat-{i}"))
            await eventually(lambda i=i: len(metrics.samples) > i, what=f"PUBACK for scan {i}")  # type: ignore[misc]
    s = sorted(metrics.samples)
    p50, p99 = s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]
    print(f"\nmqtt frame→PUBACK over {n} scans: p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, max {s[-1] * 1e3:.3f} ms")
    h = metrics.histogram("scannerd_delivery_latency_seconds", MQTT)
    assert h is not None and h.count == n
    assert p50 < 0.05  # loopback broker: far below the 50 ms an HIS would notice


async def test_unacknowledged_scan_is_never_resent(tmp_path: Path) -> None:
    """A broker that stops answering mid-publish: the scan's PUBLISH is on the wire with no
    PUBACK. scannerd counts it `unconfirmed` and does not send it again; the broker, once it
    resumes, reads it from the old connection: resending would have delivered it twice."""
    b = Broker(tmp_path / "stall")
    prefix = "t/stall"
    metrics = Metrics()
    with b:
        assert b.proc is not None
        async with subscriber(b.port, f"{prefix}/scan/#") as sub:
            sink = new_sink(b.port, prefix, metrics, op_timeout_s=1.0)
            async with running(sink):
                await eventually(lambda: sink.status()["state"] == "connected", what="connected")
                b.proc.send_signal(signal.SIGSTOP)
                try:
                    sink.deliver(make_scan("in-flight"))
                    await eventually(lambda: sink.status()["unconfirmed"] == 1, what="PUBACK timeout")
                    assert sink.status()["state"] != "connected"
                finally:
                    b.proc.send_signal(signal.SIGCONT)
                await eventually(lambda: sink.status()["state"] == "connected", timeout=10, what="reconnect")
                sink.deliver(make_scan("sentinel"))
                ids: list[str] = []
                while not {"in-flight", "sentinel"} <= set(ids):
                    ids.append(payload(await sub.get(timeout=10))["id"])
    assert sorted(ids) == ["in-flight", "sentinel"]
    assert metrics.value("scannerd_undelivered_total", {**MQTT, "reason": "unconfirmed"}) == 1


# -- review fixes --------------------------------------------------------------------------------


async def test_scans_queued_under_a_wrong_password_survive_the_fixing_reload(broker: Broker) -> None:
    # The broker refuses the password; scans queue; the admin fixes it and reloads: the new
    # sink publishes what is still within its TTL, once.
    assert broker.auth_port is not None
    prefix = "t/reloadfix"
    async with subscriber(broker.port, f"{prefix}/scan/#") as sub:
        bad = new_sink(broker.auth_port, prefix, username=USER, password="wrong-" + PASSWORD)
        await bad.start()
        bad.deliver(make_scan("01RELOAD000000000000000001"))
        bad.deliver(make_scan("01RELOAD000000000000000002"))
        await eventually(lambda: bad.status().get("error") == "auth", what="auth refusal")
        good = new_sink(broker.port, prefix)
        await good.start()
        waiting = bad.take_pending()
        await bad.stop()
        good.adopt_pending(waiting)
        try:
            ids = sorted([payload(await sub.get_on(f"{prefix}/scan/#"))["id"], payload(await sub.get_on(f"{prefix}/scan/#"))["id"]])
            assert ids == ["01RELOAD000000000000000001", "01RELOAD000000000000000002"]
            with pytest.raises(AssertionError):
                await sub.get_on(f"{prefix}/scan/#", timeout=0.5)  # nothing twice
        finally:
            await good.stop()


async def test_a_broker_that_never_sends_connack_leaks_no_sockets(tmp_path: Path) -> None:
    # A TCP listener that accepts and says nothing: every connect attempt times out.
    held: list[asyncio.StreamWriter] = []

    async def stall(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)
        await asyncio.sleep(30)

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = MqttSink(MqttConfig(host="127.0.0.1", port=port, topic_prefix="t/blackhole", keepalive_s=60),
                    hostname="testhost", metrics=Metrics(), **{**FAST, "op_timeout_s": 0.3})
    await sink.start()
    try:
        await eventually(lambda: sink.status().get("error") == "timeout", timeout=10, what="a CONNACK timeout")
        await asyncio.sleep(2.0)  # several more attempts at the test backoff
        # Each abandoned attempt used to keep its socket, a loop reader and aiomqtt's misc-loop
        # task alive (until paho's keepalive, a minute here).
        misc = [t for t in asyncio.all_tasks() if "misc_loop" in t.get_coro().__qualname__]  # type: ignore[union-attr]
        assert len(misc) <= 1, f"{len(misc)} misc-loop tasks of abandoned connect attempts still alive"
    finally:
        await sink.stop()
        for w in held:
            w.close()
        server.close()
        for t in asyncio.all_tasks():
            if t.get_coro().__qualname__.endswith("stall"):  # type: ignore[union-attr]
                t.cancel()
        await asyncio.sleep(0.1)
    assert len(held) >= 3, "expected several connect attempts"
