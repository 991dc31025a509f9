"""scannerd-keys/1 recordings: format, record → replay round trip, and `scannerd replay`."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_evdev_source import FakeInputDevice, fixture_events

from scannerd.cli import main
from scannerd.commands.record import record
from scannerd.framing import FramingSpec
from scannerd.model import Frame
from scannerd.sources.recording import (
    FORMAT,
    RawEvent,
    RecordingError,
    event_line,
    parse_recording,
    replay,
    write_recording,
)

KEYS = Path(__file__).parent / "fixtures" / "keys"
ROOT = Path(__file__).resolve().parent.parent


def test_format_header_and_events_exactly_as_documented() -> None:
    buf = io.StringIO()
    write_recording(buf, {"name": "Honeywell 1900", "path": "/dev/input/event5"}, "us",
                    [(1764060000, 7, 1, 2, 1), (1764060000, 123456, 0, 0, 0)])
    lines = buf.getvalue().splitlines()
    assert json.loads(lines[0]) == {"format": "scannerd-keys/1", "device": {"name": "Honeywell 1900", "path": "/dev/input/event5"},
                                    "layout": "us"}
    assert lines[1] == '{"t":1764060000.000007,"type":1,"code":2,"value":1}'
    assert json.loads(lines[2]) == {"t": 1764060000.123456, "type": 0, "code": 0, "value": 0}


def test_parse_keeps_exact_microseconds_and_ignores_unknown_header_keys() -> None:
    rec = parse_recording([json.dumps({"format": FORMAT, "device": {}, "layout": "de", "comment": "x"}),
                           event_line(1764060000, 999999, 1, 30, 1), "", event_line(1764060001, 1, 1, 30, 0)])
    assert rec.layout == "de" and rec.extra == {"comment": "x"}
    assert rec.events == (RawEvent(1764060000_999999_000, 1, 30, 1), RawEvent(1764060001_000001_000, 1, 30, 0))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "empty file"),
        (['{"format":"scannerd-keys/2"}'], 'expected a header with "format":"scannerd-keys/1"'),
        (["not json"], ":1: not JSON"),
        ([f'{{"format":"{FORMAT}","layout":1}}'], "layout: expected a string"),
        ([f'{{"format":"{FORMAT}"}}', '{"t":1.5,"type":1,"code":2}'], ":2: missing key 'value'"),
        ([f'{{"format":"{FORMAT}"}}', '{"t":"1","type":1,"code":2,"value":1}'], ":2: expected a number t"),
        ([f'{{"format":"{FORMAT}"}}', "[1,2]"], ":2: expected a JSON object"),
    ],
)
def test_bad_recordings_name_the_line(lines: list[str], message: str) -> None:
    with pytest.raises(RecordingError, match=message.replace("[", r"\[")):
        parse_recording(lines, "site.jsonl")


async def test_record_then_replay_gives_the_same_scan() -> None:
    dev = FakeInputDevice()
    out = io.StringIO()
    out.write(json.dumps({"format": FORMAT, "device": {"name": "fake"}, "layout": "us"}) + "\n")
    stop = asyncio.Event()
    task = asyncio.create_task(record(dev, out, stop=stop))
    await asyncio.sleep(0.01)
    assert dev.grabbed
    dev.push(fixture_events("us_digits_enter.jsonl"))
    await asyncio.sleep(0.05)
    stop.set()
    stats = await asyncio.wait_for(task, 2)
    assert stats.events == len(fixture_events("us_digits_enter.jsonl")) and stats.presses == 19
    assert stats.ended == "stopped" and dev.calls == ["grab", "ungrab", "close"]
    (result,) = replay(parse_recording(out.getvalue().splitlines()), FramingSpec())
    assert isinstance(result.item, Frame) and result.item.text == "134567890123456789"
    assert result.item.gaps_ns == (8_000_000,) * 17  # kernel timing survives the file


async def test_record_ends_when_the_device_is_unplugged() -> None:
    dev = FakeInputDevice()
    out = io.StringIO()
    task = asyncio.create_task(record(dev, out))
    await asyncio.sleep(0.01)
    dev.unplug()
    stats = await asyncio.wait_for(task, 2)
    assert stats.ended.startswith("device gone")


def test_record_command_refuses_a_missing_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["record", str(tmp_path / "nope"), "-o", str(tmp_path / "x.jsonl")]) == 1
    assert "cannot open" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def replay_json(*args: str) -> list[dict[str, object]]:
    buf = io.StringIO()
    old = sys.stdout
    sys.stdout = buf
    try:
        assert main(["replay", *args, "--json"]) == 0
    finally:
        sys.stdout = old
    return [json.loads(ln) for ln in buf.getvalue().splitlines()]


def test_replay_json_is_masked_by_default_and_full_with_show() -> None:
    (row,) = replay_json(str(KEYS / "us_digits_enter.jsonl"))
    assert row["type"] == "scan" and row["text"] == "1345**********6789"
    assert (row["channel"], row["kind"], row["reason"]) == ("wechat", "payment", None)
    assert row["max_gap_ms"] == 8.0 and row["ended_by"] == "terminator"
    (row,) = replay_json(str(KEYS / "us_digits_enter.jsonl"), "--show")
    assert row["text"] == "134567890123456789"


def test_replay_rejects_and_options() -> None:
    rows = replay_json(str(KEYS / "syn_dropped.jsonl"))
    assert [(r["type"], r["reason"]) for r in rows] == [("reject", "events_dropped"), ("scan", None)]
    assert rows[1]["channel"] == "alipay"
    # The site's problem reproduced: a French-configured scanner read as US is garbage …
    (row,) = replay_json(str(KEYS / "fr_layout.jsonl"), "--layout", "us", "--show")
    assert row["text"] == "!#$%^&*()!@#$%^&*(" and row["channel"] == "unknown"
    # … and with the recording's own layout it is a WeChat code.
    (row,) = replay_json(str(KEYS / "fr_layout.jsonl"))
    assert row["channel"] == "wechat"
    assert replay_json(str(KEYS / "human_typing.jsonl"), "--shared-keyboard") == []
    assert [r["ended_by"] for r in replay_json(str(KEYS / "no_terminator.jsonl"), "--terminator", "none")] == ["idle", "idle"]
    (row,) = replay_json(str(KEYS / "alt_numpad_gbk.jsonl"), "--alt-numpad", "--show")
    assert row["text"] == "P张三1"


def test_replay_takes_a_scanner_entry_from_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[[scanner]]\nname = "w1"\ntransport = "evdev"\nusb = "0c2e:0b61"\nterminator = "TAB"\n')
    (row,) = replay_json(str(KEYS / "tab_terminator.jsonl"), "-c", str(conf), "--scanner", "w1")
    assert row["ended_by"] == "terminator" and row["channel"] == "alipay"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "/nonexistent.jsonl"], "No such file"),
        (["replay", str(KEYS / "make_fixtures.py")], "not JSON"),
        (["replay", str(KEYS / "us_digits_enter.jsonl"), "--scanner", "nope"], "no [[scanner]] named 'nope'"),
        (["replay", str(KEYS / "us_digits_enter.jsonl"), "-c", "/nonexistent.toml"], "file not found"),
    ],
)
def test_replay_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_replay_text_output_via_the_console_entry() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "scannerd", "replay", str(KEYS / "keypad_numlock_off.jsonl")],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "2812********1234" in p.stdout and "numlock_off" in p.stdout
    assert "2812345678901234" not in p.stdout


@pytest.mark.parametrize("fixture", ["us_digits_enter.jsonl", "lf_terminator.jsonl", "crlf_terminator.jsonl",
                                     "tab_terminator.jsonl"])
def test_replay_without_terminator_option_frames_any_common_suffix(fixture: str) -> None:
    rows = replay_json(str(KEYS / fixture))
    assert rows and all(r["type"] == "scan" and r["ended_by"] == "terminator" for r in rows)
