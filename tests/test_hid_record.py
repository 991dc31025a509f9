"""scannerd-hid/1: record HID-POS reports, replay them through the recorded descriptor, round trip."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from hidpos_fixtures import HONEYWELL_DESCRIPTOR, ZEBRA_DESCRIPTOR, pos_reports

from scannerd.cli import main
from scannerd.commands.record import record_hid
from scannerd.sources import hidpos
from scannerd.sources.recording import (
    HidRecording,
    RecordingError,
    hid_header_line,
    hid_report_line,
    parse_any_recording,
    read_any_recording,
)

WECHAT = "134567890123456789"
LONG = "".join(str(i % 10) for i in range(150))


def write_recording(path: Path, descriptor: bytes, reports: list[bytes], device: dict[str, str] | None = None) -> None:
    lines = [hid_header_line(device or {"name": "Honeywell N5600", "vid": "0c2e", "pid": "0967"}, descriptor)]
    lines += [hid_report_line(1_732_523_702_000_000_000 + i * 3_000_000, r) for i, r in enumerate(reports)]
    path.write_text("\n".join(lines) + "\n")


def replay_rows(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["replay", str(path), "--json", *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def test_record_then_replay_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    out = io.StringIO()
    out.write(hid_header_line({"name": "Honeywell N5600", "vid": "0c2e", "pid": "0967"}, HONEYWELL_DESCRIPTOR) + "\n")
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(record_hid(os.dup(ours.fileno()), out, stop=stop))
    reports = pos_reports(WECHAT.encode()) + pos_reports(LONG.encode()) + pos_reports(b"AB\x00CD")
    for r in reports:
        theirs.send(r)
    theirs.close()  # the scanner goes: recording ends by itself
    stats = await asyncio.wait_for(task, timeout=10)
    ours.close()
    assert stats.events == 5 and stats.ended.startswith("device gone")
    path = tmp_path / "scan.jsonl"
    path.write_text(out.getvalue())
    rec = read_any_recording(str(path))
    assert isinstance(rec, HidRecording)
    assert rec.report_descriptor == HONEYWELL_DESCRIPTOR
    assert [r for _, r in rec.reports] == reports  # exactly as read, report id first
    rows = replay_rows(capsys, path, "--show")
    assert [(r["type"], r["text"], r.get("symbology")) for r in rows] == [
        ("scan", WECHAT, "qr"), ("scan", LONG, "qr"), ("reject", "AB\x00CD", None)]
    assert (rows[0]["channel"], rows[0]["kind"], rows[2]["reason"]) == ("wechat", "payment", "binary_data")
    masked = replay_rows(capsys, path)
    assert WECHAT not in json.dumps(masked) and masked[0]["text"] == "1345**********6789"


def test_replay_uses_the_recorded_descriptor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Zebra's layout from its descriptor, although the header names a Honeywell id.
    path = tmp_path / "z.jsonl"
    write_recording(path, ZEBRA_DESCRIPTOR, pos_reports(WECHAT.encode(), "zebra", aim=b"]Xg"))
    rows = replay_rows(capsys, path, "--show")
    assert [(r["text"], r["symbology"]) for r in rows] == [(WECHAT, "other")]
    capsys.readouterr()
    assert main(["replay", str(path)]) == 0
    assert "layout: report descriptor" in capsys.readouterr().err
    # No descriptor recorded: the vendor's fixed layout.
    write_recording(path, b"", pos_reports(WECHAT.encode(), "zebra"), {"vid": "05e0", "pid": "1300"})
    assert [r["text"] for r in replay_rows(capsys, path, "--show")] == [WECHAT]


@pytest.mark.parametrize(("text", "message"), [
    ('{"format":"scannerd-hid/1","report_descriptor":"zz"}\n', "report_descriptor: not hex"),
    ('{"format":"scannerd-hid/1","report_descriptor":""}\n{"t":1}\n', ":2: expected a number t and a hex string report"),
    ('{"format":"scannerd-hid/1","report_descriptor":""}\n{"t":1,"report":"0"}\n', ":2: report: not hex"),
    ('{"format":"scannerd-hid/1","device":[]}\n', "device: expected an object"),
    ('{"format":"scannerd-hid/2"}\n', 'expected a header with "format":"scannerd-keys/1"'),
    ("", "empty file (expected a scannerd-keys/1 or scannerd-hid/1 header)"),
])
def test_bad_recordings_name_the_line(text: str, message: str) -> None:
    with pytest.raises(RecordingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_any_recording(io.StringIO(text), "f.jsonl")


def test_record_cli_writes_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    # A FIFO named like a hidraw node stands in for it; the ioctls answer as the N5600's would.
    node = tmp_path / "hidraw7"
    os.mkfifo(node)
    monkeypatch.setattr(hidpos, "hidraw_descriptor", lambda fd: HONEYWELL_DESCRIPTOR)
    monkeypatch.setattr(hidpos, "hidraw_ids", lambda fd: (3, "0c2e", "0967"))
    out = tmp_path / "rec.jsonl"
    out.write_text("old")
    out.chmod(0o644)
    writer = os.open(node, os.O_RDWR | os.O_NONBLOCK)  # keeps the FIFO open until the report is in
    os.write(writer, pos_reports(WECHAT.encode())[0])

    real_open = os.open

    def open_then_hang_up(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        if path == str(node):
            os.close(writer)  # the recorder holds the read end now: the next read after the report is EOF
        return fd

    monkeypatch.setattr(os, "open", open_then_hang_up)
    assert main(["record", str(node), "-o", str(out)]) == 1  # ended by the device going, not by the user
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rec = read_any_recording(str(out))
    assert isinstance(rec, HidRecording)
    assert rec.device["vid"] == "0c2e" and [r for _, r in rec.reports] == pos_reports(WECHAT.encode())
    assert "1 reports (device gone" in capsys.readouterr().err
