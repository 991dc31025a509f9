"""MQTT wire contract and sink policy that need no broker: topics, payloads, commands, backoff,
error classification, TTL and queue rules."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from aiomqtt import MqttCodeError, MqttError
from aiomqtt.exceptions import MqttConnectError
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from scannerd.config import MqttConfig
from scannerd.metrics import Metrics
from scannerd.model import (
    Classification,
    DeviceInfo,
    DeviceStateEvent,
    RejectEvent,
    ScanEvent,
)
from scannerd.protocol import ProtocolError, encode_event
from scannerd.sinks.mqtt import MqttSink, classify_error
from scannerd.sinks.mqtt_topics import (
    Topics,
    backoff_delay,
    command_reply_payload,
    default_client_id,
    default_prefix,
    event_payload,
    parse_mqtt_command,
    topic_level,
)

MQTT = {"sink": "mqtt"}


def scan(ttl_s: float | None = 60.0, device: str = "window-3", id: str = "01JTEST", age_s: float = 0.0) -> ScanEvent:
    now = time.monotonic_ns() - int(age_s * 1e9)
    return ScanEvent(
        id=id,
        ts="2026-11-25T10:15:02.123456+08:00",
        device=DeviceInfo(device, "inject", "outpatient", "window"),
        code="134567890123456789",
        symbology="qr",
        classification=Classification("wechat", "payment", "wechat.v1", "high"),
        scan_ms=31.2,
        completed_ns=now,
        expires_ns=None if ttl_s is None else now + int(ttl_s * 1e9),
    )


# -- topics and payloads -------------------------------------------------------------------------


def test_default_names_follow_the_hostname() -> None:
    assert default_prefix("kiosk-07") == "scannerd/kiosk-07"
    assert default_client_id("kiosk-07") == "scannerd-kiosk-07"
    t = Topics("scannerd/kiosk-07")
    assert (t.status, t.cmd, t.cmd_reply) == ("scannerd/kiosk-07/status", "scannerd/kiosk-07/cmd", "scannerd/kiosk-07/cmd/reply")
    assert t.scan("window-3") == "scannerd/kiosk-07/scan/window-3"
    assert t.device_state("window-3") == "scannerd/kiosk-07/device/window-3/state"
    assert t.reject("window-3") == "scannerd/kiosk-07/reject/window-3"


@given(st.text())
def test_topic_level_is_one_safe_level(name: str) -> None:
    level = topic_level(name)
    assert level
    assert not set(level) & {"/", "+", "#", "\x00"}
    if not set(name) & {"/", "+", "#", "\x00"} and name:
        assert level == name


def test_scan_payload_is_the_socket_event_not_retained() -> None:
    ev = scan()
    out = event_payload(ev, Topics("p"), qos=1, delivered_ns=ev.completed_ns + 84_000)
    assert out.topic == "p/scan/window-3"
    assert (out.qos, out.retain) == (1, False)
    assert not out.payload.endswith(b"\n")
    assert json.loads(out.payload) == encode_event(ev, ev.completed_ns + 84_000)
    assert json.loads(out.payload)["latency"]["pipeline_us"] == 84


def test_device_state_is_retained_and_at_least_qos1() -> None:
    out = event_payload(DeviceStateEvent("window-3", "error", "EIO reading /dev/ttyACM0"), Topics("p"), qos=0)
    assert out.topic == "p/device/window-3/state"
    assert (out.qos, out.retain) == (1, True)
    assert json.loads(out.payload) == {"type": "device", "device": "window-3", "state": "error", "reason": "EIO reading /dev/ttyACM0"}


def test_reject_payload_is_masked_and_not_retained() -> None:
    out = event_payload(RejectEvent("ts", "window-3", "too_long", "1345…6789"), Topics("p"), qos=1)
    assert out.topic == "p/reject/window-3"
    assert out.retain is False
    assert json.loads(out.payload)["masked"] == "1345…6789"


# -- commands ------------------------------------------------------------------------------------


def test_arm_command_is_accepted() -> None:
    assert parse_mqtt_command(b'{"cmd":"arm","device":"kiosk-1","ttl_s":30}') == {"cmd": "arm", "device": "kiosk-1", "ttl_s": 30}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"arm", "not a JSON object"), (b"{\"cmd\":1}", "missing \"cmd\""), (b"{\"cmd\":\"arm\",\"ttl_s\":Infinity}", "Infinity is not a number")],
)
def test_bad_commands_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_mqtt_command(payload)


def test_reply_echoes_request_id() -> None:
    out = json.loads(command_reply_payload({"cmd": "arm", "req": "r-17"}, {"type": "reply", "cmd": "arm", "ok": True}))
    assert out == {"type": "reply", "cmd": "arm", "ok": True, "req": "r-17"}


# -- backoff and errors --------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0.01, max_value=5), st.floats(min_value=0.01, max_value=120))
def test_backoff_is_capped_and_jittered(attempt: int, initial: float, cap: float) -> None:
    d = backoff_delay(attempt, initial, cap, random.Random(attempt))
    step = min(cap, initial * 2 ** min(attempt, 30))
    assert step * 0.5 <= d <= step


def test_backoff_grows_then_stops_growing() -> None:
    steps = [backoff_delay(n, 0.5, 30, random.Random(0)) / (0.5 + 0.5 * random.Random(0).random()) for n in range(10)]
    assert steps[:7] == pytest.approx([0.5, 1, 2, 4, 8, 16, 30])
    assert steps[7:] == pytest.approx([30, 30, 30])


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=134)), "auth", "bad username or password"),
        (MqttConnectError(5), "auth", "not authorised"),
        (MqttError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)"), "tls", "TLS handshake failed"),
        (MqttError("[Errno 111] Connection refused"), "unreachable", "Connection refused"),
        (MqttError("Operation timed out"), "timeout", "in time"),
        (MqttError("Disconnected during message iteration"), "connection_lost", "lost"),
        (MqttCodeError(7, "Unexpected disconnection"), "connection_lost", "lost"),
        (ConnectionRefusedError(111, "Connection refused"), "unreachable", "Connection refused"),
    ],
)
def test_errors_are_typed(exc: BaseException, kind: str, words: str) -> None:
    err = classify_error(exc)
    assert err.kind == kind
    assert words in err.reason


# -- sink policy without a broker ---------------------------------------------------------------


def sink(metrics: Metrics, **cfg: object) -> MqttSink:
    return MqttSink(MqttConfig(host="127.0.0.1", port=1, **cfg), hostname="h", metrics=metrics)  # type: ignore[arg-type]


async def test_expired_scan_is_dropped_at_delivery() -> None:
    m = Metrics()
    s = sink(m)
    s.deliver(scan(ttl_s=1, age_s=2))
    assert s.status()["queued"] == 0
    assert m.value("scannerd_expired_total", {**MQTT, "reason": "ttl_waiting_for_broker"}) == 1


async def test_queue_is_bounded_and_drops_the_oldest() -> None:
    m = Metrics()
    s = sink(m, queue_limit=3)
    for i in range(5):
        s.deliver(scan(id=f"s{i}"))
    assert s.status()["queued"] == 3
    assert [p.event.id for p in s._queue] == ["s2", "s3", "s4"]  # type: ignore[union-attr]
    assert m.value("scannerd_undelivered_total", {**MQTT, "reason": "queue_full"}) == 2


async def test_device_state_keeps_only_the_latest_per_device() -> None:
    s = sink(Metrics())
    s.deliver(DeviceStateEvent("window-3", "present"))
    s.deliver(DeviceStateEvent("window-3", "absent"))
    s.deliver(DeviceStateEvent("window-4", "present"))
    assert s.status()["queued"] == 2
    assert s._states["window-3"].state == "absent"


async def test_queued_scan_expires_while_waiting() -> None:
    m = Metrics()
    s = sink(m)
    s.deliver(scan(ttl_s=0.05, id="short"))
    s.deliver(scan(ttl_s=60, id="long"))
    deadline = time.monotonic() + 2
    while s.status()["queued"] != 1:
        assert time.monotonic() < deadline, s.status()
        await asyncio.sleep(0.01)
    assert m.value("scannerd_expired_total", {**MQTT, "reason": "ttl_waiting_for_broker"}) == 1


def test_password_is_not_in_config_repr() -> None:
    assert "hunter2" not in repr(MqttConfig(host="h", username="u", password="hunter2"))
