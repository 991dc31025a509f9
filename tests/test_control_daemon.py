"""The kiosk flow through the real daemon: `scannerd run` with a simulated Newland scan box on a
pty, commands over the Unix socket and over MQTT `…/cmd`."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scannerd.control.simulated import SimulatedNewlandBox

from helpers import REPO, Client, Daemon, wait_for, wechat_code
from mqtt_broker import Broker
from test_mqtt import broker, payload, pki, subscriber  # noqa: F401 - the session broker fixtures

PROMPT = "请出示医保码或付款码"
PREFIX = "his/ward-a/kiosk-7"


def connect(sock: Path, **kw: Any) -> Client:
    """A client once the daemon listens. (wait_ready sees the socket file appear at bind(),
    a moment before listen(): a connect in that moment is refused.)"""

    def attempt() -> Client | None:
        try:
            return Client(sock, **kw)
        except ConnectionRefusedError:
            return None

    client: Client = wait_for(attempt)
    return client


def write_config(tmp_path: Path, box: SimulatedNewlandBox, extra: str = "") -> tuple[Path, Path]:
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[socket]
path = "{sock}"
[control]
kiosk_voice = "{PROMPT}"
recover_interval_s = 0.2
{extra}
[[scanner]]
name = "kiosk-7"
path = "{box.link}"
role = "kiosk"
terminator = "CRLF"
control = "newland-box"
""",
        encoding="utf-8",
    )
    return config, sock


@pytest.fixture
def kiosk(tmp_path: Path) -> Iterator[tuple[Daemon, SimulatedNewlandBox, Client]]:
    box = SimulatedNewlandBox(tmp_path / "box-by-id")
    config, sock = write_config(tmp_path, box)
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        client = connect(sock)
        client.wait_present()
        box.release_slave()
        # Opened: the kiosk's box is switched off until the payment page arms it.
        wait_for(lambda: box.snapshot()[0] and not box.snapshot()[1].switched_on)
        yield daemon, box, client
        client.close()
    finally:
        daemon.stop()
        box.close()


def no_control_bytes(event: dict[str, Any]) -> None:
    text = event.get("code", "") + event.get("masked", "")
    assert not any(c in text for c in "\x06\x15\x05\x02\x03") and "<STX>" not in text, event


def test_kiosk_flow_over_the_socket(kiosk: tuple[Daemon, SimulatedNewlandBox, Client]) -> None:
    daemon, box, client = kiosk
    answer = client.command({"cmd": "arm", "device": "kiosk-7", "ttl_s": 60, "amount_fen": 1250})
    assert answer["ok"] and answer["scanner"] == "confirmed", answer
    commands, state = box.snapshot()
    arm = commands[-1]
    assert arm.status == "00" and arm.values("SWITCH") == [b"ON"] and arm.values("AMOUNT") == [b"12.50"]
    assert arm.values("VOICE") == [PROMPT.encode("gbk")]  # the kiosk role's prompt from [control]
    assert state.switched_on and state.amount == "12.50" and state.spoken == [PROMPT]

    framed, plain = wechat_code(), wechat_code()
    box.scan_framed(framed)
    first = client.next_of("scan", "reject")
    box.scan_plain(plain)
    second = client.next_of("scan", "reject")
    assert (first["type"], first["code"]) == ("scan", framed) and (second["type"], second["code"]) == ("scan", plain)
    with pytest.raises(TimeoutError):  # exactly once each, and no reject from a reply frame
        extra = client.next_of("scan", "reject", timeout=0.5)
        raise AssertionError(extra)
    no_control_bytes(first)
    no_control_bytes(second)
    # Each scan was answered with the box's good light.
    wait_for(lambda: box.snapshot()[1].leds == ["ON_G", "ON_G"])

    answer = client.command({"cmd": "disarm", "device": "kiosk-7"})
    assert answer["ok"] and answer["scanner"] == "confirmed"
    state = box.snapshot()[1]
    assert not state.switched_on and state.amount is None

    answer = client.command({"cmd": "display", "device": "kiosk-7", "amount_fen": 300, "voice": "请扫码"})
    assert answer["ok"] and answer["scanner"] == "confirmed"
    state = box.snapshot()[1]
    assert state.amount == "3.00" and state.spoken[-1] == "请扫码" and not state.switched_on
    status = client.command({"cmd": "status"})
    assert status["control"] == {"kiosk-7": {"profile": "newland-box", "state": "ok", "armed": False}}
    assert framed not in daemon.log() and plain not in daemon.log()


