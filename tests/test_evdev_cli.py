"""`scannerd test`: the live view a technician uses, driven through the real source over a fake device."""

from __future__ import annotations

import argparse
import asyncio

import pytest
from test_evdev_source import FakeInputDevice, fixture_events

from scannerd.commands.test import _test, timing_line
from scannerd.config import Config, ScannerConfig
from scannerd.model import Frame


def args(**kw: object) -> argparse.Namespace:
    base = {"show": False, "count": 0, "timeout": 0.0}
    base.update(kw)
    return argparse.Namespace(**base)


async def run_test(scanner: ScannerConfig, fixtures: list[str], **kw: object) -> tuple[int, FakeInputDevice]:
    dev = FakeInputDevice()

    async def feed() -> None:
        await asyncio.sleep(0.05)
        for name in fixtures:
            events = fixture_events(name)
            dev.push(events)
            # Let the fixture's own duration pass: kernel times never go backwards.
            await asyncio.sleep(0.05 + (events[-1][0] - events[0][0]) / 1e9)

    feeder = asyncio.create_task(feed())
    rc = await _test(Config(), scanner, args(**kw), opener=lambda _p: dev)
    feeder.cancel()
    return rc, dev


SCANNER = ScannerConfig(name="w1", transport="evdev", path="/dev/input/event5")


async def test_shows_classified_masked_scans_with_timing(capsys: pytest.CaptureFixture[str]) -> None:
    rc, dev = await run_test(SCANNER, ["us_digits_enter.jsonl"], count=1)
    out = capsys.readouterr().out
    assert rc == 0 and dev.calls == ["grab", "ungrab", "close"]
    assert "open, grabbed, layout us" in out
    assert "wechat/payment (rule wechat.v1)" in out and "'1345**********6789'" in out
    assert "134567890123456789" not in out
    assert "18 chars, 136.0 ms, 125 chars/s, max gap 8.0 ms, ended by terminator" in out
    assert "!" not in out.split("ended by terminator")[1].split("read(s)")[0]  # a clean scan: no warnings


async def test_show_prints_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    await run_test(SCANNER, ["us_digits_enter.jsonl"], count=1, show=True)
    assert "'134567890123456789'" in capsys.readouterr().out


async def test_suggests_the_layout_the_scanner_is_set_to(capsys: pytest.CaptureFixture[str]) -> None:
    await run_test(SCANNER, ["fr_layout.jsonl"], count=1)  # a French-set scanner read as US
    out = capsys.readouterr().out
    assert 'set layout = "fr"' in out
    assert "134567890123456789" not in out  # the re-decoded code in the hint is masked too


async def test_warns_about_missing_terminator_and_numlock(capsys: pytest.CaptureFixture[str]) -> None:
    await run_test(SCANNER, ["keypad_numlock_off.jsonl", "cut_mid_scan.jsonl"], count=2)
    out = capsys.readouterr().out
    assert "switched NumLock off" in out
    assert "no terminator" in out


async def test_unplug_ends_with_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    dev = FakeInputDevice()

    async def unplug() -> None:
        await asyncio.sleep(0.05)
        dev.push(fixture_events("cut_mid_scan.jsonl"))
        await asyncio.sleep(0.01)
        dev.unplug()

    task = asyncio.create_task(unplug())
    rc = await _test(Config(), ScannerConfig(name="w1", transport="evdev", path="/x", idle_gap_ms=5000), args(),
                     opener=lambda _p: dev)
    await task
    out = capsys.readouterr().out
    assert rc == 1
    assert "reject: device_removed" in out and "absent device_removed" in out


async def test_shared_keyboard_shows_human_bursts_as_not_emitted(capsys: pytest.CaptureFixture[str]) -> None:
    shared = ScannerConfig(name="kbd", transport="evdev", path="/x", shared_keyboard=True, idle_gap_ms=1000)
    rc, dev = await run_test(shared, ["human_typing.jsonl"], count=1)
    out = capsys.readouterr().out
    assert "grab" not in dev.calls and "NOT grabbed" in out
    assert "looks human" in out


def test_timing_line_without_gaps() -> None:
    f = Frame("d", "1", None, 5, 5, 5, (), "idle")
    assert timing_line(f) == "1 chars, 0.0 ms, - chars/s, max gap -, ended by idle"


async def test_busy_device_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    dev = FakeInputDevice()
    dev.fail_grab = OSError(errno.EBUSY, "Device or resource busy")
    rc = await _test(Config(), SCANNER, args(), opener=lambda _p: dev)
    out = capsys.readouterr().out
    assert rc == 1 and "is the scannerd service running?" in out


@pytest.mark.parametrize(("fixture", "terminator"), [("us_digits_enter.jsonl", "CR"), ("lf_terminator.jsonl", "LF"),
                                                     ("tab_terminator.jsonl", "TAB")])
async def test_reports_what_the_scanner_sends_and_the_entry_to_paste(
    capsys: pytest.CaptureFixture[str], fixture: str, terminator: str
) -> None:
    rc, _dev = await run_test(SCANNER, [fixture], count=1)
    out = capsys.readouterr().out
    assert rc == 0
    summary = out.split("what this scanner sends:", 1)[1]
    assert f"terminator: {terminator} ({terminator} 1; of 1 read(s))" in summary
    assert "layout: us" in summary and "keystroke delay: median" in summary
    assert "AIM prefix: none" in summary
    paste = summary.split("paste into the config", 1)[1]
    assert 'transport = "evdev"' in paste and 'path = "/dev/input/event5"' in paste
    assert f'terminator = "{terminator}"' in paste and "aim = false" in paste


async def test_the_entry_to_paste_carries_the_layout_the_keys_read_as(capsys: pytest.CaptureFixture[str]) -> None:
    await run_test(SCANNER, ["fr_layout.jsonl"], count=1)  # a French-set scanner read as US
    out = capsys.readouterr().out
    assert "layout: fr" in out.split("what this scanner sends:", 1)[1]
    assert 'layout = "fr"' in out.split("paste into the config", 1)[1]


async def test_a_slow_keystroke_delay_gets_a_wider_idle_gap_in_the_entry(capsys: pytest.CaptureFixture[str]) -> None:
    slow = ScannerConfig(name="w1", transport="evdev", path="/x", idle_gap_ms=10)  # the fixture's 8 ms gaps are close
    await run_test(slow, ["us_digits_enter.jsonl"], count=1)
    paste = capsys.readouterr().out.split("paste into the config", 1)[1]
    assert "idle_gap_ms = 26" in paste  # twice the largest gap seen, plus a margin
