"""A controller and a real SerialSource driving simulated devices on real ptys: the Newland scan
box (frames with length and LRC, reply frames, DATA= scans and code+CRLF scans) and a
Honeywell-style engine (ACK / ENQ / NAK echoes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scannerd.config import ScannerConfig
from scannerd.control.controller import (
    CONFIRMED,
    NOT_CONTROLLABLE,
    REFUSED,
    UNANSWERED,
    DeviceController,
)
from scannerd.control.params import ControlParamError
from scannerd.control.profile import Profile, builtin_profiles, site_profiles
from scannerd.control.simulated import (
    SimulatedDevice,
    SimulatedHoneywellEngine,
    SimulatedNewlandBox,
)
from scannerd.framing import FramingSpec
from scannerd.model import DeviceInfo, DeviceStateEvent, Frame, Rejected
from scannerd.sources.serial import SerialSource

from helpers import alipay_code, wechat_code

PROFILES = builtin_profiles()
PROMPT = "请出示付款码"


async def until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Rig:
    def __init__(self, device: SimulatedDevice, profile: Profile, terminator: str, **controller: Any) -> None:
        self.device = device
        self.items: list[Frame | Rejected] = []
        self.source_states: list[DeviceStateEvent] = []
        self.control_states: list[tuple[str, str]] = []
        spec = FramingSpec(terminator=terminator)
        self.controller = DeviceController(
            "k1", profile, spec, self.items.append,
            on_state=lambda s, r: self.control_states.append((s, r)), **controller,
        )
        cfg = ScannerConfig(name="k1", path=str(device.link))
        info = DeviceInfo("k1", "serial", "outpatient", "kiosk", str(device.link))
        self.source = SerialSource(info, spec, self.items.append, self.source_states.append, cfg, control=self.controller.channel)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.source.run())
        await until(lambda: self.source.present, "the port to open")
        self.device.release_slave()

    async def stop(self) -> None:
        assert self.task is not None
        await self.controller.close()
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        self.device.close()

    def frames(self) -> list[Frame]:
        return [i for i in self.items if isinstance(i, Frame)]

    def assert_no_control_bytes(self) -> None:
        for item in self.items:
            text = item.text
            assert not any(c in text for c in "\x06\x15\x05\x02\x03"), item
            if isinstance(item, Frame) or item.reason not in {"control_frame_bad_lrc", "control_frame_bad_length"}:
                assert "<STX>" not in text and "<ETX>" not in text, item


async def box_rig(tmp_path: Path, **controller: Any) -> tuple[Rig, SimulatedNewlandBox]:
    box = SimulatedNewlandBox(tmp_path / "box")
    rig = Rig(box, PROFILES["newland-box"], "\r\n", **controller)
    await rig.start()
    return rig, box


def last_tags(box: SimulatedNewlandBox) -> list[tuple[str, bytes]]:
    commands, _ = box.snapshot()
    return list(commands[-1].tags)


async def test_kiosk_box_is_switched_off_on_open_and_kiosk_flow_works(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path, recover_interval_s=0.2)
    # Opened: a kiosk's box must not read before the payment page arms it.
    await until(lambda: len(box.snapshot()[0]) >= 1, "the open-time switch-off")
    commands, state = box.snapshot()
    assert commands[0].status == "00" and ("SWITCH", b"OFF") in commands[0].tags and ("AMOUNT", b"OFF") in commands[0].tags
    assert not state.switched_on

    result = await rig.controller.arm(1250, PROMPT)
    assert result.scanner == CONFIRMED and result.as_reply() == {"scanner": "confirmed"}
    commands, state = box.snapshot()
    arm = commands[-1]
    assert arm.status == "00"  # the box checked LLLL and the LRC
    assert arm.values("SWITCH") == [b"ON"] and arm.values("AMOUNT") == [b"12.50"]
    assert arm.values("VOICE") == [PROMPT.encode("gbk")]
    assert state.switched_on and state.amount == "12.50" and state.spoken == [PROMPT]

    # One scan as a DATA= frame, one as code + CRLF: each reaches the framer once.
    framed, plain = wechat_code(), alipay_code()
    await asyncio.to_thread(box.scan_framed, framed)
    await asyncio.to_thread(box.scan_plain, plain)
    await until(lambda: len(rig.frames()) >= 2, "both scans")
    await asyncio.sleep(0.2)  # anything extra (a duplicate, a stray reply) would show by now
    assert [f.text for f in rig.frames()] == [framed, plain]
    assert [i for i in rig.items if isinstance(i, Rejected)] == []
    rig.assert_no_control_bytes()

    result = await rig.controller.disarm()
    assert result.scanner == CONFIRMED
    commands, state = box.snapshot()
    assert commands[-1].values("SWITCH") == [b"OFF"] and commands[-1].values("AMOUNT") == [b"OFF"]
    assert not state.switched_on and state.amount is None
    assert rig.control_states == []
    await rig.stop()


async def test_ttl_switches_the_box_off(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path)
    result = await rig.controller.arm(800, None, ttl_s=0.3)
    assert result.scanner == CONFIRMED and box.snapshot()[1].switched_on
    await until(lambda: not box.snapshot()[1].switched_on, "the TTL to switch the box off")
    commands, state = box.snapshot()
    assert commands[-1].values("SWITCH") == [b"OFF"] and commands[-1].values("AMOUNT") == [b"OFF"] and state.amount is None
    assert not rig.controller.armed
    await rig.stop()


async def test_disarm_before_ttl_cancels_it(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path)
    await rig.controller.arm(None, None, ttl_s=0.3)
    await rig.controller.disarm()
    await rig.controller.arm(None, None)  # armed again, no TTL: the old timer must not fire
    await asyncio.sleep(0.6)
    assert box.snapshot()[1].switched_on and rig.controller.armed
    await rig.stop()


async def test_role_default_prompt_and_display_without_switching(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path, default_voice="请出示医保码或付款码")
    await rig.controller.arm()
    assert box.snapshot()[1].spoken == ["请出示医保码或付款码"]
    await rig.controller.arm(voice="")  # "" : no prompt this time
    assert box.snapshot()[1].spoken == ["请出示医保码或付款码"]
    result = await rig.controller.display(amount_fen=99_999_9, voice="请扫码")
    assert result.scanner == CONFIRMED
    tags = dict(last_tags(box))
    assert "SWITCH" not in tags and tags["AMOUNT"] == b"9999.99" and box.snapshot()[1].spoken[-1] == "请扫码"
    await rig.stop()


async def test_good_and_bad_feedback_light_the_box(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path)
    assert (await rig.controller.feedback(True)).scanner == CONFIRMED
    assert (await rig.controller.feedback(False)).scanner == CONFIRMED
    assert box.snapshot()[1].leds == ["ON_G", "ON_R"]
    await rig.stop()


async def test_bad_parameters_send_nothing(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path)
    await until(lambda: len(box.snapshot()[0]) >= 1, "the open-time switch-off")
    before = bytes(box.received)
    with pytest.raises(ControlParamError, match="amount_fen"):
        await rig.controller.arm("12.50", PROMPT)  # type: ignore[arg-type]
    with pytest.raises(ControlParamError, match="voice"):
        await rig.controller.arm(1250, "\x16M\rTRGMOD3.")
    with pytest.raises(ControlParamError, match="voice"):
        await rig.controller.display(voice="<ETX><00>")
    await asyncio.sleep(0.1)
    assert bytes(box.received) == before
    await rig.stop()


async def test_a_box_that_stops_answering_goes_error_and_recovers(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path, recover_interval_s=0.1)
    await until(lambda: len(box.snapshot()[0]) >= 1, "the open-time switch-off")
    box.answering = False
    result = await rig.controller.arm(1250, PROMPT)
    assert result.scanner == UNANSWERED and result.reason == "control_unanswered"
    assert rig.control_states == [("error", "control_unanswered")] and rig.controller.state == "error"
    # A scan still comes through while the controller is waiting.
    code = wechat_code()
    await asyncio.to_thread(box.scan_plain, code)
    await until(lambda: rig.frames(), "the scan")
    box.answering = True
    await until(lambda: rig.control_states[-1:] == [("present", "")], "recovery")
    # Recovery reasserted the state the device should be in: armed, so reading.
    assert box.snapshot()[1].switched_on and rig.controller.state == "ok"
    assert (await rig.controller.disarm()).scanner == CONFIRMED
    assert [f.text for f in rig.frames()] == [code]
    rig.assert_no_control_bytes()
    await rig.stop()


async def test_garbage_frame_from_the_box_is_a_reject_not_a_scan(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path)
    frame = b"<STX><0032><SET><02><07><00><DATA=134567890123456789><ETX><00>"  # wrong LRC
    await asyncio.to_thread(box.write, frame)
    await until(lambda: rig.items, "the reject")
    [reject] = rig.items
    assert isinstance(reject, Rejected) and reject.reason == "control_frame_bad_lrc"
    rig.assert_no_control_bytes()
    await rig.stop()


async def test_box_replug_gets_the_state_again(tmp_path: Path) -> None:
    rig, box = await box_rig(tmp_path)
    await rig.controller.arm(1250)
    box.close()  # unplugged
    await until(lambda: not rig.source.present, "absent")
    result = await rig.controller.arm(1250)
    assert result.scanner == UNANSWERED and result.reason == "device_absent"
    assert rig.control_states == []  # absence is the source's state, not a control error
    box2 = SimulatedNewlandBox(tmp_path / "box")  # back, on a new pty behind the same link
    rig.device = box2
    await until(lambda: rig.source.present, "present again", timeout=15)
    box2.release_slave()
    await until(lambda: box2.snapshot()[1].switched_on, "the armed state reasserted")
    await rig.stop()


# --- Honeywell-style engine -------------------------------------------------------------------


async def engine_rig(tmp_path: Path, profile: Profile | None = None, **controller: Any) -> tuple[Rig, SimulatedHoneywellEngine]:
    engine = SimulatedHoneywellEngine(tmp_path / "engine")
    rig = Rig(engine, profile or PROFILES["honeywell"], "\r", **controller)
    await rig.start()
    return rig, engine


async def test_honeywell_engine_locks_setup_codes_and_switches_presentation_mode(tmp_path: Path) -> None:
    rig, engine = await engine_rig(tmp_path, lock_setup_codes=True)
    await until(lambda: len(engine.snapshot().commands) >= 2, "lock + switch-off on open")
    s = engine.snapshot()
    assert s.commands[:2] == ["MNUENA0!", "TRGMOD0!"] and not s.menu_codes and s.trigger_mode == "0"
    result = await rig.controller.arm(1250, PROMPT)
    # The engine has no display and no voice: it reads, the rest is reported as ignored.
    assert result.scanner == CONFIRMED and result.ignored == ("amount_fen", "voice")
    assert engine.snapshot().trigger_mode == "3"
    code = wechat_code()
    await asyncio.to_thread(engine.scan, code)
    await until(lambda: rig.frames(), "the scan")
    assert (await rig.controller.disarm()).scanner == CONFIRMED
    s = engine.snapshot()
    assert s.trigger_mode == "0" and s.permanent_writes == 0
    assert [f.text for f in rig.frames()] == [code] and not [i for i in rig.items if isinstance(i, Rejected)]
    rig.assert_no_control_bytes()
    assert (await rig.controller.feedback(True)).scanner == NOT_CONTROLLABLE
    assert (await rig.controller.display(amount_fen=100)).scanner == NOT_CONTROLLABLE
    await rig.stop()


async def test_honeywell_nak_is_refused(tmp_path: Path) -> None:
    variant = site_profiles([{"name": "hw-odd", "base": "honeywell", "verbs": {"enable": ["MNUENA2"]}}], "c.toml", PROFILES)["hw-odd"]
    rig, engine = await engine_rig(tmp_path, variant)
    result = await rig.controller.arm()
    assert result.scanner == REFUSED and "nak" in result.reason
    assert rig.controller.state == "ok"  # it answered: not an unanswered device
    assert engine.snapshot().commands[-1] == "MNUENA2!" and engine.snapshot().menu_codes
    rig.assert_no_control_bytes()
    await rig.stop()


async def test_honeywell_scans_during_commands_arrive_once(tmp_path: Path) -> None:
    rig, engine = await engine_rig(tmp_path)
    codes = [wechat_code() for _ in range(5)]

    async def scans() -> None:
        for code in codes:
            await asyncio.to_thread(engine.scan, code)

    async def commands() -> None:
        for _ in range(5):
            await rig.controller.arm()
            await rig.controller.disarm()

    await asyncio.gather(scans(), commands())
    await until(lambda: len(rig.frames()) >= 5, "all scans")
    await asyncio.sleep(0.2)
    assert [f.text for f in rig.frames()] == codes
    assert [i for i in rig.items if isinstance(i, Rejected)] == []
    rig.assert_no_control_bytes()
    await rig.stop()


async def test_a_reply_that_stalls_midway_is_still_a_reply_not_a_reject(tmp_path: Path) -> None:
    """A USB-serial adapter or a loaded host can split a reply with a pause longer than the
    framer's idle gap: the echo must still be taken as the reply, never handed to the framer."""
    rig, engine = await engine_rig(tmp_path)
    await until(lambda: len(engine.snapshot().commands) >= 1, "the open-time switch-off")
    await until(lambda: not rig.controller.busy, "the open-time reply")
    engine.answering = False
    arm = asyncio.create_task(rig.controller.arm())
    await until(lambda: len(engine.snapshot().commands) >= 2, "the arm command")
    await asyncio.to_thread(engine.write, b"TRGMOD3")
    await asyncio.sleep(0.15)  # the stall (three times the 50 ms idle gap)
    await asyncio.to_thread(engine.write, b"\x06!")
    assert (await arm).scanner == CONFIRMED
    await asyncio.sleep(0.1)
    assert rig.items == []
    await rig.stop()