def test_bad_parameters_are_refused_and_nothing_is_armed(kiosk: tuple[Daemon, SimulatedNewlandBox, Client]) -> None:
    _, box, client = kiosk
    before = bytes(box.received)
    answer = client.command({"cmd": "arm", "device": "kiosk-7", "amount_fen": 1_000_000})
    assert not answer["ok"] and "amount_fen: expected 0 to 999999" in answer["error"]
    answer = client.command({"cmd": "arm", "device": "kiosk-7", "voice": "请" * 60})
    assert not answer["ok"] and "voice: expected at most 100 bytes in gbk" in answer["error"]
    answer = client.command({"cmd": "display", "device": "kiosk-7"})
    assert not answer["ok"] and "amount_and/or" not in answer["error"] and "display needs" in answer["error"]
    assert bytes(box.received) == before
    assert client.command({"cmd": "status"})["armed"]["kiosk-7"] == {"armed": False}


def test_ttl_switches_the_box_off(kiosk: tuple[Daemon, SimulatedNewlandBox, Client]) -> None:
    _, box, client = kiosk
    answer = client.command({"cmd": "arm", "device": "kiosk-7", "ttl_s": 0.5, "amount_fen": 2000})
    assert answer["scanner"] == "confirmed" and box.snapshot()[1].switched_on
    wait_for(lambda: not box.snapshot()[1].switched_on)
    commands, state = box.snapshot()
    assert commands[-1].values("SWITCH") == [b"OFF"] and commands[-1].values("AMOUNT") == [b"OFF"] and state.amount is None
    # After the TTL a read is refused by the daemon too (the box would not read: a stray frame).
    box.scan_framed(wechat_code())
    assert client.next_of("scan", "reject")["reason"] == "not_armed"


def test_box_that_stops_answering_is_error_then_present(kiosk: tuple[Daemon, SimulatedNewlandBox, Client]) -> None:
    _, box, client = kiosk
    box.answering = False
    answer = client.command({"cmd": "arm", "device": "kiosk-7", "amount_fen": 1250})
    assert answer["ok"] and answer["scanner"] == "unanswered" and answer["scanner_reason"] == "control_unanswered"
    state = client.next_of("device")
    assert (state["state"], state["reason"]) == ("error", "control_unanswered")
    # Still armed in software: a scan the box sends anyway is delivered.
    code = wechat_code()
    box.scan_plain(code)
    assert client.next_of("scan")["code"] == code
    box.answering = True
    back = client.next_of("device")
    assert back["state"] == "present"
    assert box.snapshot()[1].switched_on  # recovery reasserted the armed state
    # No good/bad light was queued for a box that was not answering.
    assert not any(c.values("LED") for c in box.snapshot()[0])
    assert client.command({"cmd": "status"})["control"]["kiosk-7"]["state"] == "ok"


def test_an_uncontrolled_scanner_says_not_controllable(tmp_path: Path) -> None:
    box = SimulatedNewlandBox(tmp_path / "box")
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[[scanner]]\nname = "k"\npath = "{box.link}"\nrole = "kiosk"\n')
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        client = connect(sock)
        client.wait_present()
        answer = client.command({"cmd": "arm", "device": "k", "amount_fen": 100})
        assert answer["ok"] and answer["scanner"] == "not_controllable"
        assert client.command({"cmd": "display", "device": "k", "voice": "x"})["scanner"] == "not_controllable"
        assert bytes(box.received) == b""  # never written to
        client.close()
    finally:
        daemon.stop()
        box.close()


