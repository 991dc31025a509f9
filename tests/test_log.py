"""Logging never carries a payment code in full, even if a call site forgets to mask."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import structlog

from scannerd import log
from scannerd.log import mask_secrets
from scannerd.model import Classification, DeviceInfo, Frame, Rejected, ScanEvent

from helpers import REPO


def test_long_digit_runs_are_masked_in_json_logs() -> None:
    script = (
        "from scannerd import log; import structlog; log.configure('info', json=True);"
        "structlog.get_logger('t').info('oops', code='134567890123456789', note='paid with 62123456789012345678 ok', short='12345')"
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO, timeout=30)
    line = json.loads(out.stderr.strip().splitlines()[-1])
    assert line["code"] == "1345**********6789"
    assert line["note"] == "paid with 6212************5678 ok"
    assert line["short"] == "12345"
    assert "134567890123456789" not in out.stderr


def test_text_logs_on_a_tty_are_key_value() -> None:
    script = "from scannerd import log; import structlog; log.configure('info', json=False); structlog.get_logger('t').info('hello', device='w1')"
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO, timeout=30)
    assert "event=hello" in out.stderr and "device=w1" in out.stderr and "level=info" in out.stderr


# --- issue 11 items 4 and 14: one JSON pipeline for every logger, never blocking ----------------




WECHAT = "134567890123456789"
NHSA = "4243669509084040896099330000"
EMV = "hQVDUFYwMWEaTwegAAAAAQEBUAxVbmlvblBheUNyZWRpdF8FWkEgNEEg"
HEALTH_CARD = "A3F9E2C1B4D5A6E7F8091A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F9A0B1C2D3"[:64] + ":1"
OPC = "opc" + "3669509084040896099330000"


def run_script(body: str) -> list[str]:
    script = "from scannerd import log; import logging, structlog; log.configure('debug', json=True)\n" + body
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr.splitlines()


def test_stdlib_loggers_come_out_as_masked_json() -> None:
    lines = run_script(
        f"logging.getLogger('asyncio').error('Task exception was never retrieved: %s', '{WECHAT}')\n"
        f"logging.getLogger('scannerd.mqtt.paho').debug('Sending PUBLISH %s', 'x{NHSA}')\n"
        f"logging.getLogger('scannerd.sdnotify').warning('sd_notify to %r failed', '/run/systemd/notify')\n"
        "import warnings; warnings.warn('a deprecation')\n"
    )
    objs = [json.loads(line) for line in lines]  # every line is one JSON object
    by_logger = {o["logger"]: o for o in objs}
    assert by_logger["asyncio"]["level"] == "error"
    assert by_logger["asyncio"]["event"] == "Task exception was never retrieved: 1345**********6789"
    assert by_logger["scannerd.mqtt.paho"]["event"] == "Sending PUBLISH x4243********************0000"
    assert by_logger["scannerd.sdnotify"]["event"] == "sd_notify to '/run/systemd/notify' failed"
    assert "py.warnings" in by_logger
    assert all("timestamp" in o for o in objs)
    text = "\n".join(lines)
    assert WECHAT not in text and NHSA not in text


def test_a_traceback_is_one_masked_json_line() -> None:
    lines = run_script(
        "import asyncio\n"
        f"try:\n    raise ValueError('bad code {WECHAT}')\nexcept ValueError:\n"
        "    structlog.get_logger('scannerd.t').exception('boom')\n"
        "    logging.getLogger('asyncio').exception('stdlib boom')\n"
        "async def main():\n"
        "    t = asyncio.get_running_loop().create_future()\n"
        "    t.cancel()\n"
        "    try:\n        await t\n    except asyncio.CancelledError:\n"
        "        structlog.get_logger('scannerd.socket').exception('client_task_cancelled')\n"
        "asyncio.run(main())\n"
    )
    objs = [o for o in map(json.loads, lines) if o["event"] != "Using selector: EpollSelector"]
    assert [o["event"] for o in objs] == ["boom", "stdlib boom", "client_task_cancelled"]
    for o in objs[:2]:
        assert "Traceback (most recent call last)" in o["exception"]
        assert "ValueError: bad code 1345**********6789" in o["exception"]
    assert "CancelledError" in objs[2]["exception"]
    assert WECHAT not in "\n".join(lines)


def test_uncaught_exceptions_in_threads_and_main_are_json_lines() -> None:
    script = (
        "from scannerd import log; import threading; log.configure('info', json=True)\n"
        f"t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
        f"raise RuntimeError('fatal {WECHAT}')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1
    objs = [json.loads(line) for line in out.stderr.splitlines()]  # raises on any raw traceback line
    assert [o["event"] for o in objs] == ["thread_exception thread=worker", "uncaught_exception"]
    assert "ZeroDivisionError" in objs[0]["exception"]
    assert "RuntimeError: fatal 1345**********6789" in objs[1]["exception"]
    assert WECHAT not in out.stderr


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (WECHAT, "1345**********6789"),
        (NHSA, "4243" + "*" * 20 + "0000"),
        (f"code={EMV} ok", f"code={EMV[:4]}{'*' * (len(EMV) - 8)}{EMV[-4:]} ok"),
        (HEALTH_CARD, HEALTH_CARD[:4] + "*" * 56 + HEALTH_CARD[60:64] + ":1"),
        (OPC, "opc3669" + "*" * 17 + "0000"),  # its digit run alone is already a code shape
        ("token Zm9vYmFyYmF6cXV1eDEyMzQ1Njc4OTA=", "token Zm9v" + "*" * 23 + "4OTA="),
    ],
)
def test_code_shapes_are_masked(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "01JDQ8Z6K6W3B5XG9Y7T2MNV4R",  # an event ULID: names a scan, reveals nothing
        "scannerd_classify_errors_total",
        "scannerd/cashier-pc-07/device/window-3/state",
        "/dev/serial/by-id/usb-Honeywell_Imaging___Metrologic_Scanner_17301B2A88-if00",
        "ThisIsAVeryLongCamelCaseIdentifierName",
        "EMV0123456789",  # short
        "short 12345678901 digits",  # 11 digits: not a code shape
        "0x7f3a2b1c4d50",
    ],
)
def test_ordinary_words_and_ids_pass(text: str) -> None:
    assert mask_secrets(text) == text


def test_nested_values_and_objects_are_masked_too() -> None:
    lines = run_script(
        f"structlog.get_logger('t').info('nested', codes=['{WECHAT}'], d={{'k': '{NHSA}'}}, n={WECHAT}, obj=ValueError('{EMV}'))\n"
    )
    obj = json.loads(lines[-1])
    assert obj["codes"] == ["1345**********6789"]
    assert obj["d"] == {"k": "4243" + "*" * 20 + "0000"}
    assert obj["n"] == "1345**********6789"
    assert EMV not in obj["obj"] and obj["obj"].startswith("ValueError('hQVD")


def _scan() -> ScanEvent:
    return ScanEvent("01JDQ8Z6K6W3B5XG9Y7T2MNV4R", "2026-11-23T10:15:02+08:00", DeviceInfo("w", "serial", "outpatient", "window"),
                     WECHAT, "qr", Classification("wechat", "payment", "wechat.v1", "high"), 1.0, 0, None)


def test_reprs_of_frames_rejects_and_scans_leave_the_code_out() -> None:
    frame = Frame("w", WECHAT, "qr", 0, 1, 2)
    rejected = Rejected("w", "too_long", WECHAT, 2)
    for obj in (frame, rejected, _scan()):
        assert WECHAT not in repr(obj), repr(obj)
        assert WECHAT not in str(obj)
    assert _scan().code == WECHAT  # still there for the HIS


def test_logging_never_blocks_on_a_stream_nobody_reads() -> None:
    """stderr is a pipe whose reader is stuck (a wedged journald): logging must return."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w", buffering=1)

    done = threading.Event()
    errors: list[BaseException] = []

    def spam() -> None:
        try:
            logger = structlog.get_logger("spam")
            for i in range(50_000):  # ~4 MB: far beyond the 64 KiB pipe buffer
                logger.info("scan_delivered", i=i, note="x" * 40)
        except BaseException as e:
            errors.append(e)
        done.set()

    log.configure("info", json=True, stream=stream)
    try:
        t = threading.Thread(target=spam, daemon=True)
        t.start()
        assert done.wait(120), "logging blocked on a full pipe"
        assert not errors
        assert log.dropped_lines() > 0  # counted, not silent
        # The reader wakes up: the writer goes on and reports what it had to drop.
        got = b""
        os.set_blocking(read_fd, False)
        deadline = time.monotonic() + 30
        while b"log_lines_dropped" not in got and time.monotonic() < deadline:
            try:
                got = (got + os.read(read_fd, 1 << 20))[-(1 << 21):]
            except BlockingIOError:
                time.sleep(0.01)
        assert b"log_lines_dropped" in got
    finally:
        log.flush(timeout=1)
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
        logging.captureWarnings(False)
        os.close(read_fd)
        with contextlib.suppress(OSError):  # what is still buffered meets a closed pipe
            stream.close()
