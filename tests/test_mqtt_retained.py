"""Retained MQTT state and retained commands, against a real mosquitto (issue 11 item 9).

- The retained device state is a promise to every dashboard: after a broker restart (which
  loses retained messages without persistence) or a reload that moves the sink to another
  broker or prefix, the last state of every device is published again.
- A retained `cmd` is never obeyed, whether it was on the broker before we subscribed or was
  published while we are connected (MQTT 3.1.1 brokers clear the retain flag on live delivery;
  MQTT 5's retain-as-published keeps it, so the sink can tell).
- The MQTT stop budget fits inside the unit's TimeoutStopSec.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scannerd.config import MqttConfig
from scannerd.metrics import Metrics
from scannerd.model import DeviceStateEvent
from scannerd.sinks.mqtt import STOP_BUDGET_S, MqttSink

from mqtt_broker import Broker
from test_mqtt import eventually, make_scan, new_sink, payload, running, subscriber

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto-retained"))
    with b:
        yield b


async def test_retained_cmd_published_while_connected_is_ignored(broker: Broker) -> None:
    prefix = "t/retained-live"
    calls: list[dict[str, Any]] = []

    async def on_command(req: dict[str, Any]) -> dict[str, Any]:
        calls.append(req)
        return {"type": "reply", "cmd": req["cmd"], "ok": True}

    async with subscriber(broker.port, f"{prefix}/cmd/reply") as sub:
        pub = sub.client
        async with running(new_sink(broker.port, prefix, on_command=on_command)) as sink:
            await eventually(lambda: sink.status()["state"] == "connected", what="connected")
            # Published retained while scannerd listens: it stays on the broker and would re-arm
            # the kiosk at once (and again on every reconnect).
            await pub.publish(f"{prefix}/cmd", b'{"cmd":"arm","device":"kiosk-1","ttl_s":999,"req":"retained"}', qos=1, retain=True)
            # A live command after it: its reply proves the retained one was read and passed over.
            await pub.publish(f"{prefix}/cmd", b'{"cmd":"disarm","device":"kiosk-1","req":"live"}', qos=1)
            assert payload(await sub.get_on(f"{prefix}/cmd/reply"))["req"] == "live"
            assert [c["req"] for c in calls] == ["live"]
        await pub.publish(f"{prefix}/cmd", b"", qos=1, retain=True)  # clear it from the broker


async def test_device_state_is_published_again_after_a_broker_restart(tmp_path: Path) -> None:
    # Without persistence mosquitto forgets retained messages when it restarts.
    b = Broker(tmp_path / "restart")
    prefix = "t/state-restart"
    with b:
        async with running(new_sink(b.port, prefix)) as sink:
            sink.deliver(DeviceStateEvent("window-1", "present"))
            sink.deliver(DeviceStateEvent("window-2", "error", "EIO"))
            await eventually(lambda: sink.status()["published"] >= 2, what="states published")
            published = sink.status()["published"]
            b.stop()
            await eventually(lambda: sink.status()["state"] != "connected", what="sink notices the broker is gone")
            b.start()
            # Both states again (a subscriber arriving before that would get them live, unretained).
            await eventually(lambda: sink.status()["published"] >= published + 2, timeout=15, what="states re-published")
            async with subscriber(b.port, f"{prefix}/device/+/state") as late:
                messages = [await late.get(timeout=10), await late.get(timeout=10)]
    assert all(m.retain for m in messages)
    got = {str(m.topic): payload(m) for m in messages}
    assert got == {
        f"{prefix}/device/window-1/state": {"type": "device", "device": "window-1", "state": "present"},
        f"{prefix}/device/window-2/state": {"type": "device", "device": "window-2", "state": "error", "reason": "EIO"},
    }


async def test_device_state_moves_to_the_sink_a_reload_makes(broker: Broker) -> None:
    # A reload that changes [mqtt] (here the prefix) builds a new sink: the dashboards on the
    # new topics must see the current state of every device, not only of devices that change.
    old = new_sink(broker.port, "t/reload-old")
    await old.start()
    old.deliver(DeviceStateEvent("kiosk-1", "present"))
    old.deliver(make_scan("01RELOADSTATE0000000000001"))
    await eventually(lambda: old.status()["published"] >= 2, what="old sink published")
    new = new_sink(broker.port, "t/reload-new")
    await new.start()
    waiting = old.take_pending()
    # The scan the old sink already published is not among what moves: never twice.
    assert waiting == [DeviceStateEvent("kiosk-1", "present")]
    await old.stop()
    new.adopt_pending(waiting)
    try:
        await eventually(lambda: new.status()["published"] >= 1, timeout=10, what="the new sink publishing the state")
        async with subscriber(broker.port, "t/reload-new/device/+/state") as late:
            m = await late.get(timeout=10)
        assert m.retain is True
        assert payload(m) == {"type": "device", "device": "kiosk-1", "state": "present"}
    finally:
        await new.stop()


async def test_newer_state_wins_and_each_device_is_published_once_per_connect(broker: Broker) -> None:
    prefix = "t/state-latest"
    async with subscriber(broker.port, f"{prefix}/device/+/state") as sub:
        sink = new_sink(broker.port, prefix)
        sink.deliver(DeviceStateEvent("window-1", "present"))
        sink.deliver(DeviceStateEvent("window-1", "absent", "unplugged"))  # before connecting
        async with running(sink):
            m = await sub.get(timeout=10)
            assert payload(m)["state"] == "absent"
            with pytest.raises(AssertionError):
                await sub.get(timeout=0.5)  # the superseded `present` is never sent


async def test_stop_with_a_stalled_broker_keeps_within_its_budget(tmp_path: Path) -> None:
    """A broker that accepts TCP and never answers: stop() used to wait drain + 2 × op timeout
    (23 s by default, more than systemd's TimeoutStopSec); it now cancels at its budget."""
    held: list[asyncio.StreamWriter] = []

    async def stall(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)
        await asyncio.sleep(120)

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = MqttConfig(host="127.0.0.1", port=port, topic_prefix="t/stall", keepalive_s=60)
    # A 60 s CONNACK wait would make the old stop() take 121 s; the budget here is 1 s.
    sink = MqttSink(cfg, hostname="testhost", metrics=Metrics(), op_timeout_s=60.0, stop_budget_s=1.0)
    await sink.start()
    sink.deliver(make_scan("01STALLED00000000000000001"))
    try:
        await eventually(lambda: len(held) >= 1, timeout=10, what="a connect attempt")
        t0 = time.monotonic()
        await sink.stop()
        took = time.monotonic() - t0
    finally:
        for w in held:
            w.close()
        server.close()
        for t in asyncio.all_tasks():
            if t.get_coro().__qualname__.endswith("stall"):  # type: ignore[union-attr]
                t.cancel()
    assert took < 30, took  # loose: far below the 121 s an unbudgeted stop takes
    assert sink.status()["dropped"] == 1  # the queued scan is counted, not silently lost


def _timeout_stop_s(unit: str) -> float:
    for line in unit.splitlines():
        if line.strip().startswith("TimeoutStopSec="):
            value = line.split("=", 1)[1].strip()
            assert value.endswith("s") and value[:-1].isdigit(), f"TimeoutStopSec={value}: expected whole seconds like 15s"
            return float(value[:-1])
    raise AssertionError("systemd/scannerd.service has no TimeoutStopSec=")


def test_unit_timeout_stop_leaves_room_for_the_mqtt_stop_budget() -> None:
    from scannerd.sinks.mqtt import SHUTDOWN_REST_S

    timeout = _timeout_stop_s((REPO / "systemd" / "scannerd.service").read_text())
    # The MQTT sink's stop plus the rest of the shutdown (sources, socket, metrics) must end
    # before systemd's SIGKILL, or the `offline` status and the undelivered counts are lost.
    assert STOP_BUDGET_S + SHUTDOWN_REST_S <= timeout, (STOP_BUDGET_S, SHUTDOWN_REST_S, timeout)


async def test_online_is_published_only_after_the_cmd_subscription(broker: Broker) -> None:
    """A client that sends a command as soon as it sees `online` must be heard: the broker's log
    shows our SUBSCRIBE to <prefix>/cmd before our PUBLISH of `online`."""
    prefix = "t/online-order"

    async def on_command(req: dict[str, Any]) -> dict[str, Any]:
        return {"type": "reply", "cmd": req["cmd"], "ok": True}

    sink = new_sink(broker.port, prefix, on_command=on_command, client_id="order-check")
    async with running(sink):
        await eventually(lambda: sink.status()["state"] == "connected", what="connected")

        def order() -> tuple[int, int] | None:
            lines = broker.log_file.read_text(errors="replace").splitlines()
            sub = next((i for i, line in enumerate(lines) if "Received SUBSCRIBE from order-check" in line), None)
            online = next((i for i, line in enumerate(lines)
                           if "Received PUBLISH from order-check" in line and f"'{prefix}/status'" in line), None)
            return None if sub is None or online is None else (sub, online)

        await eventually(lambda: order() is not None, what="both in the broker's log")
        sub_at, online_at = order()  # type: ignore[misc]
        assert sub_at < online_at, "online was published before the cmd subscription"