async def test_kiosk_flow_over_mqtt_cmd(broker: Broker, tmp_path: Path) -> None:  # noqa: F811
    box = SimulatedNewlandBox(tmp_path / "box")
    config, sock = write_config(tmp_path, box, extra="")
    config.write_text(config.read_text(encoding="utf-8") + f'\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntopic_prefix = "{PREFIX}"\n', encoding="utf-8")
    async with subscriber(broker.port, f"{PREFIX}/#") as sub:
        daemon = Daemon(config, sock)
        try:
            await asyncio.to_thread(daemon.wait_ready)
            assert (await sub.get_on(f"{PREFIX}/status", timeout=10)).payload == b"online"
            client = await asyncio.to_thread(connect, sock, role=None)
            await asyncio.to_thread(client.wait_present)
            box.release_slave()
            await sub.client.publish(f"{PREFIX}/cmd", b'{"cmd":"arm","device":"kiosk-7","ttl_s":30,"amount_fen":1250,"req":"pay-1"}', qos=1)
            answer = payload(await sub.get_on(f"{PREFIX}/cmd/reply", timeout=10))
            assert answer["ok"] and answer["req"] == "pay-1" and answer["scanner"] == "confirmed", answer
            state = box.snapshot()[1]
            assert state.switched_on and state.amount == "12.50" and state.spoken == [PROMPT]
            code = wechat_code()
            await asyncio.to_thread(box.scan_framed, code)
            event = payload(await sub.get_on(f"{PREFIX}/scan/kiosk-7", timeout=10))
            assert event["code"] == code
            await sub.client.publish(f"{PREFIX}/cmd", b'{"cmd":"display","device":"kiosk-7","voice":"\\u652f\\u4ed8\\u6210\\u529f"}', qos=1)
            answer = payload(await sub.get_on(f"{PREFIX}/cmd/reply", timeout=10))
            assert answer["ok"] and answer["scanner"] == "confirmed" and box.snapshot()[1].spoken[-1] == "支付成功"
            await sub.client.publish(f"{PREFIX}/cmd", b'{"cmd":"disarm","device":"kiosk-7"}', qos=1)
            answer = payload(await sub.get_on(f"{PREFIX}/cmd/reply", timeout=10))
            assert answer["ok"] and answer["scanner"] == "confirmed" and not box.snapshot()[1].switched_on
            client.close()
        finally:
            daemon.stop()
            box.close()
    assert code not in daemon.log()


def test_simulate_box_newland_shows_the_kiosk_flow(tmp_path: Path) -> None:
    """`scannerd simulate --box newland --with-daemon`: the same simulated box, a real daemon,
    and a demo HIS arming with an amount, taking one scan, disarming."""
    out = subprocess.run(
        [sys.executable, "-m", "scannerd", "simulate", "--box", "newland", "--with-daemon", "--count", "2",
         "--interval", "0.3", "--seed", "7", "--dir", str(tmp_path)],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if not line.startswith("{")]
    text = "\n".join(lines)
    assert "box received SET AMOUNT=OFF, SWITCH=OFF" in text  # switched off on open
    assert "HIS: arm ¥" in text and "scanner=confirmed" in text
    assert f"VOICE={PROMPT}" in text and "SWITCH=ON" in text
    assert "as a DATA= frame" in text and "as code + CR LF" in text
    assert "HIS: took scan wechat payment" in text  # the demo HIS is subscribed and takes it
    assert "HIS: disarm → ok=True scanner=confirmed" in text


def test_reload_applies_a_new_prompt_and_keeps_the_armed_box(kiosk: tuple[Daemon, SimulatedNewlandBox, Client]) -> None:
    daemon, box, client = kiosk
    assert client.command({"cmd": "arm", "device": "kiosk-7", "amount_fen": 100})["scanner"] == "confirmed"
    opened = len(box.snapshot()[0])
    config = daemon.config
    config.write_text(config.read_text(encoding="utf-8").replace(PROMPT, "请扫描医保码"), encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: any(e.get("event") == "reloaded" for e in daemon.log_events()))
    # The scanner's entry did not change: same source, same controller, still armed, no re-open.
    assert len(box.snapshot()[0]) == opened and box.snapshot()[1].switched_on
    assert client.command({"cmd": "arm", "device": "kiosk-7"})["scanner"] == "confirmed"
    assert box.snapshot()[1].spoken[-1] == "请扫描医保码"
    # Without its control key the scanner is no longer written to.
    config.write_text(config.read_text(encoding="utf-8").replace('control = "newland-box"\n', ""), encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: [e.get("event") for e in daemon.log_events()].count("reloaded") == 2)
    client.wait_present()
    before = len(box.snapshot()[0])
    assert client.command({"cmd": "arm", "device": "kiosk-7", "amount_fen": 100})["scanner"] == "not_controllable"
    assert client.command({"cmd": "status"})["control"] == {}
    assert len(box.snapshot()[0]) == before
